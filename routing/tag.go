// Package routing owns Meridian's self-contained artifacts and the router that
// sends calls to the region that issued them.
//
// Every artifact a region hands out (client_id, authorization code, refresh
// token, opaque access token, session handle) is a tagged string:
//
//	m1.<kind>.<region>.<base64url(random ‖ mac)>
//	m2.<kind>.<region>.<key id>.<base64url(random ‖ mac)>
//
// "m1"/"m2" is the format version, <kind> a two-letter artifact kind, <region>
// the issuing region's id, readable by anyone for logging and routing; m2
// also names the routing key that MACed it, so a verifier picks the key
// instead of trying each one and an operator sees which artifacts still
// depend on a key. The MAC is HMAC-SHA256 over (version, kind, region[, key
// id], random) under that routing key, truncated to 128 bits, so a forged or
// flipped tag is rejected at the edge before any outbound request. Region ids
// only ever resolve through the configured region set: the artifact never
// names a host or URL.
//
// A codec built with NewCodec (one key plus previous ones) writes m1; one
// built with NewKeyRing writes m2 under its signing key. Both read both (a
// key id is derived from its secret, see KeyID), so every node of a release
// reads m2 before any node is configured to write it.
package routing

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"sync"
)

// Version is the artifact format version a NewCodec codec writes;
// VersionKeyed the one a NewKeyRing codec writes.
const (
	Version      = "m1"
	VersionKeyed = "m2"
)

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
	// KindUser and KindGroup are SCIM resource ids: long-lived public
	// identifiers like client_ids, so a retired routing key still routes
	// them (UseClients).
	KindUser  Kind = "us"
	KindGroup Kind = "gr"
)

// randomSize returns the number of random bytes a kind carries.
func (k Kind) randomSize() int {
	switch k {
	case KindClient, KindAuthRequest, KindTokenID, KindUser, KindGroup:
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
	KeyID  string // routing key that MACed it; empty for m1 artifacts
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
	keyed := false
	switch {
	case s[:len(Version)] == Version && s[len(Version)] == '.':
	case s[:len(VersionKeyed)] == VersionKeyed && s[len(VersionKeyed)] == '.':
		keyed = true
	default:
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
	keyID := ""
	if keyed {
		dot = strings.IndexByte(payload, '.')
		if dot <= 0 {
			return Tag{}, "", ErrMalformed
		}
		keyID, payload = payload[:dot], payload[dot+1:]
		if !ValidKeyID(keyID) {
			return Tag{}, "", ErrMalformed
		}
	}
	if len(payload) != encodedLen(kind.randomSize()+MACSize) {
		return Tag{}, "", ErrMalformed
	}
	return Tag{Kind: kind, Region: region, KeyID: keyID}, payload, nil
}

// ValidKeyID reports whether id is a well-formed routing key id (KeyID):
// 8 characters of [0-9a-f].
func ValidKeyID(id string) bool {
	if len(id) != 8 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; (c < 'a' || c > 'f') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
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

// KeyUse is what a routing key of a key ring does.
type KeyUse string

// The uses of a routing key, in the order a rotation moves a key through
// them: verify (published to every node before any node signs with it),
// sign (exactly one per ring), verify again once the next key signs, then
// clients (retired).
const (
	// UseSign MACs new artifacts (and verifies).
	UseSign KeyUse = "sign"
	// UseVerify verifies every artifact kind.
	UseVerify KeyUse = "verify"
	// UseClients verifies client_ids and SCIM resource ids only: a retired
	// key never invalidates a registered client or a provisioned resource (a tag routes a call, it never authorizes one; the
	// client's home region still authenticates it), while every short-lived
	// artifact it MACed stops verifying.
	UseClients KeyUse = "clients"
)

// RoutingKey is one key of a key ring.
type RoutingKey struct {
	Secret []byte // at least MinKeySize bytes
	Use    KeyUse
}

// KeyID returns the id an m2 artifact names its routing key by: 8 hex
// characters of HMAC-SHA256(secret, label). It is derived, never configured,
// so two nodes can never disagree about which secret an id means, and a
// codec built with NewCodec reads m2 artifacts of its keys too.
func KeyID(secret []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("meridian routing key id v1"))
	return hex.EncodeToString(m.Sum(nil)[:4])
}

// ErrKeyRing is returned for an invalid key ring.
var ErrKeyRing = errors.New("routing: invalid routing key ring")

// Codec mints and verifies tagged artifacts with the federation routing key.
// It is safe for concurrent use.
type Codec struct {
	regions map[string]struct{}
	keys    []*sync.Pool // of *macState; the signing key first, then keys still accepted
	ids     []string     // KeyID of each key, parallel to keys
	uses    []KeyUse     // parallel to keys
	keyed   bool         // writes m2 (NewKeyRing) rather than m1 (NewCodec)
}

// macState is a keyed HMAC with its scratch buffers. HMAC-SHA256 keeps the
// key's pad blocks hashed once, so a MAC costs two SHA-256 blocks; the
// buffers live with the pooled state because anything handed to a hash.Hash
// escapes, and a fresh stack buffer per call would become a heap allocation.
type macState struct {
	h   hash.Hash
	in  [2 + 2 + 1 + 16 + 1 + 8 + 32]byte
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
		if err := c.addKey(k, UseVerify); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *Codec) addKey(secret []byte, use KeyUse) error {
	id := KeyID(secret)
	if slices.Contains(c.ids, id) {
		return fmt.Errorf("%w: key %s listed twice", ErrKeyRing, id)
	}
	key := append([]byte(nil), secret...)
	c.keys = append(c.keys, &sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }})
	c.uses = append(c.uses, use)
	c.ids = append(c.ids, id)
	return nil
}

