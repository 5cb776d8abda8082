package federate

import (
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/seal"
)

// flowTTL bounds a federated login from Begin to Finish.
const flowTTL = 10 * time.Minute

// resolveTimeout bounds AnswersUnknown's question to the hub.
const resolveTimeout = 3 * time.Second

// LoginConfig configures a Login.
type LoginConfig struct {
	// Region is this (entry) region's id.
	Region string
	// Bases are the base URLs this region's login is served on, issuer
	// first (then DR site and global host). The callback on each is a
	// registered redirect URI; Begin uses the one of the browser's host, so
	// the callback meets the browser's host-only cookies.
	Bases []string
	// Topology is TopologyHub or TopologyMesh.
	Topology string
	// HubURL is the hub's issuer (hub topology).
	HubURL string
	// Peers maps every region id to its issuer (mesh topology).
	Peers map[string]string
	// Codec derives the client ids and MACs login state (federation
	// routing key).
	Codec *routing.Codec
	// Key is the region's own federation private key: its client
	// assertions (private_key_jwt) at the hub or mesh peers are signed
	// with it.
	Key *ecdsa.PrivateKey
	// Table resolves a username to its home region (mesh topology only;
	// it needs k_hub and the lookup store).
	Table *lookup.Table
	// Hasher holds k_hub and Regions lists every region of the federation
	// (this one included): with both, the region computes an unknown
	// name's decoy region (federation.DecoyRegion) and answers the names
	// whose decoy it is itself (AnswersUnknown). Without them every name
	// not resident here is handed to the hub, whose decoy is then never
	// this region.
	Hasher  *lookup.Hasher
	Regions []string
	// CookieKey (>= 32 bytes) encrypts the in-flight login cookie; every
	// node of the region must share it.
	CookieKey []byte
	// PreviousCookieKeys open cookies sealed before a key rotation.
	PreviousCookieKeys [][]byte
	// SecureCookies sets Secure and the __Host- prefix (https).
	SecureCookies bool
	// HTTPClient is the back-channel client (NewHTTPClient).
	HTTPClient *http.Client
	// Log receives warnings; usernames are never logged.
	Log *slog.Logger
	// RP tunes the relying parties (health probing).
	RP federation.RPOptions
}

// Login implements region.Federator as an OpenID Connect relying party
// towards the hub (hub topology) or the user's resident region (mesh).
//
// The in-flight state (authorization request id, state, nonce, PKCE
// verifier, redirect URI) travels in a cookie sealed with AES-256-GCM under
// a key derived from CookieKey: host-only, HttpOnly, SameSite=Lax (the
// callback is a top-level GET navigation), ten minutes, one cookie per
// login named after the state's hash so parallel logins in two tabs do not
// clobber each other, and deleted by Finish. A cookie rather than
// server-side state because the region store has no table for it, any node
// of the region can finish a login another node began, and nothing is left
// behind by abandoned logins; AEAD rather than a bare MAC because the PKCE
// verifier and nonce must not be readable from the cookie.
type Login struct {
	cfg   LoginConfig
	creds federation.Credentials // the region's client at the hub (hub topology)
	hub   *federation.RP
	peers map[string]*federation.RP
	box   *seal.Box
	pages *federation.Pages
	log   *slog.Logger
}

var _ region.Federator = (*Login)(nil)

