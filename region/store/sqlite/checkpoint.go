package sqlite

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"time"
)

// Checkpoints run off the commit path. With SQLite's default
// (wal_autocheckpoint=1000 pages) the connection whose commit pushes the WAL
// past 1000 pages copies the WAL back into the database file inside that
// commit: on this store that is the single writer, so every group commit
// batch queued behind it waited for a checkpoint (15 % of the node's CPU
// under a client_credentials load, all of it on the serial writer). The
// writer runs with wal_autocheckpoint=0 and a goroutine on a connection of
// its own runs a PASSIVE checkpoint every checkpointEvery while there were
// commits. A PASSIVE checkpoint takes no lock a writer or reader waits for;
// durability is unchanged (a commit is durable once its WAL frames are
// synced, synchronous=FULL), and the WAL's size is bounded by what one
// interval writes plus what a long reader holds back, as before.
const checkpointEvery = 500 * time.Millisecond

// checkpointer runs the background checkpoints of a Store.
type checkpointer struct {
	db    *sql.DB
	dirty atomic.Bool
	stop  chan struct{}
	done  sync.WaitGroup
	once  sync.Once
	err   error
}

func startCheckpointer(db *sql.DB) *checkpointer {
	c := &checkpointer{db: db, stop: make(chan struct{})}
	c.done.Add(1)
	go c.loop()
	return c
}

// committed notes that the WAL grew.
func (c *checkpointer) committed() { c.dirty.Store(true) }

func (c *checkpointer) loop() {
	defer c.done.Done()
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if c.dirty.Swap(false) {
				c.checkpoint()
			}
		}
	}
}

func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), busyTimeout)
	defer cancel()
	// A failure (SQLITE_BUSY from another process's checkpoint) is retried
	// at the next tick; the WAL only grows meanwhile.
	if _, err := c.db.ExecContext(ctx, "PRAGMA wal_checkpoint(PASSIVE)"); err != nil {
		c.dirty.Store(true)
	}
}

// close stops the goroutine and closes its connection; SQLite checkpoints
// the WAL when the last connection to the file closes. It may be called
// more than once (Store.Close is).
func (c *checkpointer) close() error {
	c.once.Do(func() {
		close(c.stop)
		c.done.Wait()
		c.err = c.db.Close()
	})
	return c.err
}
