package hub

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/text/language"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/internal/clientaddr"
	"github.com/meridian-id/meridian/loginpage"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/memstore"
	"github.com/meridian-id/meridian/password"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/seal"
)

// Region is a region as the hub knows it.
type Region struct {
	ID string
	// Issuer is the region's own issuer: the hub sends users there and
	// verifies the region's ID tokens against it.
	Issuer string
	// Bases are the base URLs of the region's login (issuer, DR site,
	// global host); their federated-login callbacks are the redirect URIs
	// of the region's client at the hub.
	Bases []string
}

// RegionsFromConfig lists the configured regions.
func RegionsFromConfig(cfg *config.Config) []Region {
	out := make([]Region, 0, len(cfg.Regions))
	for i := range cfg.Regions {
		r := &cfg.Regions[i]
		out = append(out, Region{ID: r.ID, Issuer: cfg.Issuer(r), Bases: setup.RegionBases(cfg, r)})
	}
	return out
}

// Config configures a Broker.
type Config struct {
	// Issuer is the hub's issuer URL (config: hub.host).
	Issuer  string
	Regions []Region
	// Codec derives the federation clients' ids (routing key).
	Codec *routing.Codec
	// Keys is the hub's federation identity (setup.Keyring with self
	// federation.PartyHub): its private key signs the hub's client
	// assertions at the regions; each region's public key authenticates
	// that region's client at the hub and its table changes.
	Keys *federation.Keyring
	// Conflicts holds the users two regions claim (lookup key → the
	// region whose claim was refused) until an operator resolves them
	// (hub conflicts). nil: in memory.
	Conflicts lookup.Store
	// Hasher holds k_hub; Lookup is the table's store (Redis or embedded).
	Hasher *lookup.Hasher
	Lookup lookup.Store
	// State keeps protocol state; nil means NewMemoryState (one hub node).
	State StateStore
	// Secret (>= 32 bytes) is the hub's own secret: it derives the ID
	// token signing key, the state sealing key and the CSRF key. It must
	// not be k_hub or the routing key, which regions hold too.
	Secret []byte
	// PreviousSecrets, after a rotation of Secret, still open the state
	// sealed before it (logins in flight survive the rotation).
	PreviousSecrets [][]byte
	// HTTPClient is the back-channel client (federation.NewHTTPClient).
	HTTPClient *http.Client
	// SecureCookies sets Secure and the __Host- prefix (https).
	SecureCookies bool
	Log           *slog.Logger
	// RP tunes the relying parties towards the regions.
	RP federation.RPOptions
	// Meter, when set, receives the hub's metrics
	// (meridian.hub.logins by outcome and home region).
	Meter metric.Meter
	// TrustedProxies are the reverse proxies in front of the hub whose
	// X-Forwarded-For names the client for the per-address limits
	// (hub.trusted_proxies); nil: the peer address is the client.
	TrustedProxies *clientaddr.Trusted
	// Limits per minute: username resolutions per client address
	// (default 60), password attempts per address (30) and per
	// identifier (10).
	ResolvesPerIP, AttemptsPerIP, AttemptsPerID int
}

// Broker is the federation hub. It is an http.Handler.
type Broker struct {
	cfg      Config
	regions  map[string]Region
	ids      []string
	table    *lookup.Table
	state    *sealedState
	storage  *storage
	op       *op.Provider
	rps      map[string]*federation.RP
	pages    *federation.Pages
	attempts *limiter
	resolves *limiter
	dummy    string
	csrfKey  []byte
	log      *slog.Logger
	logins   metric.Int64Counter
	lookups  metric.Int64Counter
	// tableMu serializes this node's writes to the table (applyChanges,
	// ResolveConflict).
	tableMu     sync.Mutex
	conflicts   metric.Int64Counter
	auditEvents metric.Int64Counter
	handler     http.Handler
}

