package store

import (
	"context"
	"errors"
	"sync"
	"time"
)

// GroupCommit batches the writes of concurrent callers into one transaction
// (group commit): a backend whose commits are bound by an fsync or a round
// trip pays it once per batch instead of once per call. Any backend can use
// it with its own transaction runner.
//
// A call's write is an op: a function of the transaction that it may run
// more than once (it only issues statements). Workers take the first
// waiting op, then every op already queued up to MaxBatch, and run them in
// one transaction, so at low load a batch is one op and at high load a
// batch holds whatever queued while the previous commit was in flight.
//
// With a gather time (a single-writer backend whose commit costs CPU per
// page written, SQLite), a worker whose previous batch held at least
// minGather ops waits up to that long for as many ops as that batch held
// before it commits, as PostgreSQL's commit_delay does: under steady
// concurrency the callers that were in the last batch come back within
// moments, and one transaction for all of them writes each shared page
// once instead of once per part-batch. A worker never waits at low load
// (previous batch below minGather) and waits at most the gather time when
// the load drops, after which the next batch no longer expects as many.
//
// Each caller returns only after its batch's transaction ended, with:
//
//   - nil when the transaction committed (its write is as durable as the
//     backend's commit makes it);
//   - the commit's (or begin's) error, for every op of the batch, when the
//     transaction did not commit: nothing is acknowledged that was not
//     committed;
//   - its own error when its op failed: the batch is rolled back and every
//     op of it is run again in a transaction of its own, so one caller's
//     failure (a conflict, a revoked grant) never fails or half-writes
//     another's. Every op is therefore atomic exactly as if it ran alone.
//
// A caller whose context ends before its op started gets the context's
// error and its op is not run; once its op ran the caller waits for the
// outcome (bounded by the runner), so a nil error always means committed and
// an error means not written.
type GroupCommit[Tx any] struct {
	run    func(ctx context.Context, fn func(Tx) error) error
	reqs   chan *gcOp[Tx]
	max    int
	gather time.Duration
	stop   chan struct{}
	wg     sync.WaitGroup
	once   sync.Once
}

type gcOp[Tx any] struct {
	ctx  context.Context
	fn   func(Tx) error
	err  error
	done chan struct{}
}

// ErrClosed is returned by GroupCommit.Do after Close.
var ErrClosed = errors.New("store: closed")

// MaxBatch bounds how many ops one group commit transaction holds.
const MaxBatch = 128

// minGather is the previous batch size from which a worker with a gather
// time waits for more ops (see GroupCommit).
const minGather = 4

// batchTimeout bounds one batch transaction (and so how long a caller waits
// once its op is taken).
const batchTimeout = 30 * time.Second

// NewGroupCommit starts workers goroutines that run batches with run, which
// must execute fn in one transaction, commit when fn returns nil and roll
// back otherwise (the backend's usual write helper). A single-writer backend
// (SQLite) uses one worker; a backend with a connection pool can use more
// so one batch fills while another commits. gather is how long a worker may
// wait for a batch to fill (see GroupCommit); 0 never waits.
func NewGroupCommit[Tx any](workers int, gather time.Duration, run func(ctx context.Context, fn func(Tx) error) error) *GroupCommit[Tx] {
	g := &GroupCommit[Tx]{run: run, reqs: make(chan *gcOp[Tx]), max: MaxBatch, gather: gather, stop: make(chan struct{})}
	for range max(1, workers) {
		g.wg.Add(1)
		go g.loop()
	}
	return g
}

// Do runs fn in a group commit transaction and returns when that
// transaction ended (see GroupCommit).
func (g *GroupCommit[Tx]) Do(ctx context.Context, fn func(Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	op := &gcOp[Tx]{ctx: ctx, fn: fn, done: make(chan struct{})}
	select {
	case g.reqs <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-g.stop:
		return ErrClosed
	}
	<-op.done
	return op.err
}

// Close stops the workers after the batches in flight; later calls of Do
// return ErrClosed.
func (g *GroupCommit[Tx]) Close() {
	g.once.Do(func() { close(g.stop) })
	g.wg.Wait()
}

func (g *GroupCommit[Tx]) loop() {
	defer g.wg.Done()
	batch := make([]*gcOp[Tx], 0, g.max)
	var wait *time.Timer
	last := 0 // the previous batch's size
	for {
		select {
		case op := <-g.reqs:
			batch = append(batch[:0], op)
		case <-g.stop:
			return
		}
		batch = g.drain(batch)
		// last is at most g.max, like every batch.
		if g.gather > 0 && last >= minGather && len(batch) < last {
			if wait == nil {
				wait = time.NewTimer(g.gather)
			} else {
				wait.Reset(g.gather)
			}
		gather:
			for len(batch) < last {
				select {
				case op := <-g.reqs:
					batch = append(batch, op)
				case <-wait.C:
					break gather
				case <-g.stop:
					break gather
				}
			}
			wait.Stop()
			batch = g.drain(batch)
		}
		last = len(batch)
		g.commit(batch)
		clear(batch)
	}
}

// drain adds the ops already waiting to batch, up to the maximum.
func (g *GroupCommit[Tx]) drain(batch []*gcOp[Tx]) []*gcOp[Tx] {
	for len(batch) < g.max {
		select {
		case op := <-g.reqs:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// OpError marks the failure of one op (not of the transaction). An op's
// own error is wrapped in it inside a batch; a runner that defers an op's
// statements to the end of the transaction (a pipelined batch) wraps their
// failures in it too, so GroupCommit runs the ops again one by one instead
// of failing the whole batch.
type OpError struct{ Err error }

func (e *OpError) Error() string { return e.Err.Error() }
func (e *OpError) Unwrap() error { return e.Err }

func (g *GroupCommit[Tx]) commit(batch []*gcOp[Tx]) {
	live := batch[:0:0]
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.err = err
			close(op.done)
			continue
		}
		live = append(live, op)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if len(live) == 1 {
		op := live[0]
		op.err = g.run(ctx, op.fn)
		close(op.done)
		return
	}
	err := g.run(ctx, func(tx Tx) error {
		for _, op := range live {
			if err := op.fn(tx); err != nil {
				return &OpError{Err: err}
			}
		}
		return nil
	})
	if errors.As(err, new(*OpError)) {
		// One op failed and the batch rolled back: run each alone so the
		// failure stays its caller's.
		for _, op := range live {
			op.err = g.run(ctx, op.fn)
			close(op.done)
		}
		return
	}
	for _, op := range live {
		op.err = err
		close(op.done)
	}
}
