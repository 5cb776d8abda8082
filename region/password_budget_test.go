package region

import (
	"runtime"
	"sync"
	"testing"

	"github.com/meridian-id/meridian/password"
)

// fakeGC stands in for the runtime's collector in the budget's accounting
// tests: it counts the collections the budget asked for and how many have
// completed, and lets a test hold a collection until it releases it.
type fakeGC struct {
	mu     sync.Mutex
	cycles uint64
	asked  int
	hold   chan struct{}
}

func (g *fakeGC) count() uint64 { g.mu.Lock(); defer g.mu.Unlock(); return g.cycles }

func (g *fakeGC) collect() {
	g.mu.Lock()
	g.asked++
	hold := g.hold
	g.mu.Unlock()
	if hold != nil {
		<-hold
	}
	g.mu.Lock()
	g.cycles++ // no cycle was under way: runtime.GC ran exactly one
	g.mu.Unlock()
}

func budgetWith(t *testing.T, verifications int64) (*memoryBudget, *fakeGC, string) {
	t.Helper()
	gc := &fakeGC{}
	b := newMemoryBudget(verifications * password.DefaultMemory)
	b.cycles, b.collect = gc.count, gc.collect
	phc, err := password.Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	return b, gc, phc
}

// TestMemoryBudgetChargesGarbageUntilCollected: a finished verification's
// memory stays charged until a collection reclaims it; the next
// verification that only garbage keeps out runs a collection and gets in,
// while one that running verifications keep out is refused without one.
func TestMemoryBudgetChargesGarbageUntilCollected(t *testing.T) {
	b, gc, phc := budgetWith(t, 2)
	c1, ok1 := b.acquire(phc)
	c2, ok2 := b.acquire(phc)
	if !ok1 || !ok2 {
		t.Fatal("two verifications do not fit a budget of two")
	}
	if _, ok := b.acquire(phc); ok || gc.asked != 0 {
		t.Fatalf("third verification admitted %v, collections %d; want refused without a collection", ok, gc.asked)
	}
	b.spend(c1)
	// The finished one's 64 MiB is garbage: a collection makes room.
	c3, ok := b.acquire(phc)
	if !ok || gc.asked != 1 {
		t.Fatalf("after a verification finished: admitted %v after %d collections, want admitted after 1", ok, gc.asked)
	}
	// Naturally completed cycles reclaim garbage too: no forced collection.
	b.spend(c2)
	gc.mu.Lock()
	gc.cycles += 2
	gc.mu.Unlock()
	c4, ok := b.acquire(phc)
	if !ok || gc.asked != 1 {
		t.Fatalf("after two natural cycles: admitted %v, collections %d; want admitted, still 1", ok, gc.asked)
	}
	// One completed cycle is not enough: it may have been under way when
	// the memory became garbage.
	b.spend(c3)
	gc.mu.Lock()
	gc.cycles++
	gc.mu.Unlock()
	if g := b.settle(gc.count()); g != password.DefaultMemory {
		t.Fatalf("garbage charged after one cycle: %d, want %d", g, password.DefaultMemory)
	}
	// A verification that never ran gives its memory back at once.
	b.release(c4)
	if b.used != 0 {
		t.Fatalf("used %d after every release, want 0", b.used)
	}
}

// TestMemoryBudgetOneCollectionAtATime: callers that garbage keeps out at
// the same moment share one collection instead of each forcing their own.
func TestMemoryBudgetOneCollectionAtATime(t *testing.T) {
	b, gc, phc := budgetWith(t, 4)
	var costs []int64
	for range 4 {
		c, ok := b.acquire(phc)
		if !ok {
			t.Fatal("budget of four refused one of four")
		}
		costs = append(costs, c)
	}
	for _, c := range costs {
		b.spend(c)
	}
	gc.hold = make(chan struct{})
	var wg sync.WaitGroup
	admitted := make(chan bool, 4)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, ok := b.acquire(phc)
			admitted <- ok
		}()
	}
	// Release the collection once every caller is waiting for it.
	for {
		b.mu.Lock()
		waiting := b.collecting != nil
		b.mu.Unlock()
		if waiting {
			break
		}
		runtime.Gosched()
	}
	close(gc.hold)
	wg.Wait()
	close(admitted)
	n := 0
	for ok := range admitted {
		if ok {
			n++
		}
	}
	if gc.asked != 1 || n != 4 {
		t.Fatalf("%d admitted after %d collections, want 4 after 1", n, gc.asked)
	}
}