// New builds a Broker.
func New(cfg Config) (*Broker, error) {
	switch {
	case cfg.Codec == nil || cfg.Hasher == nil || cfg.Lookup == nil:
		return nil, errors.New("hub: codec, hasher and lookup store are required")
	case cfg.Keys == nil || cfg.Keys.Key == nil:
		return nil, errors.New("hub: the hub's federation key is required")
	case len(cfg.Secret) < 32:
		return nil, errors.New("hub: the hub secret must be at least 32 bytes")
	case cfg.HTTPClient == nil:
		return nil, errors.New("hub: an HTTP client is required")
	case len(cfg.Regions) == 0:
		return nil, errors.New("hub: no regions")
	}
	iu, err := url.Parse(cfg.Issuer)
	if err != nil || (iu.Scheme != "https" && iu.Scheme != "http") || iu.Host == "" || iu.Path != "" {
		return nil, fmt.Errorf("hub: issuer %q must be an http(s) origin", cfg.Issuer)
	}
	if cfg.State == nil {
		cfg.State = NewMemoryState()
	}
	if cfg.Conflicts == nil {
		cfg.Conflicts = memstore.New()
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	cfg.ResolvesPerIP = cmpOr(cfg.ResolvesPerIP, 60)
	cfg.AttemptsPerIP = cmpOr(cfg.AttemptsPerIP, 30)
	cfg.AttemptsPerID = cmpOr(cfg.AttemptsPerID, 10)

	b := &Broker{cfg: cfg, regions: map[string]Region{}, rps: map[string]*federation.RP{}, log: cfg.Log,
		attempts: newLimiter(cfg.AttemptsPerIP, cfg.AttemptsPerID), resolves: newLimiter(cfg.ResolvesPerIP, 0)}
	if b.table, err = lookup.NewTable(cfg.Hasher, cfg.Lookup); err != nil {
		return nil, err
	}
	box, err := seal.New("meridian hub state v1", cfg.Secret, cfg.PreviousSecrets...)
	if err != nil {
		return nil, fmt.Errorf("hub: secret: %w", err)
	}
	b.state = &sealedState{s: cfg.State, box: box}
	if b.csrfKey, err = hkdf.Key(sha256.New, cfg.Secret, nil, "meridian hub csrf v1", 32); err != nil {
		return nil, err
	}
	key, err := deriveSigningKey(cfg.Secret)
	if err != nil {
		return nil, err
	}
	b.storage = &storage{clients: map[string]*regionClient{}, state: b.state, key: key}
	for _, r := range cfg.Regions {
		if !cfg.Codec.HasRegion(r.ID) {
			return nil, fmt.Errorf("hub: region %q is not in the routing codec", r.ID)
		}
		b.regions[r.ID] = r
		b.ids = append(b.ids, r.ID)
		bases := r.Bases
		if len(bases) == 0 {
			bases = []string{r.Issuer}
		}
		pubs := cfg.Keys.PublicKeys(r.ID)
		if len(pubs) == 0 {
			return nil, fmt.Errorf("hub: no federation public key for region %q", r.ID)
		}
		c := federation.RegionCredentials(r.ID, nil, bases...)
		rc := &regionClient{id: c.ClientID, region: r.ID, redirects: c.RedirectURIs}
		for _, pub := range pubs {
			rc.keys = append(rc.keys, federation.JWK(pub))
		}
		b.storage.clients[c.ClientID] = rc
		creds, err := federation.HubCredentials(cfg.Codec, r.ID, cfg.Issuer, cfg.Keys.Key)
		if err != nil {
			return nil, err
		}
		if b.rps[r.ID], err = federation.NewRP(r.Issuer, creds, cfg.HTTPClient, cfg.RP); err != nil {
			return nil, err
		}
	}
	slices.Sort(b.ids)
	if b.pages, err = federation.NewPages(); err != nil {
		return nil, err
	}
	var pw [32]byte
	_, _ = rand.Read(pw[:])
	if b.dummy, err = password.Hash(base64.RawURLEncoding.EncodeToString(pw[:])); err != nil {
		return nil, err
	}
	var ck [32]byte
	if _, err := rand.Read(ck[:]); err != nil {
		return nil, err
	}
	opts := []op.Option{op.WithCrypto(tokenCrypto{})}
	if iu.Scheme == "http" {
		opts = append(opts, op.WithAllowInsecure())
	}
	b.op, err = op.NewProvider(&op.Config{
		CryptoKey:               ck,
		CodeMethodS256:          true,
		AuthMethodPrivateKeyJWT: true,
		SupportedUILocales:      []language.Tag{language.English},
		SupportedScopes:         []string{oidc.ScopeOpenID, oidc.ScopeProfile, oidc.ScopeEmail, oidc.ScopePhone},
		SupportedClaims: []string{"sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "amr", "at_hash", "c_hash", "azp",
			"preferred_username", "name", "given_name", "family_name", "locale", "email", "email_verified", "phone_number", "home_region"},
	}, b.storage, op.StaticIssuer(cfg.Issuer), opts...)
	if err != nil {
		return nil, err
	}
	if cfg.Meter != nil {
		if b.logins, err = cfg.Meter.Int64Counter("meridian.hub.logins",
			metric.WithDescription("federated login steps at the hub by outcome and home region")); err != nil {
			return nil, err
		}
		if b.lookups, err = cfg.Meter.Int64Counter("meridian.lookup.resolves",
			metric.WithDescription("user→region table lookups by result (found, unknown, error)")); err != nil {
			return nil, err
		}
		if b.conflicts, err = cfg.Meter.Int64Counter("meridian.hub.table.conflicts",
			metric.WithDescription("users claimed by a region while the table places them in another (held, not written)")); err != nil {
			return nil, err
		}
		if b.auditEvents, err = cfg.Meter.Int64Counter("meridian_audit_events",
			metric.WithDescription("Security audit events by event name.")); err != nil {
			return nil, err
		}
	}
	b.handler = cfg.TrustedProxies.Handler(b.routes())
	return b, nil
}

// countLookup records a table lookup by result.
func (b *Broker) countLookup(ctx context.Context, err error) {
	if b.lookups == nil {
		return
	}
	result := "found"
	switch {
	case errors.Is(err, lookup.ErrNotFound), errors.Is(err, lookup.ErrInvalidUsername):
		result = "unknown"
	case err != nil:
		result = "error"
	}
	b.lookups.Add(ctx, 1, metric.WithAttributes(attribute.String("result", result)))
}

// count records a login step; it never carries a username.
func (b *Broker) count(ctx context.Context, outcome, home string) {
	if b.logins != nil {
		b.logins.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", outcome), attribute.String("region", home)))
	}
}

func cmpOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// ServeHTTP implements http.Handler.
func (b *Broker) ServeHTTP(w http.ResponseWriter, r *http.Request) { b.handler.ServeHTTP(w, r) }

// Issuer returns the hub's issuer.
func (b *Broker) Issuer() string { return b.cfg.Issuer }

// Ready reports whether the lookup table and the state store answer.
func (b *Broker) Ready(ctx context.Context) error {
	if err := b.cfg.Lookup.Ping(ctx); err != nil {
		return fmt.Errorf("lookup store: %w", err)
	}
	if err := b.cfg.State.Ping(ctx); err != nil {
		return fmt.Errorf("state store: %w", err)
	}
	return nil
}

func (b *Broker) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", b.discovery)
	mux.Handle("/authorize", b.browser(b.withIss(b.op)))
	mux.Handle("POST /oauth/token", noStore(http.HandlerFunc(b.token)))
	mux.Handle("/userinfo", noStore(b.op))
	mux.Handle("GET /keys", b.op)
	mux.HandleFunc("GET /login", b.login)
	mux.HandleFunc("POST /login/password", b.password)
	mux.HandleFunc("GET /callback/{region}", b.callback)
	mux.HandleFunc("POST "+federation.ChangesPath, b.changes)
	mux.HandleFunc("POST "+federation.ResolvePath, b.resolve)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := b.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		b.errorPage(w, http.StatusNotFound, "There is nothing here.")
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The headers every region response carries (op's CORS layer adds
		// Vary: Origin), so the hub's look-alike pages match a region's.
		h := w.Header()
		h.Set("X-Meridian-Region", "hub")
		h.Set("X-Meridian-Entry", "hub")
		h.Set("Vary", "Origin")
		loginpage.SetHeaders(h)
		mux.ServeHTTP(w, r)
	})
}