// NewKeyRing returns a codec for the given region set that writes m2
// artifacts naming their key: exactly one key signs, the others verify
// every artifact (UseVerify) or only client_ids (UseClients). Artifacts in
// the m1 format are still accepted under any key whose use allows their
// kind, so switching from NewCodec to a ring breaks nothing.
func NewKeyRing(regions []string, keys []RoutingKey) (*Codec, error) {
	c := &Codec{regions: make(map[string]struct{}, len(regions)), keyed: true}
	for _, r := range regions {
		if !ValidRegionID(r) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidRegion, r)
		}
		c.regions[r] = struct{}{}
	}
	sign := -1
	for i, k := range keys {
		if k.Use == UseSign {
			if sign >= 0 {
				return nil, fmt.Errorf("%w: keys %d and %d both sign", ErrKeyRing, sign, i)
			}
			sign = i
		}
	}
	if sign < 0 {
		return nil, fmt.Errorf("%w: no key signs", ErrKeyRing)
	}
	// The signing key first: New, Derive and DeriveSecret use keys[0].
	ordered := append([]RoutingKey{keys[sign]}, append(append([]RoutingKey(nil), keys[:sign]...), keys[sign+1:]...)...)
	for _, k := range ordered {
		switch k.Use {
		case UseSign, UseVerify, UseClients:
		default:
			return nil, fmt.Errorf("%w: use %q (sign, verify or clients)", ErrKeyRing, k.Use)
		}
		if len(k.Secret) < MinKeySize {
			return nil, ErrInvalidKey
		}
		if err := c.addKey(k.Secret, k.Use); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// SigningKeyID returns the id of the key that MACs new artifacts.
func (c *Codec) SigningKeyID() string { return c.ids[0] }

// accepts reports whether key i may verify an artifact of kind k.
func (c *Codec) accepts(i int, k Kind) bool {
	return c.uses[i] != UseClients || k == KindClient || k == KindUser || k == KindGroup
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
	version, keyID := Version, ""
	if c.keyed {
		version, keyID = VersionKeyed, c.ids[0]
	}
	c.mac(0, version, kind, region, keyID, raw[:n], raw[n:n+MACSize])

	var buf [maxArtifactLen]byte
	p := copy(buf[:], version)
	buf[p] = '.'
	p++
	p += copy(buf[p:], kind)
	buf[p] = '.'
	p++
	p += copy(buf[p:], region)
	buf[p] = '.'
	p++
	if keyID != "" {
		p += copy(buf[p:], keyID)
		buf[p] = '.'
		p++
	}
	m := encodedLen(n + MACSize)
	encode(buf[p:p+m], raw[:n+MACSize])
	return string(buf[:p+m]), nil
}

// Derive returns the deterministic artifact of kind for region named by
// seed: its random part is an HMAC of the seed under the current routing key.
// Federation nodes use it to agree on the ids of the clients they register
// with each other without exchanging configuration. It always writes m1, so
// the derived ids do not change when a federation moves to a key ring with
// the same signing key.
func (c *Codec) Derive(kind Kind, region, seed string) (string, error) {
	return c.deriveWith(0, kind, region, seed)
}

// DeriveAll returns Derive(kind, region, seed) under every key of the
// ring (the signing key's first): during a routing-key rotation a party
// names itself by the id of its own signing key, so the party that
// registers such an id keeps all of them known (federation clients).
func (c *Codec) DeriveAll(kind Kind, region, seed string) ([]string, error) {
	out := make([]string, 0, len(c.keys))
	for i := range c.keys {
		id, err := c.deriveWith(i, kind, region, seed)
		if err != nil {
			return nil, err
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

func (c *Codec) deriveWith(i int, kind Kind, region, seed string) (string, error) {
	n := kind.randomSize()
	if n == 0 {
		return "", ErrKind
	}
	if !c.HasRegion(region) {
		return "", fmt.Errorf("%w: %q", ErrUnknownRegion, region)
	}
	st := c.keys[i].Get().(*macState)
	st.h.Reset()
	st.h.Write([]byte("derive\x00" + string(kind) + "\x00" + region + "\x00" + seed))
	sum := st.h.Sum(nil)
	c.keys[i].Put(st)
	var raw [32 + MACSize]byte
	copy(raw[:n], sum)
	c.mac(i, Version, kind, region, "", raw[:n], raw[n:n+MACSize])
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

// DeriveSecrets returns DeriveSecret(label) under every key that verifies
// all artifacts (the signing key first). A receiver that checks a derived
// MAC (hop headers) against each of them keeps working while the
// federation's nodes sign with different keys of one rotation.
func (c *Codec) DeriveSecrets(label string) []string {
	var out []string
	for i := range c.keys {
		if c.uses[i] == UseClients {
			continue
		}
		st := c.keys[i].Get().(*macState)
		st.h.Reset()
		st.h.Write([]byte("secret\x00" + label))
		sum := st.h.Sum(nil)
		c.keys[i].Put(st)
		b := make([]byte, encodedLen(len(sum)))
		encode(b, sum)
		out = append(out, string(b))
	}
	return out
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
	if t.KeyID != "" {
		// m2 names its key: exactly one MAC to check.
		for i, id := range c.ids {
			if id == t.KeyID && c.accepts(i, t.Kind) {
				c.mac(i, VersionKeyed, t.Kind, t.Region, t.KeyID, raw[:n], want[:])
				if hmac.Equal(want[:], raw[n:n+MACSize]) {
					return c.known(t)
				}
			}
		}
		return Tag{}, ErrBadMAC
	}
	for i := range c.keys {
		if !c.accepts(i, t.Kind) {
			continue
		}
		c.mac(i, Version, t.Kind, t.Region, "", raw[:n], want[:])
		if hmac.Equal(want[:], raw[n:n+MACSize]) {
			return c.known(t)
		}
	}
	return Tag{}, ErrBadMAC
}

func (c *Codec) known(t Tag) (Tag, error) {
	if !c.HasRegion(t.Region) {
		return Tag{}, ErrUnknownRegion
	}
	return t, nil
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

// mac writes the truncated HMAC-SHA256 of (version, kind, region[, key id],
// random) under key i into dst. The region and key id are length-prefixed so
// that no two different tuples share an input; m1 has no key id field, so
// its input is exactly what earlier releases MACed.
func (c *Codec) mac(i int, version string, kind Kind, region, keyID string, random, dst []byte) {
	st := c.keys[i].Get().(*macState)
	n := copy(st.in[:], version)
	n += copy(st.in[n:], kind)
	st.in[n] = byte(len(region))
	n++
	n += copy(st.in[n:], region)
	if version == VersionKeyed {
		st.in[n] = byte(len(keyID))
		n++
		n += copy(st.in[n:], keyID)
	}
	n += copy(st.in[n:], random)
	st.h.Reset()
	st.h.Write(st.in[:n])
	copy(dst, st.h.Sum(st.sum[:0])[:MACSize])
	c.keys[i].Put(st)
}
