// Package lookup implements the federation hub's keyed-hash user→region
// table.
//
// The hub must route a login to the user's home region without ever storing
// the username. Every entry is therefore keyed by
//
//	Key = first 128 bits of HMAC-SHA256(k_hub, Normalize(username))
//
// where k_hub is a secret known only to the hub processes (it never reaches
// the Store) and Normalize applies the PRECIS UsernameCaseMapped profile of
// RFC 8265. A Table combines a Hasher with a Store and adds key rotation and
// bulk import; the Store implementations live in the sub-packages redisstore
// (Redis / Redis Cluster), embedded (SQLite) and memstore (tests), and all of
// them pass the shared conformance suite.
//
// # Normalization
//
// UsernameCaseMapped performs, in this order: width mapping (fullwidth and
// halfwidth forms map to their decomposition, so "ＡＢＣ" becomes "ABC"),
// Unicode lower-casing (toLower, not full case folding), NFC normalization,
// the Bidi rule, and the IdentifierClass check. Consequences:
//
//   - "Ünïcode", "ÜNÏCODE", "ünïcode" and the decomposed "U\u0308nïcode" all
//     normalize to "ünïcode" and share one Key.
//   - "ＡＬＩＣＥ" (fullwidth) and "Alice" both normalize to "alice".
//   - The normalization form is NFC, not NFKC: compatibility characters other
//     than width variants are not mapped but rejected. "ﬁ" (U+FB01), "²" and
//     "Ⅳ" make the username invalid instead of colliding with "fi", "2" or
//     "IV".
//   - Lower-casing is not case folding: "ß" stays "ß", so "straße" and
//     "STRASSE" are different users; final sigma "ς" is kept distinct from "σ".
//   - Confusables are not mapped: Cyrillic "а" differs from Latin "a".
//   - Spaces, control characters and the empty string are invalid.
//
// Invalid usernames yield an error matching ErrInvalidUsername (see
// UsernameError); error messages never contain the username.
package lookup

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"unicode/utf8"

	"golang.org/x/text/secure/precis"
)

// KeySize is the size in bytes of a table Key (128 bits).
const KeySize = 16

// MinSecretSize is the minimum length in bytes of a hub key given to NewHasher.
const MinSecretSize = 32

// MaxUsernameBytes bounds the length of a username accepted by Normalize, so
// hostile input cannot make the hub normalize or hash megabytes.
const MaxUsernameBytes = 1024

// Key is the table key of one user: the first 128 bits of
// HMAC-SHA256(k_hub, Normalize(username)).
type Key [KeySize]byte

// String returns the key in lower-case hexadecimal.
func (k Key) String() string { return hex.EncodeToString(k[:]) }

// ErrInvalidUsername is matched (errors.Is) by every error that reports a
// username rejected by Normalize.
var ErrInvalidUsername = errors.New("lookup: invalid username")

// UsernameError is the typed error returned for a username that is not a
// valid PRECIS UsernameCaseMapped identifier. It matches ErrInvalidUsername
// and unwraps to the underlying cause. It deliberately does not carry the
// username, so logging it leaks nothing.
type UsernameError struct {
	// Reason describes why the username was rejected.
	Reason string
	// Err is the underlying cause, if any (for example the precis error).
	Err error
}

// Error implements error.
func (e *UsernameError) Error() string {
	if e.Err != nil {
		return "lookup: invalid username: " + e.Reason + ": " + e.Err.Error()
	}
	return "lookup: invalid username: " + e.Reason
}

// Is reports whether target is ErrInvalidUsername.
func (e *UsernameError) Is(target error) bool { return target == ErrInvalidUsername }

// Unwrap returns the underlying cause.
func (e *UsernameError) Unwrap() error { return e.Err }

// Normalize maps username to its canonical form under the PRECIS
// UsernameCaseMapped profile (RFC 8265), so that all spellings of one name
// that the profile considers equal produce the same string. It rejects, with
// an error matching ErrInvalidUsername, the empty string, strings longer than
// MaxUsernameBytes, invalid UTF-8 and anything the profile disallows.
func Normalize(username string) (string, error) {
	switch {
	case username == "":
		return "", &UsernameError{Reason: "empty"}
	case len(username) > MaxUsernameBytes:
		return "", &UsernameError{Reason: fmt.Sprintf("longer than %d bytes", MaxUsernameBytes)}
	case !utf8.ValidString(username):
		return "", &UsernameError{Reason: "not valid UTF-8"}
	}
	if n, ok := normalizeASCII(username); ok {
		return n, nil
	}
	n, err := precis.UsernameCaseMapped.String(username)
	if err != nil {
		return "", &UsernameError{Reason: "rejected by PRECIS UsernameCaseMapped", Err: err}
	}
	if n == "" {
		return "", &UsernameError{Reason: "empty after normalization"}
	}
	return n, nil
}

