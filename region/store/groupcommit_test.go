package store

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeDB is a transaction runner that records what each transaction
// committed. It tests the batching logic of GroupCommit alone; the
// backends' conformance tests run it against real databases.
type fakeDB struct {
	mu        sync.Mutex
	committed map[int]int // op id -> commits that held it
	batches   []int       // size of every committed transaction
	failIf    func(ops []int) bool
}

type fakeTx struct{ ops []int }

var errCommit = errors.New("commit failed")

func (db *fakeDB) run(_ context.Context, fn func(*fakeTx) error) error {
	tx := &fakeTx{}
	if err := fn(tx); err != nil {
		return err // rolled back
	}
	db.mu.Lock()
	defer db.mu.Unlock()
	if db.failIf != nil && db.failIf(tx.ops) {
		return errCommit
	}
	for _, id := range tx.ops {
		db.committed[id]++
	}
	db.batches = append(db.batches, len(tx.ops))
	return nil
}

func newFake() *fakeDB { return &fakeDB{committed: map[int]int{}} }

func op(id int, err error) func(*fakeTx) error {
	return func(tx *fakeTx) error {
		if err != nil {
			return err
		}
		tx.ops = append(tx.ops, id)
		return nil
	}
}

func pending(ctx context.Context, fn func(*fakeTx) error) *gcOp[*fakeTx] {
	return &gcOp[*fakeTx]{ctx: ctx, fn: fn, done: make(chan struct{})}
}

func TestGroupCommitBatch(t *testing.T) {
	errOp := errors.New("conflict")
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	bg := context.Background()
	tests := []struct {
		name       string
		ops        []*gcOp[*fakeTx]
		failCommit bool
		want       []error // per op
		committed  []int   // op ids committed exactly once; all others never
	}{
		{
			name:      "all commit in one transaction",
			ops:       []*gcOp[*fakeTx]{pending(bg, op(0, nil)), pending(bg, op(1, nil)), pending(bg, op(2, nil))},
			want:      []error{nil, nil, nil},
			committed: []int{0, 1, 2},
		},
		{
			name:       "a failing commit fails every caller of the batch",
			ops:        []*gcOp[*fakeTx]{pending(bg, op(0, nil)), pending(bg, op(1, nil)), pending(bg, op(2, nil))},
			failCommit: true,
			want:       []error{errCommit, errCommit, errCommit},
		},
		{
			name:      "a failing op fails alone",
			ops:       []*gcOp[*fakeTx]{pending(bg, op(0, nil)), pending(bg, op(1, errOp)), pending(bg, op(2, nil))},
			want:      []error{nil, errOp, nil},
			committed: []int{0, 2},
		},
		{
			name:      "a caller gone before its op ran is not run",
			ops:       []*gcOp[*fakeTx]{pending(canceled, op(0, nil)), pending(bg, op(1, nil))},
			want:      []error{context.Canceled, nil},
			committed: []int{1},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			db := newFake()
			if tc.failCommit {
				db.failIf = func([]int) bool { return true }
			}
			g := &GroupCommit[*fakeTx]{run: db.run, max: MaxBatch}
			g.commit(tc.ops)
			for i, o := range tc.ops {
				<-o.done
				if !errors.Is(o.err, tc.want[i]) || (tc.want[i] == nil && o.err != nil) {
					t.Errorf("op %d: got %v, want %v", i, o.err, tc.want[i])
				}
			}
			want := map[int]int{}
			for _, id := range tc.committed {
				want[id] = 1
			}
			for id := range len(tc.ops) {
				if db.committed[id] != want[id] {
					t.Errorf("op %d committed %d times, want %d", id, db.committed[id], want[id])
				}
			}
		})
	}
}

