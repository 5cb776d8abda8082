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

// keyCacheTTL bounds how long a node serves a cached key set; a rotation on
// another node of the region is picked up within this time.
const keyCacheTTL = 30 * time.Second

// Keys manages a region's ES256 signing keys: the active key signs, retired
// keys stay published until their NotAfter so tokens they signed still verify.
// The key id names the region ("eu-3f2a…") so a verifier can check that a
// key only vouches for its own region.
type Keys struct {
	region string
	store  store.Store

	mu      sync.RWMutex
	cached  []parsedKey
	fetched time.Time
}

type parsedKey struct {
	id     string
	priv   *ecdsa.PrivateKey
	active bool
}

// NewKeys returns the key manager of region.
func NewKeys(region string, st store.Store) *Keys {
	return &Keys{region: region, store: st}
}

// Rotate creates a new active key; the previous active key stays published
// for overlap (at least the longest token lifetime).
func (k *Keys) Rotate(ctx context.Context, overlap time.Duration) (string, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	id := k.region + "-" + hex.EncodeToString(rnd[:])
	now := time.Now().UTC()
	if err := k.store.AddSigningKey(ctx, store.SigningKey{ID: id, Algorithm: string(jose.ES256), PrivateDER: der, CreatedAt: now}); err != nil {
		return "", err
	}
	if err := k.store.ActivateSigningKey(ctx, id, now.Add(overlap)); err != nil {
		return "", err
	}
	k.mu.Lock()
	k.fetched = time.Time{}
	k.mu.Unlock()
	return id, nil
}

// EnsureActive creates the first key of a fresh region.
func (k *Keys) EnsureActive(ctx context.Context) error {
	keys, err := k.load(ctx)
	if err != nil {
		return err
	}
	for _, pk := range keys {
		if pk.active {
			return nil
		}
	}
	_, err = k.Rotate(ctx, 0)
	return err
}

func (k *Keys) load(ctx context.Context) ([]parsedKey, error) {
	k.mu.RLock()
	if !k.fetched.IsZero() && time.Since(k.fetched) < keyCacheTTL {
		c := k.cached
		k.mu.RUnlock()
		return c, nil
	}
	k.mu.RUnlock()
	rows, err := k.store.ListSigningKeys(ctx, time.Now().UTC())
	if err != nil {
		return nil, err
	}
	keys := make([]parsedKey, 0, len(rows))
	for _, r := range rows {
		priv, err := x509.ParsePKCS8PrivateKey(r.PrivateDER)
		if err != nil {
			return nil, fmt.Errorf("region: signing key %s: %w", r.ID, err)
		}
		ec, ok := priv.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("region: signing key %s is not ECDSA", r.ID)
		}
		keys = append(keys, parsedKey{id: r.ID, priv: ec, active: r.Active})
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
	for _, pk := range keys {
		if pk.active {
			return signingKey{id: pk.id, key: pk.priv}, nil
		}
	}
	return nil, errNoActiveKey
}

// PublicKeys returns every published public key as a JWK.
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