// normalizeASCII is the allocation-free fast path of Normalize for names made
// only of printable ASCII (0x21-0x7E), for which UsernameCaseMapped reduces
// to ASCII lower-casing: width mapping, NFC and the Bidi rule are no-ops, and
// every such byte is PVALID in the IdentifierClass. ok is false for anything
// else, which then takes the full PRECIS path. TestNormalizeASCIIFastPath
// checks it against precis.
func normalizeASCII(s string) (n string, ok bool) {
	upper := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c > 0x7e {
			return "", false
		}
		if 'A' <= c && c <= 'Z' {
			upper = true
		}
	}
	if !upper {
		return s, true
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b), true
}

// macKey holds the HMAC-SHA256 pads of one hub key, so that computing a Key
// costs two SHA-256 calls on stack buffers and no heap allocation.
type macKey struct {
	ipad, opad [sha256.BlockSize]byte
}

func newMACKey(secret []byte) macKey {
	var m macKey
	k := secret
	if len(k) > sha256.BlockSize {
		s := sha256.Sum256(k)
		k = s[:]
	}
	copy(m.ipad[:], k)
	copy(m.opad[:], k)
	for i := range m.ipad {
		m.ipad[i] ^= 0x36
		m.opad[i] ^= 0x5c
	}
	return m
}

// stackMsg is the longest normalized username hashed without a heap
// allocation.
const stackMsg = 192

// sum returns the truncated HMAC-SHA256 of msg.
func (m *macKey) sum(msg string) Key {
	var buf [sha256.BlockSize + stackMsg]byte
	var b []byte
	if len(msg) <= stackMsg {
		b = buf[:sha256.BlockSize+len(msg)]
	} else {
		b = make([]byte, sha256.BlockSize+len(msg))
	}
	copy(b, m.ipad[:])
	copy(b[sha256.BlockSize:], msg)
	inner := sha256.Sum256(b)

	var ob [sha256.BlockSize + sha256.Size]byte
	copy(ob[:], m.opad[:])
	copy(ob[sha256.BlockSize:], inner[:])
	out := sha256.Sum256(ob[:])

	var k Key
	copy(k[:], out[:KeySize])
	return k
}

// Hasher derives table keys from usernames. It holds the current hub key and,
// while a key rotation is in progress, the previous one. A Hasher is
// immutable and safe for concurrent use.
type Hasher struct {
	cur     macKey
	prev    macKey
	hasPrev bool
	valid   bool // set by NewHasher, so a zero Hasher never hashes with a zero key
}

var errZeroHasher = errors.New("lookup: Hasher not created by NewHasher")

// NewHasher returns a Hasher for the current hub key and, during a rotation,
// the previous hub key (nil or empty when no rotation is in progress). Each
// key must be at least MinSecretSize bytes of secret randomness, and the two
// keys must differ. The key bytes are copied; the Hasher keeps only the
// derived HMAC pads.
func NewHasher(current, previous []byte) (*Hasher, error) {
	if len(current) < MinSecretSize {
		return nil, fmt.Errorf("lookup: current hub key is %d bytes, need at least %d", len(current), MinSecretSize)
	}
	h := &Hasher{cur: newMACKey(current), valid: true}
	if len(previous) == 0 {
		return h, nil
	}
	if len(previous) < MinSecretSize {
		return nil, fmt.Errorf("lookup: previous hub key is %d bytes, need at least %d", len(previous), MinSecretSize)
	}
	if subtle.ConstantTimeCompare(current, previous) == 1 {
		return nil, errors.New("lookup: previous hub key equals the current one")
	}
	h.prev = newMACKey(previous)
	h.hasPrev = true
	return h, nil
}

// Rotating reports whether the Hasher has a previous key, that is whether a
// key rotation is in progress.
func (h *Hasher) Rotating() bool { return h != nil && h.hasPrev }

// Key returns the current-key Key of username.
func (h *Hasher) Key(username string) (Key, error) {
	if h == nil || !h.valid {
		return Key{}, errZeroHasher
	}
	n, err := Normalize(username)
	if err != nil {
		return Key{}, err
	}
	return h.cur.sum(n), nil
}

// Keys returns the current-key Key of username and, while a rotation is in
// progress, its previous-key Key (nil otherwise). The username is normalized
// once for both.
func (h *Hasher) Keys(username string) (cur Key, prev *Key, err error) {
	if h == nil || !h.valid {
		return Key{}, nil, errZeroHasher
	}
	n, err := Normalize(username)
	if err != nil {
		return Key{}, nil, err
	}
	cur, p, ok := h.keysNormalized(n)
	if ok {
		prev = new(Key) // the only allocation, and only while rotating
		*prev = p
	}
	return cur, prev, nil
}

// keysNormalized hashes an already normalized username without allocating.
func (h *Hasher) keysNormalized(n string) (cur, prev Key, rotating bool) {
	cur = h.cur.sum(n)
	if h.hasPrev {
		prev = h.prev.sum(n)
	}
	return cur, prev, h.hasPrev
}