// TestGroupCommitConcurrent: through Do, with many callers, batches form
// and a caller gets nil exactly when its op was committed (once), an error
// exactly when it was not; batches holding op 0 mod 7 fail at commit.
func TestGroupCommitConcurrent(t *testing.T) {
	db := newFake()
	db.failIf = func(ops []int) bool {
		for _, id := range ops {
			if id%7 == 0 {
				return true
			}
		}
		return false
	}
	g := NewGroupCommit(2, 0, db.run)
	defer g.Close()
	const callers = 500
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Do(context.Background(), op(i, nil))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		switch c := db.committed[i]; {
		case err == nil && c != 1:
			t.Errorf("op %d acknowledged but committed %d times", i, c)
		case err != nil && c != 0:
			t.Errorf("op %d failed (%v) but committed %d times", i, err, c)
		case err != nil && !errors.Is(err, errCommit):
			t.Errorf("op %d: %v", i, err)
		case i%7 == 0 && err == nil:
			t.Errorf("op %d: acknowledged although its batch cannot commit", i)
		}
	}
	if err := g.Do(context.Background(), op(-1, nil)); err != nil {
		t.Fatal(err)
	}
	g.Close()
	if err := g.Do(context.Background(), op(-2, nil)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Do after Close: %v", err)
	}
}

// gatherer is a GroupCommit with one worker and a gather time of an hour
// (a wait that ends only by filling the batch or closing), whose queue
// buffers, so a test places ops in it before the worker looks.
func gatherer(db *fakeDB) *GroupCommit[*fakeTx] {
	g := &GroupCommit[*fakeTx]{run: db.run, reqs: make(chan *gcOp[*fakeTx], 16), max: MaxBatch, gather: time.Hour, stop: make(chan struct{})}
	return g
}

func (g *GroupCommit[Tx]) start() {
	g.wg.Add(1)
	go g.loop()
}

// taken waits until the worker has received every queued op.
func taken[Tx any](t *testing.T, g *GroupCommit[Tx]) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(g.reqs) > 0; {
		if time.Now().After(deadline) {
			t.Fatal("the worker took no op for 10s")
		}
		runtime.Gosched()
	}
}

func (db *fakeDB) sizes() []int {
	db.mu.Lock()
	defer db.mu.Unlock()
	return slices.Clone(db.batches)
}

// TestGroupCommitGathers: after a batch of five, a worker with a gather
// time waits for five again, so ops arriving one after another (each only
// once the worker took the one before) commit in one transaction; closing
// while it waits commits what it holds.
func TestGroupCommitGathers(t *testing.T) {
	db := newFake()
	g := gatherer(db)
	ctx := context.Background()
	var ops []*gcOp[*fakeTx]
	for i := range 5 {
		o := pending(ctx, op(i, nil))
		ops = append(ops, o)
		g.reqs <- o
	}
	g.start()
	<-ops[4].done
	for i := 5; i < 10; i++ {
		o := pending(ctx, op(i, nil))
		ops = append(ops, o)
		g.reqs <- o
		taken(t, g)
	}
	<-ops[9].done
	last := pending(ctx, op(10, nil))
	ops = append(ops, last)
	g.reqs <- last
	taken(t, g)
	g.Close()
	for i, o := range ops {
		<-o.done
		if o.err != nil {
			t.Fatalf("op %d: %v", i, o.err)
		}
	}
	if got := db.sizes(); !slices.Equal(got, []int{5, 5, 1}) {
		t.Fatalf("transactions of %v ops, want [5 5 1]", got)
	}
}

// TestGroupCommitNoGatherAtLowLoad: after a batch below minGather, an op
// is committed at once, not held for the gather time (an hour here) while
// the worker waits for as many as that batch held.
func TestGroupCommitNoGatherAtLowLoad(t *testing.T) {
	db := newFake()
	g := gatherer(db)
	var first []*gcOp[*fakeTx]
	for i := range minGather - 1 {
		o := pending(context.Background(), op(i, nil))
		first = append(first, o)
		g.reqs <- o
	}
	g.start()
	defer g.Close()
	<-first[len(first)-1].done
	done := make(chan error, 1)
	go func() { done <- g.Do(context.Background(), op(100, nil)) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("an op held for the gather time after batches of %v", db.sizes())
	}
	if got := db.sizes(); !slices.Equal(got, []int{minGather - 1, 1}) {
		t.Fatalf("transactions of %v ops, want [%d 1]", got, minGather-1)
	}
}
