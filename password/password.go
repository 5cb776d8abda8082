// Package password hashes and verifies people's passwords with argon2id
// (PHC strings). Regions store the hashes; the hub verifies a dummy hash so
// that an unknown user costs what a known one does.
package password

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

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

// ErrMismatch is returned when a password does not match its hash.
var ErrMismatch = errors.New("password: does not match")

// Hash returns the argon2id PHC string of a person's password.
func Hash(password string) (string, error) {
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	key := argon2.IDKey([]byte(password), salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, argonMemory, argonTime, argonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// Verify checks password against an argon2id PHC string in constant
// time. The parameters come from the string, so hashes made with older
// parameters keep working.
func Verify(phc, password string) error {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return fmt.Errorf("password: unsupported password hash format")
	}
	var version int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &version); err != nil || version != argon2.Version {
		return fmt.Errorf("password: unsupported argon2 version")
	}
	var m uint32
	var t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil || m == 0 || t == 0 || p == 0 || m > 1<<22 || t > 64 {
		return fmt.Errorf("password: bad argon2 parameters")
	}
	b64 := base64.RawStdEncoding
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return fmt.Errorf("password: bad argon2 salt")
	}
	want, err := b64.DecodeString(parts[5])
	if err != nil || len(want) < 16 || len(want) > 64 {
		return fmt.Errorf("password: bad argon2 hash")
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	if subtle.ConstantTimeCompare(got, want) != 1 {
		return ErrMismatch
	}
	return nil
}

// DefaultMemory is the memory in bytes one verification at Hash's
// parameters allocates.
const DefaultMemory = argonMemory * 1024

// MemoryCost is the memory in bytes that verifying against phc allocates;
// DefaultMemory when the string does not say.
func MemoryCost(phc string) int64 {
	parts := strings.Split(phc, "$")
	var m, t uint32
	var p uint8
	if len(parts) == 6 {
		if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err == nil && m > 0 {
			return int64(m) * 1024
		}
	}
	return DefaultMemory
}
