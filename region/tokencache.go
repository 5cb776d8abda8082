package region

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// tokenCacheTTL is the revocation bound of introspection (and userinfo)
// across a region: a node answers from a lookup of an access token it made
// at most this long ago, so a token revoked on another node of the region
// (or by a path that does not pass through this node's storage, such as the
// admin API deleting a user) is reported inactive everywhere within
// tokenCacheTTL of the revocation's commit. A revocation through this
// node's storage empties its cache before it returns: the revoking node
// never answers from a lookup older than the revocation.
const tokenCacheTTL = time.Second

// tokenCacheMax bounds the cache; it is emptied when full.
const tokenCacheMax = 100_000

// tokenCache is a store.Store whose GetAccessToken answers from a short-TTL
// positive cache: only tokens found and not revoked are kept, so an unknown
// token always reaches the database. Every method of storage that revokes
// (or may revoke) tokens bumps a generation that invalidates every entry,
// including lookups in flight while the revocation committed (an entry is
// kept only if the generation did not move between reading it and storing
// it).
type tokenCache struct {
	store.Store
	mu  sync.RWMutex
	gen uint64
	m   map[store.Hash]cachedToken
}

type cachedToken struct {
	t       store.AccessToken
	fetched time.Time // taken before the database read
	gen     uint64
}

func newTokenCache(st store.Store) *tokenCache {
	return &tokenCache{Store: st, m: map[store.Hash]cachedToken{}}
}

// GetAccessToken returns a cached lookup younger than tokenCacheTTL, or
// reads the database.
func (c *tokenCache) GetAccessToken(ctx context.Context, h store.Hash) (store.AccessToken, error) {
	now := time.Now()
	c.mu.RLock()
	e, ok := c.m[h]
	gen := c.gen
	c.mu.RUnlock()
	if ok && e.gen == gen && now.Sub(e.fetched) < tokenCacheTTL {
		return clone(e.t), nil
	}
	t, err := c.Store.GetAccessToken(ctx, h)
	if err != nil || t.Revoked {
		return t, err
	}
	c.mu.Lock()
	if c.gen == gen {
		if len(c.m) >= tokenCacheMax {
			clear(c.m)
		}
		c.m[h] = cachedToken{t: clone(t), fetched: now, gen: gen}
	}
	c.mu.Unlock()
	return t, nil
}

// clone gives each caller its own slices: the cached token is shared.
func clone(t store.AccessToken) store.AccessToken {
	t.Audience = slices.Clone(t.Audience)
	t.Scopes = slices.Clone(t.Scopes)
	t.AMR = slices.Clone(t.AMR)
	return t
}

// uncached returns the store behind a tokenCache (or st itself): paths that
// change a token read it as stored.
func uncached(st store.Store) store.Store {
	if c, ok := st.(*tokenCache); ok {
		return c.Store
	}
	return st
}

// bump invalidates every cached lookup.
func (c *tokenCache) bump() {
	c.mu.Lock()
	c.gen++
	clear(c.m)
	c.mu.Unlock()
}

// The methods below revoke tokens (directly, by grant or family, or on
// reuse detection, which they report as an error after committing it): the
// cache is emptied after each revoking call, whatever it returned; a
// successful rotation or redemption revokes nothing and keeps the cache.

func (c *tokenCache) RevokeAccessToken(ctx context.Context, h store.Hash) error {
	defer c.bump()
	return c.Store.RevokeAccessToken(ctx, h)
}

func (c *tokenCache) RevokeRefreshToken(ctx context.Context, h store.Hash) error {
	defer c.bump()
	return c.Store.RevokeRefreshToken(ctx, h)
}

func (c *tokenCache) RevokeGrant(ctx context.Context, grantID string) error {
	defer c.bump()
	return c.Store.RevokeGrant(ctx, grantID)
}

func (c *tokenCache) RevokeUserClientTokens(ctx context.Context, userID, clientID string) error {
	defer c.bump()
	return c.Store.RevokeUserClientTokens(ctx, userID, clientID)
}

func (c *tokenCache) RotateRefreshToken(ctx context.Context, old store.Hash, at store.AccessToken, next store.RefreshToken) error {
	err := c.Store.RotateRefreshToken(ctx, old, at, next)
	if err != nil {
		c.bump()
	}
	return err
}

func (c *tokenCache) RedeemCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	ar, err := c.Store.RedeemCode(ctx, code)
	if err != nil {
		c.bump()
	}
	return ar, err
}

func (c *tokenCache) DeleteUser(ctx context.Context, username string) error {
	defer c.bump()
	return c.Store.DeleteUser(ctx, username)
}

func (c *tokenCache) RevokeUserTokens(ctx context.Context, userID string) error {
	defer c.bump()
	return c.Store.RevokeUserTokens(ctx, userID)
}

func (c *tokenCache) DeleteClient(ctx context.Context, id string) error {
	defer c.bump()
	return c.Store.DeleteClient(ctx, id)
}
