// Package routing owns Meridian's self-contained artifacts and the router that
// sends calls to the region that issued them.
//
// Every artifact a region hands out (client_id, authorization code, refresh
// token, opaque access token, session handle) is a tagged string:
//
//	m1.<kind>.<region>.<base64url(random ‖ mac)>
//
// "m1" is the format version, <kind> a two-letter artifact kind, <region> the
// issuing region's id, readable by anyone for logging and routing. The MAC is
// HMAC-SHA256 over (version, kind, region, random) under the federation routing
// key, truncated to 128 bits, so a forged or flipped tag is rejected at the
// edge before any outbound request. Region ids only ever resolve through the
// configured region set: the artifact never names a host or URL.
package routing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// Version is the artifact format version this package writes.
const Version = "m1"

// MACSize is the length in bytes of the truncated HMAC carried by a tag.
const MACSize = 16

// MinKeySize is the minimum routing key length in bytes.
const MinKeySize = 32

// Kind names what an artifact is. It is part of the MACed data, so an access
// token can never be replayed as a refresh token or a client_id.
type Kind string

// The artifact kinds. Secrets carry 256 random bits; client_ids, which are
// public identifiers, carry 128.
const (
	KindClient      Kind = "cl"
	KindCode        Kind = "ac"
	KindRefresh     Kind = "rt"
	KindAccess      Kind = "at"
	KindSession     Kind = "se"
	KindAuthRequest Kind = "ar"
	KindTokenID     Kind = "ti"
)

// randomSize returns the number of random bytes a kind carries.
func (k Kind) randomSize() int {
	switch k {
	case KindClient, KindAuthRequest, KindTokenID:
		return 16
	case KindCode, KindRefresh, KindAccess, KindSession:
		return 32
	}
	return 0
}

// Errors returned by Parse and Verify. Callers match them with errors.Is.
var (
	ErrMalformed     = errors.New("routing: malformed artifact")
	ErrVersion       = errors.New("routing: unsupported artifact version")
	ErrKind          = errors.New("routing: unexpected artifact kind")
	ErrUnknownRegion = errors.New("routing: artifact names an unknown region")
	ErrBadMAC        = errors.New("routing: artifact tag failed verification")
	ErrInvalidKey    = errors.New("routing: routing key shorter than 32 bytes")
	ErrInvalidRegion = errors.New("routing: invalid region id")
)

// maxArtifactLen bounds what the parser reads; real artifacts are < 100 bytes.
const maxArtifactLen = 200

// Tag is what an artifact says about itself.
type Tag struct {
	Kind   Kind
	Region string
}

// Parse reads the tag of an artifact without any key. The result is only
// good for logging; use Codec.Verify before trusting it.
func Parse(s string) (Tag, error) {
	t, _, err := split(s)
	return t, err
}

// split parses the textual fields and returns the tag and the encoded payload.
func split(s string) (Tag, string, error) {
	if len(s) > maxArtifactLen || len(s) < len(Version)+8 {
		return Tag{}, "", ErrMalformed
	}
	if s[:len(Version)] != Version || s[len(Version)] != '.' {
		if strings.HasPrefix(s, "m") && strings.IndexByte(s, '.') > 0 {
			return Tag{}, "", ErrVersion
		}
		return Tag{}, "", ErrMalformed
	}
	rest := s[len(Version)+1:]
	if len(rest) < 3 || rest[2] != '.' {
		return Tag{}, "", ErrMalformed
	}
	kind := Kind(rest[:2])
	if kind.randomSize() == 0 {
		return Tag{}, "", ErrKind
	}
	rest = rest[3:]
	dot := strings.IndexByte(rest, '.')
	if dot <= 0 {
		return Tag{}, "", ErrMalformed
	}
	region, payload := rest[:dot], rest[dot+1:]
	if !ValidRegionID(region) {
		return Tag{}, "", ErrMalformed
	}
	if len(payload) != encodedLen(kind.randomSize()+MACSize) {
		return Tag{}, "", ErrMalformed
	}
	return Tag{Kind: kind, Region: region}, payload, nil
}

// ValidRegionID reports whether id is a well-formed region id: 1 to 16
// characters of [a-z0-9-], not starting with '-'.
func ValidRegionID(id string) bool {
	if len(id) == 0 || len(id) > 16 || id[0] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' {
			return false
		}
	}
	return true
}

// Codec mints and verifies tagged artifacts with the federation routing key.
// It is safe for concurrent use.
type Codec struct {
	regions map[string]struct{}
	keys    []*sync.Pool // of *macState; current key first, then keys still accepted
}

// macState is a keyed HMAC with its scratch buffers. HMAC-SHA256 keeps the
// key's pad blocks hashed once, so a MAC costs two SHA-256 blocks; the
// buffers live with the pooled state because anything handed to a hash.Hash
// escapes, and a fresh stack buffer per call would become a heap allocation.
type macState struct {
	h   hash.Hash
	in  [2 + 2 + 1 + 16 + 32]byte
	sum [sha256.Size]byte
}

