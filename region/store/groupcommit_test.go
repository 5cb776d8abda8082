package store

import (
	"context"
	"errors"
	"sync"
	"testing"
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
	g := NewGroupCommit(2, db.run)
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