// NewLogin builds a Login.
func NewLogin(cfg LoginConfig) (*Login, error) {
	if cfg.Codec == nil || !cfg.Codec.HasRegion(cfg.Region) {
		return nil, fmt.Errorf("federation: region %q is not in the routing codec", cfg.Region)
	}
	if len(cfg.CookieKey) < 32 {
		return nil, errors.New("federation: cookie key must be at least 32 bytes")
	}
	if len(cfg.Bases) == 0 {
		return nil, errors.New("federation: the region's base URLs are required")
	}
	if cfg.HTTPClient == nil {
		return nil, errors.New("federation: an HTTP client is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	box, err := seal.New("meridian federation login state v1", cfg.CookieKey, cfg.PreviousCookieKeys...)
	if err != nil {
		return nil, fmt.Errorf("federation: cookie key: %w", err)
	}
	pages, err := federation.NewPages()
	if err != nil {
		return nil, err
	}
	u := &Login{cfg: cfg, box: box, pages: pages, log: cfg.Log, peers: map[string]*federation.RP{}}
	switch cfg.Topology {
	case federation.TopologyHub:
		u.creds = federation.RegionCredentials(cfg.Region, cfg.Key, cfg.Bases...)
		u.hub, err = federation.NewRP(cfg.HubURL, u.creds, cfg.HTTPClient, cfg.RP)
		if err != nil {
			return nil, err
		}
	case federation.TopologyMesh:
		if cfg.Table == nil {
			return nil, errors.New("federation: mesh topology needs the lookup table")
		}
		for id, issuer := range cfg.Peers {
			if id == cfg.Region {
				continue
			}
			creds, err := federation.PeerCredentials(cfg.Codec, cfg.Region, id, cfg.Key, cfg.Bases...)
			if err != nil {
				return nil, err
			}
			if u.peers[id], err = federation.NewRP(issuer, creds, cfg.HTTPClient, cfg.RP); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("federation: topology must be %q or %q, got %q", federation.TopologyHub, federation.TopologyMesh, cfg.Topology)
	}
	return u, nil
}

var errUnknownUser = errors.New("federation: user unknown to the federation")

// target returns the provider to federate with: the hub, or in mesh the
// resident region ("" for the hub).
func (u *Login) target(ctx context.Context, username string) (string, *federation.RP, error) {
	if u.hub != nil {
		return "", u.hub, nil
	}
	home, err := u.cfg.Table.Resolve(ctx, username)
	switch {
	case errors.Is(err, lookup.ErrNotFound):
		// Nobody has this user: send it on to its decoy region, which
		// answers it as its own resident's wrong password, so the name
		// shows the same region wherever it is typed.
		if u.cfg.Hasher != nil && len(u.cfg.Regions) > 0 {
			if d, derr := federation.DecoyRegion(u.cfg.Hasher, username, u.cfg.Regions); derr == nil && u.peers[d] != nil {
				return d, u.peers[d], nil
			}
		}
		return "", nil, errUnknownUser
	case errors.Is(err, lookup.ErrInvalidUsername):
		return "", nil, errUnknownUser
	case err != nil:
		return "", nil, fmt.Errorf("%w: lookup: %v", region.ErrFederationUnavailable, err)
	}
	rp, ok := u.peers[home]
	if !ok {
		if home == u.cfg.Region {
			u.log.WarnContext(ctx, "lookup table places a user here who is not in the user table; run hub reconcile")
		} else {
			u.log.WarnContext(ctx, "lookup table names an unconfigured region", "home", home)
		}
		return "", nil, errUnknownUser
	}
	return home, rp, nil
}

// AnswersUnknown reports whether this region answers username, which is
// not resident here, itself as an unknown name: its decoy region
// (federation.DecoyRegion) is this region and no region has it. Only then
// is the hub asked (hub topology; by lookup key, never the name); a
// resident's username step asks a question of the same cost
// (AskAsIfUnknown). Any failure is an error: the caller then hands the
// name to the hub as before.
func (u *Login) AnswersUnknown(ctx context.Context, username string) (bool, error) {
	if u.cfg.Hasher == nil || len(u.cfg.Regions) == 0 {
		return false, nil
	}
	d, err := federation.DecoyRegion(u.cfg.Hasher, username, u.cfg.Regions)
	if err != nil || d != u.cfg.Region {
		return false, nil
	}
	if u.hub == nil {
		_, err := u.cfg.Table.Resolve(ctx, username)
		switch {
		case errors.Is(err, lookup.ErrNotFound):
			return true, nil
		case err != nil:
			return false, err
		}
		return false, nil
	}
	cur, prev, err := u.cfg.Hasher.Keys(username)
	if err != nil {
		return false, nil
	}
	keys := []lookup.Key{cur}
	if prev != nil {
		keys = append(keys, *prev)
	}
	// A slow hub must not hold the username step: past resolveTimeout the
	// name goes to the hub as before (whose answer is then unavailable).
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	known, err := federation.PostResolve(ctx, u.cfg.HTTPClient, u.cfg.HubURL, u.creds, keys)
	if err != nil {
		return false, err
	}
	return !known, nil
}

// AskAsIfUnknown does for username, resident here, the work AnswersUnknown
// does for a name whose decoy region is this one: the decoy computation
// and one question to the hub (about a random lookup key, so the hub
// learns nothing of who signs in here) or, in mesh, to the shared table.
// The username step of a resident then takes as long as that of an
// unknown name this region answers itself; without it the question alone
// told them apart (docs/security.md, Enumeration). Its outcome is ignored.
func (u *Login) AskAsIfUnknown(ctx context.Context, username string) {
	if u.cfg.Hasher == nil || len(u.cfg.Regions) == 0 {
		return
	}
	_, _ = federation.DecoyRegion(u.cfg.Hasher, username, u.cfg.Regions)
	if u.hub == nil {
		_, _ = u.cfg.Table.Resolve(ctx, username)
		return
	}
	keys := []lookup.Key{{}}
	if u.cfg.Hasher.Rotating() {
		keys = append(keys, lookup.Key{})
	}
	for i := range keys {
		_, _ = rand.Read(keys[i][:])
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	_, _ = federation.PostResolve(ctx, u.cfg.HTTPClient, u.cfg.HubURL, u.creds, keys)
}

// Begin implements region.Federator.
func (u *Login) Begin(w http.ResponseWriter, r *http.Request, login region.FederatedLogin) {
	ctx := r.Context()
	arID, username := login.ARID, login.Username
	target, rp, err := u.target(ctx, username)
	if errors.Is(err, errUnknownUser) {
		// Mesh: nobody has this user. Show the region's own password page;
		// it posts to the region's password step, which answers exactly as
		// for a wrong password (same page, same argon2id cost). The CSRF
		// token binds the request id and browser, not the step, so the
		// username form's token is valid there.
		u.pages.Render(w, http.StatusOK, "password", federation.Page{Title: federation.TitlePassword, Region: u.cfg.Region, ID: arID,
			CSRF: r.PostFormValue("csrf"), Username: username})
		return
	}
	if err == nil {
		err = rp.Ready(ctx)
	}
	if err != nil {
		u.log.WarnContext(ctx, "federated login unavailable", "target", targetName(target), "err", err)
		u.pages.Error(w, http.StatusServiceUnavailable, u.cfg.Region, federation.UnavailableMessage)
		return
	}
	f, err := federation.NewFlow()
	if err == nil {
		// The state is a region-tagged artifact (128 random bits and a
		// MAC): when the answer comes back on the global host and GeoDNS
		// sends it to another region, that region's router can tell
		// whose login it is.
		f.State, err = u.cfg.Codec.New(routing.KindAuthRequest, u.cfg.Region)
	}
	if err != nil {
		u.pages.Error(w, http.StatusInternalServerError, u.cfg.Region, "The sign-in service failed. Please try again.")
		return
	}
	redirect := rp.RedirectURI(r.Host)
	params := federation.LoginParams{Prompt: login.Prompt, MaxAge: login.MaxAge, UILocales: login.UILocales, ACRValues: login.ACRValues}
	authURL, err := rp.AuthCodeURL(ctx, &f, redirect, username, params.Values())
	if err != nil {
		u.pages.Error(w, http.StatusServiceUnavailable, u.cfg.Region, federation.UnavailableMessage)
		return
	}
	st := inFlight{ARID: arID, Target: target, State: f.State, Nonce: f.Nonce, Verifier: f.Verifier, ClientID: f.ClientID,
		Redirect: redirect, Created: time.Now().UnixNano()}
	name := u.cookieName(f.State)
	val, err := u.seal(name, st)
	if err != nil {
		u.pages.Error(w, http.StatusInternalServerError, u.cfg.Region, "The sign-in service failed. Please try again.")
		return
	}
	u.evictPending(w, r)
	http.SetCookie(w, &http.Cookie{Name: name, Value: val, Path: "/", MaxAge: int(flowTTL / time.Second),
		HttpOnly: true, Secure: u.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

func targetName(t string) string {
	if t == "" {
		return "hub"
	}
	return t
}

// Finish implements region.Federator.
func (u *Login) Finish(w http.ResponseWriter, r *http.Request) (string, region.FederatedIdentity, error) {
	// The region's callback handler writes to r.Form; make sure it exists.
	if err := r.ParseForm(); err != nil {
		return "", region.FederatedIdentity{}, fmt.Errorf("federation: callback query: %w", err)
	}
	q := r.URL.Query()
	st, err := u.open(w, r, q.Get("state"))
	if err != nil {
		return "", region.FederatedIdentity{}, err
	}
	rp := u.hub
	if st.Target != "" {
		rp = u.peers[st.Target]
	}
	if rp == nil {
		return "", region.FederatedIdentity{}, errors.New("federation: login state names an unknown provider")
	}
	id, err := rp.Complete(r.Context(), q, federation.Flow{State: st.State, Nonce: st.Nonce, Verifier: st.Verifier, ClientID: st.ClientID}, st.Redirect)
	if err != nil {
		var ae *federation.AuthError
		if errors.As(err, &ae) {
			// The answer belongs to this browser's login (state and
			// cookie matched): the caller may relay the error.
			return st.ARID, region.FederatedIdentity{}, err
		}
		return "", region.FederatedIdentity{}, err
	}
	home := st.Target
	if home == "" {
		home = id.HomeRegion
	}
	if !u.cfg.Codec.HasRegion(home) || home == u.cfg.Region {
		return "", region.FederatedIdentity{}, fmt.Errorf("federation: identity names home region %q", home)
	}
	if u.cfg.Table != nil && st.Target != "" {
		// Mesh: a region may assert only its own users; the table must
		// place the asserted username in the region that answered.
		owner, err := u.cfg.Table.Resolve(r.Context(), id.Claims["preferred_username"])
		if err != nil && !errors.Is(err, lookup.ErrNotFound) && !errors.Is(err, lookup.ErrInvalidUsername) {
			return "", region.FederatedIdentity{}, fmt.Errorf("%w: lookup: %v", region.ErrFederationUnavailable, err)
		}
		if err != nil || owner != home {
			return "", region.FederatedIdentity{}, fmt.Errorf("federation: %s asserted a user the lookup table does not place there", home)
		}
	}
	return st.ARID, region.FederatedIdentity{Subject: id.Subject, HomeRegion: home, Claims: id.Claims,
		AuthTime: id.AuthTime, AMR: id.AMR}, nil
}

// inFlight is the sealed content of the login cookie.
type inFlight struct {
	ARID     string `json:"a"`
	Target   string `json:"t,omitempty"`
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ClientID string `json:"i,omitempty"` // the client id the request named (a mesh peer's is key-derived)
	Redirect string `json:"r"`
	Created  int64  `json:"c"` // unix nanoseconds, orders logins for eviction
}

// MaxPendingLogins caps the federated logins a browser may have in flight
// at one entry region: each holds a cookie until its answer comes back, so
// abandoned logins would otherwise grow the Cookie header until requests
// fail (431). Beginning one more evicts the oldest.
const MaxPendingLogins = 4

// loginCookiePrefix starts the name of every in-flight login cookie (after
// the __Host- prefix with https).
const loginCookiePrefix = "mrd_fl_"

// evictPending expires unreadable in-flight login cookies and the oldest
// readable ones, so that with the one about to be set at most
// MaxPendingLogins remain.
func (u *Login) evictPending(w http.ResponseWriter, r *http.Request) {
	type pending struct {
		name    string
		created int64
	}
	var live []pending
	now := time.Now()
	for _, c := range r.Cookies() {
		if !strings.HasPrefix(strings.TrimPrefix(c.Name, "__Host-"), loginCookiePrefix) {
			continue
		}
		var st inFlight
		plain, err := u.box.OpenString(c.Value, c.Name, now, 4096)
		if err == nil && json.Unmarshal(plain, &st) == nil {
			live = append(live, pending{c.Name, st.Created})
			continue
		}
		u.expireCookie(w, c.Name)
	}
	slices.SortFunc(live, func(a, b pending) int { return cmp.Compare(a.created, b.created) })
	for len(live) >= MaxPendingLogins {
		u.expireCookie(w, live[0].name)
		live = live[1:]
	}
}

func (u *Login) expireCookie(w http.ResponseWriter, name string) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: u.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
}

// Errors of Finish for a callback that does not belong to a login of this browser.
var (
	ErrNoLoginState = errors.New("federation: no login in progress in this browser for this state")
	ErrLoginExpired = errors.New("federation: the login took too long")
)

func (u *Login) cookieName(state string) string {
	sum := sha256.Sum256([]byte(state))
	base := loginCookiePrefix + hex.EncodeToString(sum[:8])
	if u.cfg.SecureCookies {
		return "__Host-" + base
	}
	return base
}

func (u *Login) seal(name string, st inFlight) (string, error) {
	plain, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	return u.box.SealString(plain, name, time.Now().Add(flowTTL))
}

// open reads, deletes and checks the login cookie of state.
func (u *Login) open(w http.ResponseWriter, r *http.Request, state string) (inFlight, error) {
	if state == "" || len(state) > 128 {
		return inFlight{}, ErrNoLoginState
	}
	name := u.cookieName(state)
	c, err := r.Cookie(name)
	if err != nil {
		return inFlight{}, ErrNoLoginState
	}
	u.expireCookie(w, name)
	plain, err := u.box.OpenString(c.Value, name, time.Now(), 4096)
	if errors.Is(err, seal.ErrExpired) {
		return inFlight{}, ErrLoginExpired
	}
	if err != nil {
		return inFlight{}, ErrNoLoginState
	}
	var st inFlight
	if err := json.Unmarshal(plain, &st); err != nil {
		return inFlight{}, ErrNoLoginState
	}
	if subtle.ConstantTimeCompare([]byte(st.State), []byte(state)) != 1 {
		return inFlight{}, ErrNoLoginState
	}
	return st, nil
}
