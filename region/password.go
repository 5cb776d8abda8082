package region

import (
	"runtime"
	"runtime/metrics"
	"sync"

	"github.com/meridian-id/meridian/password"
)

// ErrPasswordMismatch is returned when a password does not match its hash.
var ErrPasswordMismatch = password.ErrMismatch

// HashPassword returns the argon2id PHC string of a person's password
// (password.Hash).
func HashPassword(pw string) (string, error) { return password.Hash(pw) }

// VerifyPassword checks pw against an argon2id PHC string in constant time
// (password.Verify).
func VerifyPassword(phc, pw string) error { return password.Verify(phc, pw) }

// DefaultPasswordMemoryBudget is the memory that concurrent argon2id
// verifications of one node may hold together: eight verifications at the
// default 64 MiB cost.
const DefaultPasswordMemoryBudget = 8 * password.DefaultMemory

// memoryBudget bounds the memory argon2id verifications hold in the Go
// heap, whether still in use or already garbage the collector has not
// reclaimed yet. A verification that does not fit beside the running ones
// is refused at once, never queued, so a flood of password posts costs the node a bounded
// amount of memory and answers the excess fast.
//
// The garbage counts because argon2 allocates a fresh block array for every
// verification: without it, a verification finishing hands its 64 MiB to the
// collector while the next one allocates another, and the heap grows to
// GOGC-times the budget before a collection runs (5× at the node's
// GOGC=400). A finished verification's memory stays charged until a
// collection that started after it finished has completed; when that
// garbage is what keeps the next verification out, the budget runs a
// collection (runtime.GC, one at a time), which reclaims everything spent
// before it was called, and lets it in once that is done.
type memoryBudget struct {
	mu      sync.Mutex
	used    int64 // held by running verifications
	garbage []spent
	spends  uint64 // verifications spent so far; numbers garbage
	budget  int64
	// collecting is closed when the collection the budget started ends;
	// nil when none runs.
	collecting chan struct{}
	// cycles reports how many garbage collections have completed.
	cycles func() uint64
	// collect runs a full collection and returns when it is done.
	collect func()
}

// spent is the memory of a finished verification, charged until the
// collection cycle count reaches until or a collection the budget called
// after it was spent (seq) has completed.
type spent struct {
	bytes int64
	until uint64
	seq   uint64
}

func newMemoryBudget(bytes int64) *memoryBudget {
	return &memoryBudget{budget: max(bytes, password.DefaultMemory), cycles: gcCycles, collect: runtime.GC}
}

// gcCycles reads the number of completed garbage collections without
// stopping the world (runtime.ReadMemStats would).
func gcCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// acquire takes the memory verifying against phc needs and reports whether
// it fit. When only finished verifications' garbage keeps it out, acquire
// waits for a collection (one at a time, shared by every caller waiting)
// and looks again; running verifications are never waited for. A caller
// that then verifies gives the memory back with spend; one that does not,
// with release.
func (b *memoryBudget) acquire(phc string) (cost int64, ok bool) {
	cost = min(password.MemoryCost(phc), b.budget)
	for waited := 0; ; waited++ {
		now := b.cycles()
		b.mu.Lock()
		garbage := b.settle(now)
		if b.used+garbage+cost <= b.budget {
			b.used += cost
			b.mu.Unlock()
			return cost, true
		}
		if b.used+cost > b.budget || waited == 2 {
			b.mu.Unlock()
			return 0, false
		}
		done := b.collecting
		if done == nil {
			done = make(chan struct{})
			b.collecting = done
			// runtime.GC finishes any cycle under way and then runs a
			// whole one, so what was garbage when it was called is gone
			// when it returns.
			before := b.spends
			go func() {
				b.collect()
				b.mu.Lock()
				b.drop(before)
				b.collecting = nil
				b.mu.Unlock()
				close(done)
			}()
		}
		b.mu.Unlock()
		<-done
	}
}

// settle drops the garbage collected by cycle count now and returns what
// is still charged.
func (b *memoryBudget) settle(now uint64) int64 {
	return b.prune(func(g spent) bool { return g.until > now })
}

// drop forgets the garbage spent up to and including number seq.
func (b *memoryBudget) drop(seq uint64) {
	b.prune(func(g spent) bool { return g.seq > seq })
}

// prune keeps the garbage for which keep holds and returns its bytes.
func (b *memoryBudget) prune(keep func(spent) bool) (charged int64) {
	kept := b.garbage[:0]
	for _, g := range b.garbage {
		if keep(g) {
			kept = append(kept, g)
			charged += g.bytes
		}
	}
	clear(b.garbage[len(kept):])
	b.garbage = kept
	return charged
}

// release gives back memory a verification that did not run had taken.
func (b *memoryBudget) release(cost int64) {
	b.mu.Lock()
	b.used -= cost
	b.mu.Unlock()
}

// spend gives back the memory of a verification that ran: it stays charged
// as garbage until a collection that starts after now has completed. A
// cycle in progress at this moment may not reclaim it (memory allocated
// during a cycle survives it), hence the second cycle.
func (b *memoryBudget) spend(cost int64) {
	until := b.cycles() + 2
	b.mu.Lock()
	b.used -= cost
	b.spends++
	b.garbage = append(b.garbage, spent{bytes: cost, until: until, seq: b.spends})
	b.mu.Unlock()
}
