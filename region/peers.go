package region

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// Peers reaches the other regions of the federation over authenticated
// hops; the router implements it.
type Peers interface {
	Call(ctx context.Context, region, path string, form url.Values) (*http.Response, error)
	Regions() []string
}

// peerCacheTTL bounds how long a verified foreign client is reused.
const peerCacheTTL = time.Minute

// foreignClient is a client resident in another region, authenticated by
// its home region for a call (introspection) that must be answered here.
type foreignClient struct {
	scopes []string
	at     time.Time
}

// remote holds the caches of what peers told this region.
type remote struct {
	peers Peers

	mu      sync.Mutex
	clients map[[32]byte]foreignClient
	keys    map[string][]jose.JSONWebKey
	keysAt  map[string]time.Time
	keysTTL time.Duration // how long a peer's key set is reused (KeyOptions.PeerCacheTTL)
}

func newRemote(p Peers, keysTTL time.Duration) *remote {
	return &remote{peers: p, clients: map[[32]byte]foreignClient{}, keys: map[string][]jose.JSONWebKey{}, keysAt: map[string]time.Time{},
		keysTTL: keysTTL}
}

var errForeignClient = errors.New("region: foreign client rejected by its home region")

// verifyClient asks the client's home region to check its secret. Positive
// answers are cached by a digest of (id, secret) for a minute.
func (rm *remote) verifyClient(ctx context.Context, region, id, secret string) (foreignClient, error) {
	k := sha256.Sum256([]byte(id + "\x00" + secret))
	rm.mu.Lock()
	fc, ok := rm.clients[k]
	rm.mu.Unlock()
	if ok && time.Since(fc.at) < peerCacheTTL {
		return fc, nil
	}
	resp, err := rm.peers.Call(ctx, region, "/internal/client-auth", url.Values{"client_id": {id}, "client_secret": {secret}})
	if err != nil {
		raiseFault(ctx)
		return foreignClient{}, fmt.Errorf("region: verifying client at %s: %w", region, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode >= 500 {
			raiseFault(ctx)
		}
		return foreignClient{}, errForeignClient
	}
	var body struct {
		Scopes []string `json:"scopes"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&body); err != nil {
		return foreignClient{}, errForeignClient
	}
	fc = foreignClient{scopes: body.Scopes, at: time.Now()}
	rm.mu.Lock()
	if len(rm.clients) > 10000 {
		clear(rm.clients)
	}
	rm.clients[k] = fc
	rm.mu.Unlock()
	return fc, nil
}

// peerKeys returns region's published signing keys, cached for keysTTL
// (part of the rotation's propagation bound, see KeyOptions); a stale copy
// is served when the peer cannot be reached.
func (rm *remote) peerKeys(ctx context.Context, region string) []jose.JSONWebKey {
	rm.mu.Lock()
	keys, at := rm.keys[region], rm.keysAt[region]
	rm.mu.Unlock()
	if keys != nil && time.Since(at) < rm.keysTTL {
		return keys
	}
	resp, err := rm.peers.Call(ctx, region, "/internal/keys", nil)
	if err != nil {
		return keys
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set) != nil {
		return keys
	}
	// A peer may only publish keys that name its own region.
	var own []jose.JSONWebKey
	for _, k := range set.Keys {
		if r, ok := routing.KeyRegion(k.KeyID); ok && r == region && k.IsPublic() {
			own = append(own, k)
		}
	}
	rm.mu.Lock()
	rm.keys[region], rm.keysAt[region] = own, time.Now()
	rm.mu.Unlock()
	return own
}

// federationKeys is the key set published at /keys: this region's keys and
// every peer's, so a token signed by any region verifies with the one
// jwks_uri applications see. Verifiers should check that the kid's region
// matches the token's issuing region (docs/security.md).
func (p *Provider) federationKeys(ctx context.Context) ([]op.Key, error) {
	own, err := p.keys.PublicKeys(ctx)
	if err != nil {
		return nil, err
	}
	all := slices.Clone(own)
	for _, r := range p.cfg.Peers.Regions() {
		if r != p.cfg.Region {
			all = append(all, p.remote.peerKeys(ctx, r)...)
		}
	}
	out := make([]op.Key, len(all))
	for i, k := range all {
		out[i] = publicKey{k}
	}
	return out, nil
}

// internalClientAuth is POST /internal/client-auth, answered for peer
// regions only (the router sets the hop-from header after verifying the
// hop's MAC and strips any client-supplied one).
func (p *Provider) internalClientAuth(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(routing.HopFromHeader) == "" {
		http.NotFound(w, r)
		return
	}
	c, err := p.storage.authenticate(r.Context(), r.PostFormValue("client_id"), r.PostFormValue("client_secret"))
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"client_id": c.ID, "scopes": c.Scopes})
}

// internalKeys is GET /internal/keys: this region's own public keys.
func (p *Provider) internalKeys(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(routing.HopFromHeader) == "" {
		http.NotFound(w, r)
		return
	}
	keys, err := p.keys.PublicKeys(r.Context())
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: keys})
}

// internalEndSession is POST /internal/end-session: a peer region ends one
// of this region's browser sessions during an RP-initiated logout there.
func (p *Provider) internalEndSession(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(routing.HopFromHeader) == "" {
		http.NotFound(w, r)
		return
	}
	handle := r.PostFormValue("session")
	if v := r.PostFormValue("signout"); v != "" {
		// The peer forwards this region's sealed sign-out cookie.
		var ok bool
		if handle, ok = p.signedOutHandle(v); !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
			return
		}
	}
	tag, err := p.codec.VerifyKind(handle, routing.KindSession)
	if err != nil || tag.Region != p.cfg.Region {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request"})
		return
	}
	_ = p.st.DeleteSession(r.Context(), store.Digest(handle))
	w.WriteHeader(http.StatusNoContent)
}
