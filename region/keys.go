package region

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/meridian-id/meridian/region/store"
)

// Default timings of signing-key rotation (KeyOptions). A node reuses its
// region's key list for up to CacheTTL and a peer region's published keys
// for up to PeerCacheTTL, so a key added to the database is in every node's
// own JWKS within CacheTTL and in every region's federation (global) JWKS
// within CacheTTL + PeerCacheTTL: the propagation bound. A rotated key
// signs only PublishDelay after it was created, and PublishDelay must be at
// least that bound, so no node signs with a kid some region does not
// publish yet. Every region must run the same PeerCacheTTL (the default).
const (
	DefaultKeyCacheTTL     = 30 * time.Second
	DefaultPeerKeyCacheTTL = time.Minute
	DefaultPublishDelay    = 10 * time.Minute
)

// KeyOptions configure a region's signing keys; zero fields take defaults.
type KeyOptions struct {
	// Wrapper seals private keys at rest. Nil stores them in the clear
	// (embedding and tests only; the regional node always sets one).
	Wrapper KeyWrapper
	// Previous are KEKs being rotated out: keys they sealed still open and
	// Migrate reseals them with Wrapper.
	Previous []KeyWrapper
	// PublishDelay is how long a rotated key is published before it signs;
	// at least CacheTTL + PeerCacheTTL.
	PublishDelay time.Duration
	// MinOverlap is the shortest overlap Rotate accepts: the longest
	// lifetime of a token the key signs (ID token, JWT access token).
	MinOverlap time.Duration
	// CacheTTL bounds how long a node reuses its region's key list.
	CacheTTL time.Duration
	// PeerCacheTTL bounds how long a node reuses a peer region's keys.
	PeerCacheTTL time.Duration
}

// Errors of key management.
var (
	// ErrOverlapTooShort is returned by Rotate for an overlap shorter than
	// the tokens the retiring key signed live.
	ErrOverlapTooShort = errors.New("region: signing-key overlap shorter than the token lifetime")
	// ErrPublishDelay is returned for a publish delay shorter than the
	// propagation bound of the key caches.
	ErrPublishDelay = errors.New("region: signing-key publish delay shorter than the key caches' refresh bound")
)

// KeyStore is the part of the regional store that keeps signing keys.
type KeyStore interface {
	AddSigningKey(ctx context.Context, k store.SigningKey) error
	ActivateSigningKey(ctx context.Context, id string, notAfter time.Time) error
	ListSigningKeys(ctx context.Context, now time.Time) ([]store.SigningKey, error)
	ResealSigningKey(ctx context.Context, id, fromKEK string, material []byte, toKEK string) error
}

// Keys manages a region's ES256 signing keys. A rotated key is published
// at once and signs from its NotBefore (PublishDelay later); the retired key
// signs until then and stays published for the overlap after it, so tokens
// it signed still verify. Private keys are sealed with the KEK (Wrapper).
// The key id names the region ("eu-3f2a…") so a verifier can check that a
// key only vouches for its own region.
type Keys struct {
	region string
	store  KeyStore
	opts   KeyOptions
	now    func() time.Time

	mu      sync.RWMutex
	cached  []parsedKey
	fetched time.Time
}

type parsedKey struct {
	id        string
	priv      *ecdsa.PrivateKey
	active    bool
	notBefore time.Time
}

// NewKeys returns the key manager of region. It fails for a publish delay
// shorter than the caches' propagation bound.
func NewKeys(region string, st KeyStore, opts KeyOptions) (*Keys, error) {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = DefaultKeyCacheTTL
	}
	if opts.PeerCacheTTL <= 0 {
		opts.PeerCacheTTL = DefaultPeerKeyCacheTTL
	}
	if opts.PublishDelay <= 0 {
		opts.PublishDelay = DefaultPublishDelay
	}
	if bound := opts.CacheTTL + opts.PeerCacheTTL; opts.PublishDelay < bound {
		return nil, fmt.Errorf("%w: %s < %s", ErrPublishDelay, opts.PublishDelay, bound)
	}
	return &Keys{region: region, store: st, opts: opts, now: time.Now}, nil
}

// PropagationBound is how long a new key may take to appear in every
// region's JWKS: the node cache plus the peer cache.
func (k *Keys) PropagationBound() time.Duration { return k.opts.CacheTTL + k.opts.PeerCacheTTL }