func (b *Broker) errorPage(w http.ResponseWriter, status int, msg string) {
	b.pages.Error(w, status, "hub", msg)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func noStore(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// discovery serves op's discovery document corrected to what the hub does.
func (b *Broker) discovery(w http.ResponseWriter, r *http.Request) {
	ctx := op.ContextWithIssuer(r.Context(), b.cfg.Issuer)
	doc := op.CreateDiscoveryConfig(ctx, b.op, b.storage)
	raw, err := json.Marshal(doc)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error"})
		return
	}
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	for _, k := range []string{"device_authorization_endpoint", "check_session_iframe", "end_session_endpoint",
		"revocation_endpoint", "introspection_endpoint", "revocation_endpoint_auth_methods_supported",
		"introspection_endpoint_auth_methods_supported", "request_object_signing_alg_values_supported"} {
		delete(m, k)
	}
	m["response_types_supported"] = []string{"code"}
	m["response_modes_supported"] = []string{"query"}
	m["grant_types_supported"] = []string{"authorization_code"}
	m["code_challenge_methods_supported"] = []string{"S256"}
	m["token_endpoint_auth_methods_supported"] = []string{"private_key_jwt"}
	m["token_endpoint_auth_signing_alg_values_supported"] = []string{"ES256"}
	m["authorization_response_iss_parameter_supported"] = true
	m["request_parameter_supported"] = false
	m["request_uri_parameter_supported"] = false
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, m)
}

