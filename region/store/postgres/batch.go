package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

// groupCommitWorkers is how many group commit transactions of token inserts
// a Store runs at once: while one batch waits for its commit (a round trip
// and the server's WAL flush) the next one fills.
const groupCommitWorkers = 2

// batchTx is the transaction a group commit batch runs in. Inserts that
// need no answer before the commit (a client_credentials token has no grant
// to lock and check) are queued and sent in one pipelined round trip at the
// end of the batch instead of one round trip each; every other statement
// runs on the transaction as usual.
type batchTx struct {
	pgx.Tx
	b   pgx.Batch
	ops []string // the store operation of each queued statement, for errors
}

func (bt *batchTx) queue(op, sql string, args ...any) {
	bt.b.Queue(sql, args...)
	bt.ops = append(bt.ops, op)
}

// flush sends the queued statements. The failure of one is the failure of
// its op (store.OpError): the group commit rolls the batch back and runs
// each op alone, so only that op's caller sees it.
func (bt *batchTx) flush(ctx context.Context) error {
	if bt.b.Len() == 0 {
		return nil
	}
	br := bt.Tx.SendBatch(ctx, &bt.b)
	for _, op := range bt.ops {
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return &store.OpError{Err: wrap(op, err)}
		}
	}
	return br.Close()
}

// writeBatch is the group commit runner: write, with fn's queued inserts
// flushed before the commit.
func (s *Store) writeBatch(ctx context.Context, fn func(pgx.Tx) error) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		bt := &batchTx{Tx: tx}
		if err := fn(bt); err != nil {
			return err
		}
		return bt.flush(ctx)
	})
}
