package region

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
)

// argon2id parameters: RFC 9106 §4 second recommended option (64 MiB, t=3,
// p=4), the memory-constrained profile suitable for an interactive login.
const (
	argonTime    = 3
	argonMemory  = 64 * 1024
	argonThreads = 4
	argonKeyLen  = 32
	argonSaltLen = 16
)

// ErrPasswordMismatch is returned when a password does not match its hash.
var ErrPasswordMismatch = errors.New("region: password does not match")

// HashPassword returns the argon2id PHC string of a person's password.
func HashPassword(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword checks password against an argon2id PHC string in constant
// time. The parameters come from the string, so hashes made with older
// parameters keep working.
func VerifyPassword(phc, password string) error {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return fmt.Errorf("region: unsupported password hash format")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return fmt.Errorf("region: unsupported argon2 version")
	}
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<22 || t > 64 {
		return fmt.Errorf("region: bad argon2 parameters")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return fmt.Errorf("region: bad argon2 salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return fmt.Errorf("region: bad argon2 hash")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrPasswordMismatch
	}
	return nil
}

// DefaultPasswordMemoryBudget is the memory that concurrent argon2id
// verifications of one node may hold together: eight verifications at the
// default 64 MiB cost.
const DefaultPasswordMemoryBudget = 512 << 20

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
	return &memoryBudget{budget: max(bytes, argonMemory*1024)}
}

// acquire takes the memory verifying against phc needs and reports whether
// it fit; release gives it back.
func (b *memoryBudget) acquire(phc string) (cost int64, ok bool) {
	cost = min(argonCost(phc), b.budget)
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

// argonCost is the memory in bytes that verifying against phc allocates;
// the default cost when the string does not say.
func argonCost(phc string) int64 {
	parts := strings.Split(phc, "$")
	var m, t uint32
	var p uint8
	if len(parts) == 6 {
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err == nil && m > 0 {
			return int64(m) * 1024
		}
	}
	return argonMemory * 1024
}