// --- browser pages ---

// browserCookie has the name a region gives its browser cookie, so the
// hub's look-alike pages set the same header a region's do.
const browserCookie = "mrd_browser"

func (b *Broker) cookieName() string {
	if b.cfg.SecureCookies {
		return "__Host-" + browserCookie
	}
	return browserCookie
}

// browserNonce returns the random value binding CSRF tokens and the
// callback to this browser, setting it when absent.
func (b *Broker) browserNonce(w http.ResponseWriter, r *http.Request) string {
	if v := b.existingNonce(r); v != "" {
		return v
	}
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	v := base64.RawURLEncoding.EncodeToString(raw[:])
	http.SetCookie(w, &http.Cookie{Name: b.cookieName(), Value: v, Path: "/", HttpOnly: true,
		Secure: b.cfg.SecureCookies, SameSite: http.SameSiteLaxMode})
	return v
}

func (b *Broker) existingNonce(r *http.Request) string {
	if c, err := r.Cookie(b.cookieName()); err == nil && len(c.Value) == 43 {
		return c.Value
	}
	return ""
}

func (b *Broker) mac(parts ...string) string {
	m := hmac.New(sha256.New, b.csrfKey)
	for _, p := range parts {
		m.Write([]byte(strconv.Itoa(len(p)) + ":" + p))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func (b *Broker) csrf(id, nonce string) string { return b.mac("csrf", id, nonce) }

// decoy is the region that answers an unknown username
// (federation.DecoyRegion over every region, the entry region included):
// the function every entry region computes too, so the name shows the same
// region's page whichever application it is typed at.
func (b *Broker) decoy(username string) string {
	d, err := federation.DecoyRegion(b.cfg.Hasher, username, b.ids)
	if err != nil {
		return b.ids[0]
	}
	return d
}

// decoyFor is the region an unknown username is sent to from entry: its
// decoy, or, when that is entry itself (an entry region that did not
// answer the name itself: a race with a registration, or the hub's resolve
// endpoint unreachable from it), another region fixed per name, so a login
// is never sent back where it began.
func (b *Broker) decoyFor(username, entry string) string {
	if d := b.decoy(username); d != entry {
		return d
	}
	others := make([]string, 0, len(b.ids))
	for _, id := range b.ids {
		if id != entry {
			others = append(others, id)
		}
	}
	if len(others) == 0 {
		return entry
	}
	k, err := b.cfg.Hasher.Key(username)
	if err != nil {
		return others[0]
	}
	return others[int(k[8])%len(others)]
}

// Messages of the hub's pages.
const (
	msgExpired     = "This sign-in request has expired or was already used."
	msgFailed      = "Sign-in through your home region failed. Please start again from the application."
	msgSession     = "Your session expired. Please start again from the application."
	msgTooMany     = "Too many sign-in attempts. Wait a minute and try again."
	msgUnavailable = "Sign-in is temporarily unavailable. Please try again in a few minutes."
)

// login is GET /login?id=…, where op sends a new authorization request:
// resolve the login_hint and send the user to their resident region, or
// show the unknown-user password page.
func (b *Broker) login(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	ar, err := b.storage.authRequest(ctx, r.URL.Query().Get("id"))
	if errors.Is(err, ErrStateNotFound) || (err == nil && ar.IsDone) {
		b.errorPage(w, http.StatusBadRequest, msgExpired)
		return
	}
	if err != nil {
		b.log.ErrorContext(ctx, "hub state store failed", "err", err)
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	nonce := b.browserNonce(w, r)
	if !b.resolves.allow(clientIP(r), "") {
		b.errorPage(w, http.StatusTooManyRequests, msgTooMany)
		return
	}
	entry, _ := federation.RegionFromClientID(ar.ClientID)
	home, err := b.table.Resolve(ctx, ar.LoginHint)
	b.countLookup(ctx, err)
	switch {
	case errors.Is(err, lookup.ErrNotFound), errors.Is(err, lookup.ErrInvalidUsername):
		// Unknown usernames take the known path to a decoy region, whose
		// own login answers them exactly as a wrong password: same
		// status, host sequence and pages (see docs/architecture.md).
		b.count(ctx, "unknown", "")
		home = b.decoyFor(ar.LoginHint, entry)
	case err != nil:
		b.count(ctx, "lookup_unavailable", "")
		b.log.ErrorContext(ctx, "lookup table unavailable", "err", err)
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	rp, ok := b.rps[home]
	if !ok || home == entry {
		// A stale entry (the entry region just said the user is not
		// there) or a region this hub does not know: never loop.
		b.log.WarnContext(ctx, "lookup entry does not lead to a usable region; run hub reconcile", "home", home, "entry", entry)
		b.count(ctx, "stale_entry", home)
		home = b.decoyFor(ar.LoginHint, entry)
		if rp, ok = b.rps[home]; !ok || home == entry {
			b.unknown(w, r, ar, nonce) // a federation of one region
			return
		}
	}
	if err := rp.Ready(ctx); err != nil {
		b.log.WarnContext(ctx, "resident region unreachable", "home", home, "err", err)
		b.count(ctx, "region_unavailable", home)
		b.errorPage(w, http.StatusServiceUnavailable, federation.UnavailableMessage)
		return
	}
	f, err := federation.NewFlow()
	if err != nil {
		b.errorPage(w, http.StatusInternalServerError, msgUnavailable)
		return
	}
	// The resident region enforces what the application asked for.
	params := federation.LoginParams{Prompt: ar.Prompt, MaxAge: ar.MaxAge, UILocales: ar.UILocales, ACRValues: ar.ACRValues}
	u, err := rp.AuthCodeURL(ctx, &f, rp.RedirectURI(""), ar.LoginHint, params.Values())
	if err != nil {
		b.errorPage(w, http.StatusServiceUnavailable, federation.UnavailableMessage)
		return
	}
	// The client id goes with the login: the hub node that takes the
	// answer may sign with another routing key (a rotation) and derive
	// another id, but the code was issued to this one.
	lg := pendingLogin{ARID: ar.ID, Region: home, State: f.State, Nonce: f.Nonce, Verifier: f.Verifier, ClientID: f.ClientID,
		Browser: b.mac("browser", nonce)}
	if err := b.state.put(ctx, kindLogin, f.State, lg, authRequestTTL); err != nil {
		b.log.ErrorContext(ctx, "hub state store failed", "err", err)
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	b.count(ctx, "sent", home)
	http.Redirect(w, r, u, http.StatusFound)
}

// pendingLogin is a login the hub sent to a resident region.
type pendingLogin struct {
	ARID     string `json:"ar"`
	Region   string `json:"region"`
	State    string `json:"state"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
	ClientID string `json:"client_id,omitempty"` // the hub's client id the request named
	Browser  string `json:"browser"`             // MAC of the browser nonce
}

// lookLike sets the headers region's node adds to every answer (its
// provider and its router), for a page that must look like region's.
func lookLike(w http.ResponseWriter, region string) {
	w.Header().Set("X-Meridian-Region", region)
	w.Header().Set("X-Meridian-Entry", region)
}

// unknown renders the password page a region shows, for a username no
// region has.
func (b *Broker) unknown(w http.ResponseWriter, r *http.Request, ar *authReq, nonce string) {
	if slices.Contains(ar.Prompt, oidc.PromptNone) {
		// What the resident region answers prompt=none without a session.
		b.redirect(w, r, ar, url.Values{"error": {"login_required"}, "error_description": {"the home region answered login_required"}})
		return
	}
	decoy := b.decoy(ar.LoginHint)
	lookLike(w, decoy)
	b.pages.Render(w, http.StatusOK, "password", federation.Page{Title: federation.TitlePassword,
		Region: decoy, ID: ar.ID, CSRF: b.csrf(ar.ID, nonce), Username: ar.LoginHint})
}

// password is POST /login/password for unknown usernames: the same rate
// limits, argon2id cost, status and page as a region's wrong password.
func (b *Broker) password(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	id := r.PostFormValue("id")
	ar, err := b.storage.authRequest(ctx, id)
	if errors.Is(err, ErrStateNotFound) || (err == nil && ar.IsDone) {
		b.errorPage(w, http.StatusBadRequest, msgExpired)
		return
	}
	if err != nil {
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	nonce := b.existingNonce(r)
	if nonce == "" || !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(b.csrf(ar.ID, nonce))) {
		b.errorPage(w, http.StatusForbidden, msgSession)
		return
	}
	raw := r.PostFormValue("username")
	name, err := lookup.Normalize(raw)
	if err != nil {
		name = raw
	}
	pg := federation.Page{Title: federation.TitlePassword, Region: b.decoy(raw), ID: ar.ID, CSRF: b.csrf(ar.ID, nonce), Username: raw}
	lookLike(w, pg.Region)
	if !b.attempts.allow(clientIP(r), name) {
		pg.Error = federation.TooManyAttempts
		b.pages.Render(w, http.StatusTooManyRequests, "password", pg)
		return
	}
	// The hub holds no password: verifying against a dummy hash only pays
	// the argon2id cost a region pays for a wrong password.
	_ = password.Verify(b.dummy, r.PostFormValue("password"))
	pg.Error = federation.InvalidCredentials
	b.pages.Render(w, http.StatusOK, "password", pg)
}

// callback is GET /callback/{region}: the resident region's answer.
func (b *Broker) callback(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	reg := r.PathValue("region")
	rp, ok := b.rps[reg]
	if !ok {
		b.errorPage(w, http.StatusNotFound, "There is nothing here.")
		return
	}
	q := r.URL.Query()
	var lg pendingLogin
	state := q.Get("state")
	if state == "" || len(state) > 128 {
		b.errorPage(w, http.StatusBadRequest, msgFailed)
		return
	}
	// Check the binding (region and browser) before consuming the state:
	// a callback carried into another browser is refused and leaves the
	// victim's login intact. take then spends it exactly once.
	bound := func(lg pendingLogin) bool {
		nonce := b.existingNonce(r)
		return lg.Region == reg && nonce != "" && subtle.ConstantTimeCompare([]byte(lg.Browser), []byte(b.mac("browser", nonce))) == 1
	}
	for _, load := range []func(context.Context, string, string, any) error{b.state.get, b.state.take} {
		if err := load(ctx, kindLogin, state, &lg); err != nil {
			if !errors.Is(err, ErrStateNotFound) {
				b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
				return
			}
			b.errorPage(w, http.StatusBadRequest, msgFailed)
			return
		}
		if !bound(lg) {
			b.log.WarnContext(ctx, "federated callback refused: not the browser or region the login was sent from", "region", reg)
			b.errorPage(w, http.StatusBadRequest, msgFailed)
			return
		}
	}
	ar, err := b.storage.authRequest(ctx, lg.ARID)
	if err != nil || ar.IsDone {
		b.errorPage(w, http.StatusBadRequest, msgExpired)
		return
	}
	id, err := rp.Complete(ctx, q, federation.Flow{State: lg.State, Nonce: lg.Nonce, Verifier: lg.Verifier, ClientID: lg.ClientID}, rp.RedirectURI(""))
	var ae *federation.AuthError
	switch {
	case errors.As(err, &ae):
		b.count(ctx, "error_relayed", reg)
		b.redirect(w, r, ar, url.Values{"error": {relayedError(ae.Code)},
			"error_description": {"the home region answered " + relayedError(ae.Code)}})
		return
	case errors.Is(err, federation.ErrUnavailable):
		b.log.WarnContext(ctx, "resident region failed during login", "home", reg, "err", err)
		b.count(ctx, "region_unavailable", reg)
		b.errorPage(w, http.StatusServiceUnavailable, federation.UnavailableMessage)
		return
	case err != nil:
		b.log.WarnContext(ctx, "resident region answer rejected", "home", reg, "err", err)
		b.count(ctx, "rejected", reg)
		b.errorPage(w, http.StatusBadRequest, msgFailed)
		return
	}
	// A region may assert only its own users: the table must name the
	// asserting region (whose issuer signed the ID token, checked by
	// Complete against this callback's region) for the asserted username.
	// A region that signs in a user of another region, or one the table
	// does not know, is refused.
	if owner, err := b.table.Resolve(ctx, id.Claims["preferred_username"]); err != nil || owner != reg {
		if err != nil && !errors.Is(err, lookup.ErrNotFound) && !errors.Is(err, lookup.ErrInvalidUsername) {
			b.log.ErrorContext(ctx, "lookup table unavailable", "err", err)
			b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
			return
		}
		b.log.WarnContext(ctx, "resident region answer rejected: the lookup table does not place the asserted user there", "home", reg)
		b.count(ctx, "foreign_assertion", reg)
		b.errorPage(w, http.StatusBadRequest, msgFailed)
		return
	}
	ar.Subject, ar.AuthTime, ar.AMR, ar.Claims, ar.HomeRegion, ar.IsDone = id.Subject, id.AuthTime, id.AMR, id.Claims, reg, true
	if err := b.storage.saveAuthRequest(ctx, ar); err != nil {
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	cb, err := op.BuildAuthResponseCallbackURL(ctx, ar, b.op)
	if err != nil {
		b.errorPage(w, http.StatusServiceUnavailable, msgUnavailable)
		return
	}
	b.count(ctx, "completed", reg)
	http.Redirect(w, r, b.addIss(cb), http.StatusFound)
}

// relayedError maps a resident region's authorization error to what the
// entry region is told.
func relayedError(code string) string {
	switch code {
	case "login_required", "consent_required", "interaction_required", "account_selection_required",
		"access_denied", "temporarily_unavailable", "server_error":
		return code
	}
	return "access_denied"
}

// redirect sends an authorization response (an error) to the entry
// region's registered, validated redirect URI.
func (b *Broker) redirect(w http.ResponseWriter, r *http.Request, ar *authReq, params url.Values) {
	u, err := url.Parse(ar.RedirectURI)
	if err != nil {
		b.errorPage(w, http.StatusBadRequest, msgFailed)
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if ar.State != "" {
		q.Set("state", ar.State)
	}
	q.Set("iss", b.cfg.Issuer)
	u.RawQuery = q.Encode()
	http.Redirect(w, r, u.String(), http.StatusFound)
}

// addIss adds RFC 9207's iss to an authorization response URL.
func (b *Broker) addIss(loc string) string {
	u, err := url.Parse(loc)
	if err != nil || !u.IsAbs() {
		return loc
	}
	q := u.Query()
	if (!q.Has("code") && !q.Has("error")) || q.Has("iss") {
		return loc
	}
	q.Set("iss", b.cfg.Issuer)
	u.RawQuery = q.Encode()
	return u.String()
}

// withIss adds iss to the authorization responses op sends itself (errors
// answered at /authorize).
func (b *Broker) withIss(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&issWriter{ResponseWriter: w, b: b}, r)
	})
}

type issWriter struct {
	http.ResponseWriter
	b    *Broker
	done bool
}

func (w *issWriter) WriteHeader(status int) {
	if !w.done && status >= 300 && status < 400 {
		if loc := w.Header().Get("Location"); loc != "" {
			w.Header().Set("Location", w.b.addIss(loc))
		}
	}
	w.done = true
	w.ResponseWriter.WriteHeader(status)
}

func (w *issWriter) Write(p []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// browser turns op's plain-text error answers at /authorize into the HTML
// error page.
func (b *Broker) browser(next http.Handler) http.Handler {
	return loginpage.HTMLErrors(next, func(w http.ResponseWriter, status int, msg string) {
		b.errorPage(w, status, "The region sent an invalid sign-in request: "+msg)
	})
}

// --- internal API ---

// changes is POST ChangesPath: a region's outbox, as keyed hashes,
// authenticated with a client assertion signed by the region's own key.
// The authenticated region is the only region the changes may name: a put
// writes an entry pointing to it, a delete removes only its own entries.
func (b *Broker) changes(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	reg, ok := b.authenticateRegion(r, federation.ChangesPath)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-hub"`)
		writeJSON(w, http.StatusUnauthorized, apiError("invalid_client", "region client credentials required"))
		return
	}
	var req federation.ChangesRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", "body must be a JSON changes object of at most 1 MiB"))
		return
	}
	if len(req.Changes) > federation.MaxChanges {
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", fmt.Sprintf("at most %d changes per request", federation.MaxChanges)))
		return
	}
	res, err := b.applyChanges(r.Context(), reg, req.Changes)
	switch {
	case errors.Is(err, federation.ErrBadChange):
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", err.Error()))
		return
	case err != nil:
		b.log.ErrorContext(r.Context(), "applying region changes failed", "region", reg, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError("temporarily_unavailable", "lookup table unavailable"))
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// resolve is POST ResolvePath: does any region hold one of these lookup
// keys? Only regions ask (their client assertion for this path), about a
// name not resident there whose decoy region they are; the answer is a
// boolean, never the region.
func (b *Broker) resolve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if _, ok := b.authenticateRegion(r, federation.ResolvePath); !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-hub"`)
		writeJSON(w, http.StatusUnauthorized, apiError("invalid_client", "region client credentials required"))
		return
	}
	var req federation.ResolveRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(req.Keys) == 0 || len(req.Keys) > 2 {
		writeJSON(w, http.StatusBadRequest, apiError("invalid_request", "body must be {\"keys\": [one or two lookup keys]}"))
		return
	}
	keys := make([]lookup.Key, len(req.Keys))
	for i, s := range req.Keys {
		k, err := federation.ParseKey(s)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError("invalid_request", err.Error()))
			return
		}
		keys[i] = k
	}
	regions, err := b.cfg.Lookup.GetMany(r.Context(), keys)
	b.countLookup(r.Context(), err)
	if err != nil {
		b.log.ErrorContext(r.Context(), "lookup table unavailable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError("temporarily_unavailable", "lookup table unavailable"))
		return
	}
	writeJSON(w, http.StatusOK, federation.ResolveResult{Known: slices.ContainsFunc(regions, func(s string) bool { return s != "" })})
}

func apiError(code, desc string) map[string]string {
	return map[string]string{"error": code, "error_description": desc}
}

// authenticateRegion checks the bearer client assertion of an internal
// call: signed by the key of the region whose client it names, for the
// hub's path (ChangesPath, ResolvePath). It returns that region.
func (b *Broker) authenticateRegion(r *http.Request, path string) (string, bool) {
	a, ok := federation.AssertionFromRequest(r.Header.Get("Authorization"))
	if !ok {
		return "", false
	}
	id, err := federation.AssertionIssuer(a)
	if err != nil {
		return "", false
	}
	c, ok := b.storage.clients[id]
	if !ok {
		return "", false
	}
	if !c.verify(a, strings.TrimSuffix(b.cfg.Issuer, "/")+path, time.Now()) {
		return "", false
	}
	return c.region, true
}
