package region

import (
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

// memoryBudget bounds the memory concurrent argon2id verifications hold.
// A verification that does not fit is refused at once, never queued, so a
// flood of password posts costs the node a bounded amount of memory and
// answers the excess fast.
type memoryBudget struct {
	mu     sync.Mutex
	used   int64
	budget int64
}

func newMemoryBudget(bytes int64) *memoryBudget {
	return &memoryBudget{budget: max(bytes, password.DefaultMemory)}
}

// acquire takes the memory verifying against phc needs and reports whether
// it fit; release gives it back.
func (b *memoryBudget) acquire(phc string) (cost int64, ok bool) {
	cost = min(password.MemoryCost(phc), b.budget)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.used+cost > b.budget {
		return 0, false
	}
	b.used += cost
	return cost, true
}

func (b *memoryBudget) release(cost int64) {
	b.mu.Lock()
	b.used -= cost
	b.mu.Unlock()
}