// Rotate creates a new key, published now and signing from PublishDelay
// on; the previous key keeps signing until then and stays published for
// overlap after it. An overlap shorter than MinOverlap is refused. It
// returns the new key's id and the time it starts signing.
func (k *Keys) Rotate(ctx context.Context, overlap time.Duration) (string, time.Time, error) {
	if overlap < k.opts.MinOverlap {
		return "", time.Time{}, fmt.Errorf("%w: %s < %s", ErrOverlapTooShort, overlap, k.opts.MinOverlap)
	}
	// Never wrap a new key while existing ones cannot be opened: a wrong
	// KEK must stop the rotation, not fork the key set.
	if _, err := k.load(ctx); err != nil {
		return "", time.Time{}, err
	}
	return k.create(ctx, k.opts.PublishDelay, overlap)
}

func (k *Keys) create(ctx context.Context, delay, overlap time.Duration) (string, time.Time, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", time.Time{}, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", time.Time{}, err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", time.Time{}, err
	}
	id := k.region + "-" + hex.EncodeToString(rnd[:])
	material, kekID := der, ""
	if w := k.opts.Wrapper; w != nil {
		if material, err = w.Wrap(ctx, der, keyAAD(id)); err != nil {
			return "", time.Time{}, fmt.Errorf("region: sealing signing key: %w", err)
		}
		kekID = w.ID()
	}
	now := k.now().UTC()
	notBefore := now.Add(delay)
	if err := k.store.AddSigningKey(ctx, store.SigningKey{ID: id, Algorithm: string(jose.ES256), PrivateDER: material, KEKID: kekID,
		CreatedAt: now, NotBefore: notBefore}); err != nil {
		return "", time.Time{}, err
	}
	if err := k.store.ActivateSigningKey(ctx, id, notBefore.Add(overlap)); err != nil {
		return "", time.Time{}, err
	}
	k.invalidate()
	return id, notBefore, nil
}

func (k *Keys) invalidate() {
	k.mu.Lock()
	k.fetched = time.Time{}
	k.mu.Unlock()
}

// EnsureActive seals any plaintext key in place (Migrate), checks that
// every key opens with the configured KEK, and creates the first key of a
// fresh region. A key that does not open is an error: it never leads to a
// new key being generated.
func (k *Keys) EnsureActive(ctx context.Context) error {
	if _, err := k.Migrate(ctx); err != nil {
		return err
	}
	keys, err := k.load(ctx)
	if err != nil {
		return err
	}
	for _, pk := range keys {
		if pk.active {
			return nil
		}
	}
	// The first key signs at once: no token and no cached key set of this
	// region exists yet that it could surprise.
	_, _, err = k.create(ctx, 0, 0)
	return err
}