// NewCodec returns a codec for the given region set. keys[0] signs new
// artifacts; every key verifies, so a routing key can be rotated by adding the
// new key in front and dropping the old one after the longest artifact lifetime.
func NewCodec(regions []string, keys ...[]byte) (*Codec, error) {
	if len(keys) == 0 {
		return nil, ErrInvalidKey
	}
	c := &Codec{regions: make(map[string]struct{}, len(regions))}
	for _, r := range regions {
		if !ValidRegionID(r) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidRegion, r)
		}
		c.regions[r] = struct{}{}
	}
	for _, k := range keys {
		if len(k) < MinKeySize {
			return nil, ErrInvalidKey
		}
		key := append([]byte(nil), k...)
		c.keys = append(c.keys, &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }})
	}
	return c, nil
}

// HasRegion reports whether id is one of the configured regions.
func (c *Codec) HasRegion(id string) bool {
	_, ok := c.regions[id]
	return ok
}

// New mints a fresh artifact of the given kind for region.
func (c *Codec) New(kind Kind, region string) (string, error) {
	n := kind.randomSize()
	if n == 0 {
		return "", ErrKind
	}
	if !c.HasRegion(region) {
		return "", fmt.Errorf("%w: %q", ErrUnknownRegion, region)
	}
	var raw [32 + MACSize]byte
	if _, err := rand.Read(raw[:n]); err != nil {
		return "", fmt.Errorf("routing: reading randomness: %w", err)
	}
	c.mac(0, kind, region, raw[:n], raw[n:n+MACSize])

	var buf [maxArtifactLen]byte
	p := copy(buf[:], Version)
	buf[p] = '.'
	p++
	p += copy(buf[p:], kind)
	buf[p] = '.'
	p++
	p += copy(buf[p:], region)
	buf[p] = '.'
	p++
	m := encodedLen(n + MACSize)
	encode(buf[p:p+m], raw[:n+MACSize])
	return string(buf[:p+m]), nil
}

// Derive returns the deterministic artifact of kind for region named by
// seed: its random part is an HMAC of the seed under the current routing key.
// Federation nodes use it to agree on the ids of the clients they register
// with each other without exchanging configuration.
func (c *Codec) Derive(kind Kind, region, seed string) (string, error) {
	n := kind.randomSize()
	if n == 0 {
		return "", ErrKind
	}
	if !c.HasRegion(region) {
		return "", fmt.Errorf("%w: %q", ErrUnknownRegion, region)
	}
	st := c.keys[0].Get().(*macState)
	st.h.Reset()
	st.h.Write([]byte("derive\x00" + string(kind) + "\x00" + region + "\x00" + seed))
	sum := st.h.Sum(nil)
	c.keys[0].Put(st)
	var raw [32 + MACSize]byte
	copy(raw[:n], sum)
	c.mac(0, kind, region, raw[:n], raw[n:n+MACSize])
	p := Version + "." + string(kind) + "." + region + "."
	out := make([]byte, len(p)+encodedLen(n+MACSize))
	copy(out, p)
	encode(out[len(p):], raw[:n+MACSize])
	return string(out), nil
}

// DeriveSecret returns a 256-bit secret for label derived from the current
// routing key (HMAC-SHA256 as a KDF), base64url-encoded.
func (c *Codec) DeriveSecret(label string) string {
	st := c.keys[0].Get().(*macState)
	st.h.Reset()
	st.h.Write([]byte("secret\x00" + label))
	sum := st.h.Sum(nil)
	c.keys[0].Put(st)
	out := make([]byte, encodedLen(len(sum)))
	encode(out, sum)
	return string(out)
}

// Verify checks an artifact's MAC and region and returns its tag. It never
// allocates on the success path.
func (c *Codec) Verify(s string) (Tag, error) {
	t, payload, err := split(s)
	if err != nil {
		return Tag{}, err
	}
	var raw [32 + MACSize]byte
	n := t.Kind.randomSize()
	if !decode(raw[:n+MACSize], payload) {
		return Tag{}, ErrMalformed
	}
	var want [MACSize]byte
	for i := range c.keys {
		c.mac(i, t.Kind, t.Region, raw[:n], want[:])
		if hmac.Equal(want[:], raw[n:n+MACSize]) {
			if !c.HasRegion(t.Region) {
				return Tag{}, ErrUnknownRegion
			}
			return t, nil
		}
	}
	return Tag{}, ErrBadMAC
}

// VerifyKind is Verify that also requires the artifact to be of kind k.
func (c *Codec) VerifyKind(s string, k Kind) (Tag, error) {
	t, err := c.Verify(s)
	if err != nil {
		return t, err
	}
	if t.Kind != k {
		return Tag{}, ErrKind
	}
	return t, nil
}

// mac writes the truncated HMAC-SHA256 of (version, kind, region, random)
// under key i into dst. The region is length-prefixed so that no two
// different tuples share an input.
func (c *Codec) mac(i int, kind Kind, region string, random, dst []byte) {
	st := c.keys[i].Get().(*macState)
	n := copy(st.in[:], Version)
	n += copy(st.in[n:], kind)
	st.in[n] = byte(len(region))
	n++
	n += copy(st.in[n:], region)
	n += copy(st.in[n:], random)
	st.h.Reset()
	st.h.Write(st.in[:n])
	copy(dst, st.h.Sum(st.sum[:0])[:MACSize])
	c.keys[i].Put(st)
}