// Migrate seals every key not sealed by the current KEK (a legacy
// plaintext key, or one sealed by a Previous KEK) with it, in place, and
// returns how many it resealed. Without a Wrapper it changes nothing.
func (k *Keys) Migrate(ctx context.Context) (int, error) {
	w := k.opts.Wrapper
	if w == nil {
		return 0, nil
	}
	// Every row, published or not: no private key stays in the clear.
	rows, err := k.store.ListSigningKeys(ctx, time.Time{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, r := range rows {
		if r.KEKID == w.ID() {
			continue
		}
		der, err := k.open(ctx, r)
		if err != nil {
			return n, err
		}
		sealed, err := w.Wrap(ctx, der, keyAAD(r.ID))
		if err != nil {
			return n, fmt.Errorf("region: sealing signing key %s: %w", r.ID, err)
		}
		err = k.store.ResealSigningKey(ctx, r.ID, r.KEKID, sealed, w.ID())
		if errors.Is(err, store.ErrConflict) {
			continue // another node of the region resealed it first
		}
		if err != nil {
			return n, err
		}
		n++
	}
	if n > 0 {
		k.invalidate()
	}
	return n, nil
}

// open returns the PKCS#8 DER of a stored key.
func (k *Keys) open(ctx context.Context, r store.SigningKey) ([]byte, error) {
	if r.KEKID == "" {
		return r.PrivateDER, nil
	}
	for _, w := range append([]KeyWrapper{k.opts.Wrapper}, k.opts.Previous...) {
		if w != nil && w.ID() == r.KEKID {
			der, err := w.Unwrap(ctx, r.PrivateDER, keyAAD(r.ID))
			if err != nil {
				return nil, fmt.Errorf("region: signing key %s: %w", r.ID, err)
			}
			return der, nil
		}
	}
	have := "none"
	if k.opts.Wrapper != nil {
		have = k.opts.Wrapper.ID()
	}
	return nil, fmt.Errorf("%w: key %s is sealed by %s, this node has %s (check the region's key_encryption_key_file)",
		ErrWrongKEK, r.ID, r.KEKID, have)
}

func (k *Keys) load(ctx context.Context) ([]parsedKey, error) {
	k.mu.RLock()
	if !k.fetched.IsZero() && time.Since(k.fetched) < k.opts.CacheTTL {
		c := k.cached
		k.mu.RUnlock()
		return c, nil
	}
	k.mu.RUnlock()
	rows, err := k.store.ListSigningKeys(ctx, k.now().UTC())
	if err != nil {
		return nil, err
	}
	keys := make([]parsedKey, 0, len(rows))
	for _, r := range rows {
		der, err := k.open(ctx, r)
		if err != nil {
			return nil, err
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			return nil, fmt.Errorf("region: signing key %s: %w", r.ID, err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("region: signing key %s is not ECDSA", r.ID)
		}
		keys = append(keys, parsedKey{id: r.ID, priv: ec, active: r.Active, notBefore: r.NotBefore})
	}
	k.mu.Lock()
	k.cached, k.fetched = keys, time.Now()
	k.mu.Unlock()
	return keys, nil
}

// errNoActiveKey is returned before the region has a signing key.
var errNoActiveKey = errors.New("region: no active signing key (run `regional keys rotate`)")

// signingKey returns the active key for op.
func (k *Keys) signingKey(ctx context.Context) (op.SigningKey, error) {
	keys, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	// The key with the latest NotBefore that has passed signs. Every node decides by the clock, not by when it last read the
	// key list, so a region switches keys at one moment (up to clock skew).
	now := k.now()
	var best *parsedKey
	for i, pk := range keys {
		if !pk.notBefore.After(now) && (best == nil || pk.notBefore.After(best.notBefore)) {
			best = &keys[i]
		}
	}
	if best != nil {
		return signingKey{id: best.id, key: best.priv}, nil
	}
	for _, pk := range keys {
		if pk.active {
			return signingKey{id: pk.id, key: pk.priv}, nil
		}
	}
	return nil, errNoActiveKey
}

// PublicKeys returns every published public key as a JWK, including a
// rotated key that does not sign yet.
func (k *Keys) PublicKeys(ctx context.Context) ([]jose.JSONWebKey, error) {
	keys, err := k.load(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]jose.JSONWebKey, 0, len(keys))
	for _, pk := range keys {
		out = append(out, jose.JSONWebKey{Key: &pk.priv.PublicKey, KeyID: pk.id, Algorithm: string(jose.ES256), Use: "sig"})
	}
	return out, nil
}

type signingKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func (s signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (s signingKey) Key() any                                    { return s.key }
func (s signingKey) ID() string                                  { return s.id }

type publicKey struct{ jwk jose.JSONWebKey }

func (p publicKey) ID() string                         { return p.jwk.KeyID }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.jwk.Key }

// KeyInfo describes a stored signing key for operators (no key material).
type KeyInfo struct {
	ID        string
	State     string // signing, published (signs from NotBefore), retired
	KEKID     string // "" for a plaintext key
	NotBefore time.Time
	NotAfter  time.Time // zero unless retired
}

// List returns the published keys, newest first, after checking that each
// opens with the configured KEK.
func (k *Keys) List(ctx context.Context) ([]KeyInfo, error) {
	rows, err := k.store.ListSigningKeys(ctx, k.now().UTC())
	if err != nil {
		return nil, err
	}
	k.invalidate()
	signing := ""
	if sk, err := k.signingKey(ctx); err == nil {
		signing = sk.ID()
	} else if !errors.Is(err, errNoActiveKey) {
		return nil, err
	}
	out := make([]KeyInfo, 0, len(rows))
	for _, r := range rows {
		state := "retired"
		switch {
		case r.ID == signing:
			state = "signing"
		case r.Active:
			state = "published"
		}
		out = append(out, KeyInfo{ID: r.ID, State: state, KEKID: r.KEKID, NotBefore: r.NotBefore, NotAfter: r.NotAfter})
	}
	return out, nil
}
