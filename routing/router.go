package routing

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/meridian-id/meridian/internal/serve"
)

// Peer is another region as the router reaches it. Only these
// addresses are ever dialled: an artifact names a region id, never a host.
//
// Each address is a node of its own: a call that cannot be connected to
// one primary address (or whose breaker is open) goes to the next primary
// address, and to the DR site's addresses only when none of the primary
// ones answered.
type Peer struct {
	Region string
	URL    string // public base URL of the region host, for browser redirects
	Addr   string // host:port of the region's (first) node
	DRAddr string // host:port of its DR site's (first) node; empty if none
	// Addrs and DRAddrs, when set, are every node of the primary and the
	// DR site (config.DialAddrs), in the order they are tried; they
	// replace Addr and DRAddr.
	Addrs   []string
	DRAddrs []string
	TLS     bool // dial with TLS
}

// primaries returns every primary address of u.
func (u Peer) primaries() []string {
	if len(u.Addrs) > 0 {
		return u.Addrs
	}
	return []string{u.Addr}
}

// drs returns every DR address of u (none without a DR site).
func (u Peer) drs() []string {
	if len(u.DRAddrs) > 0 {
		return u.DRAddrs
	}
	if u.DRAddr != "" {
		return []string{u.DRAddr}
	}
	return nil
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Local          string
	Peers          []Peer
	ConnectTimeout time.Duration // dialing an upstream
	RequestTimeout time.Duration // the whole proxied call
	// BreakerThreshold consecutive failures open an upstream's breaker for
	// BreakerCooldown. Defaults: 5 and 10s.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// WrapTransport wraps the upstream transport (tracing, tests).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// TLSConfig for upstreams with TLS (mTLS client certificates, CAs).
	TLSConfig *tls.Config
	// HopKey is this region's federation private key (ES256): it signs the
	// hop header of every call the router sends. Required.
	HopKey *ecdsa.PrivateKey
	// HopKeys are the other regions' federation public keys, by region id:
	// a hop header is accepted only with a valid signature by the region
	// it names.
	HopKeys map[string]*ecdsa.PublicKey
	// AlsoHopKeys are further public keys a region's hops verify under
	// while it rotates its federation key (setup.AlsoHopKeys).
	AlsoHopKeys map[string][]*ecdsa.PublicKey
	// HopPoll (federation.hop_poll) is how long a proxied call may poll
	// its connection for the answer before its goroutine sleeps, when it
	// is the only call in flight and its address answered within that
	// time lately (see connTransport.pollAnswer); 0 never polls.
	HopPoll time.Duration
	// IdleFor is how long an idle connection to an upstream is reused
	// (default 60s); nodes set it below the drain period
	// (federation.IdleFor), so a node's shutdown never closes a
	// connection a router is about to send a call on.
	IdleFor time.Duration
}

// Action is what the router does with a call.
type Action uint8

// The routing decisions.
const (
	Local    Action = iota // serve here
	Proxy                  // reverse-proxy to the issuing region
	Redirect               // send the browser to the resident region
)

func (a Action) String() string {
	switch a {
	case Proxy:
		return "proxied"
	case Redirect:
		return "redirected"
	}
	return "local"
}

// Decision is the router's verdict on one call.
type Decision struct {
	Action Action
	Region string // the region that owns the call's artifact
	Safe   bool   // the call may be repeated at a DR site after it was sent
}

// Router sends token, introspection, userinfo, revocation and dereference
// calls to the region that issued their artifact and redirects
// authorization requests to the client's resident region. Everything else,
// and every artifact that fails verification, is served locally, where it
// gets the protocol's error without any outbound connection.
type Router struct {
	cfg       RouterConfig
	codec     *Codec
	local     http.Handler
	ups       map[string]*upstream
	hop       hopSigner
	verified  hopCache          // hop headers verified in the current second (value+method+path → from)
	transport http.RoundTripper // to upstreams; failover and breakers are around it
	log       *slog.Logger
	decisions metric.Int64Counter
	decAttrs  sync.Map            // decisionKey -> metric.AddOption (count)
	callAttrs sync.Map            // callKey -> metric.AddOption (countCall)
	calls     metric.Int64Counter // upstream attempts by region, site, result
	now       func() time.Time
}

type upstream struct {
	Peer
	scheme   string
	breakers map[string]*breaker // by address
	attempts []attempt           // every address, primary ones first
	hops     hopCache
}

// attempt is one address of an upstream and the site it belongs to.
type attempt struct {
	addr string
	dr   bool
}

// hopCache keeps the hop header values signed in the current second for
// one upstream, by method and path: a value covers exactly (from, to,
// method, path, second), so every call with those in that second may share
// it, and the router signs once per second and target instead of once per
// call.
type hopCache struct {
	mu sync.Mutex
	ts int64
	m  map[hopKey]string
}

// hopKey names a cached hop value: the value (for verified ones; empty for
// signed ones), the method and the path. A struct key costs no allocation
// per lookup.
type hopKey struct{ v, method, path string }

// verifyHop checks an arriving hop header for a call (method, path) and
// returns the region that sent it. A value verified in the current second
// is remembered for the rest of that second (senders share one value per
// target and second), so the router verifies once per second and target.
func (rt *Router) verifyHop(v, method, path string) (string, bool) {
	now := rt.now()
	ts, key := now.Unix(), hopKey{v, method, path}
	c := &rt.verified
	c.mu.Lock()
	if c.ts == ts {
		if from, ok := c.m[key]; ok {
			c.mu.Unlock()
			return from, true
		}
	}
	c.mu.Unlock()
	from, ok := rt.hop.verify(v, rt.cfg.Local, method, path, now)
	if !ok {
		return "", false
	}
	c.mu.Lock()
	if c.ts != ts {
		c.ts, c.m = ts, make(map[hopKey]string, 8)
	}
	if len(c.m) < maxCachedHops {
		c.m[key] = from
	}
	c.mu.Unlock()
	return from, true
}

// maxCachedHops bounds the values kept per upstream and second.
const maxCachedHops = 64

// hopValue returns the signed hop header of one call (method, path) to up.
func (rt *Router) hopValue(up *upstream, method, path string) string {
	now := rt.now()
	ts, key := now.Unix(), hopKey{"", method, path}
	c := &up.hops
	c.mu.Lock()
	if c.ts == ts {
		if v, ok := c.m[key]; ok {
			c.mu.Unlock()
			return v
		}
	}
	c.mu.Unlock()
	v := rt.hop.sign(rt.cfg.Local, up.Region, method, path, now)
	c.mu.Lock()
	if c.ts != ts {
		c.ts, c.m = ts, make(map[hopKey]string, 8)
	}
	if len(c.m) < maxCachedHops {
		c.m[key] = v
	}
	c.mu.Unlock()
	return v
}

type callInfo struct {
	up   *upstream
	safe bool
	body []byte
	// deadline, when set, bounds the whole call (every attempt and the
	// answer's body) instead of a deadline on the request's context: the
	// attempt's own context then carries it, one context per attempt
	// rather than one per call and another per attempt.
	deadline time.Time
	// parent, when set, is the call's context; the outbound request then
	// has none of its own, and each attempt's copy carries its own context
	// derived from parent (one request copy per attempt, not two).
	parent context.Context
}

// maxForm bounds the form body the router buffers to read an artifact.
const maxForm = 1 << 20

// NewRouter returns a router in front of the local provider.
func NewRouter(cfg RouterConfig, codec *Codec, local http.Handler, log *slog.Logger, meter metric.Meter) (*Router, error) {
	if !codec.HasRegion(cfg.Local) {
		return nil, fmt.Errorf("routing: local region %q is not configured", cfg.Local)
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 2 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.BreakerThreshold <= 0 {
		cfg.BreakerThreshold = 5
	}
	if cfg.BreakerCooldown <= 0 {
		cfg.BreakerCooldown = 10 * time.Second
	}
	if cfg.HopKey == nil {
		return nil, errors.New("routing: a hop key (the region's federation key) is required")
	}
	rt := &Router{cfg: cfg, codec: codec, local: local, ups: map[string]*upstream{}, hop: hopSigner{key: cfg.HopKey, peer: cfg.HopKeys, also: cfg.AlsoHopKeys}, log: log, now: time.Now}
	for _, u := range cfg.Peers {
		if !codec.HasRegion(u.Region) || u.Region == cfg.Local {
			return nil, fmt.Errorf("routing: upstream %q is not another configured region", u.Region)
		}
		if len(u.Addrs) > 0 {
			u.Addr = u.Addrs[0]
		}
		if len(u.DRAddrs) > 0 {
			u.DRAddr = u.DRAddrs[0]
		}
		up := &upstream{Peer: u, scheme: "http", breakers: map[string]*breaker{}}
		for _, dr := range []bool{false, true} {
			addrs := u.primaries()
			if dr {
				addrs = u.drs()
			}
			for _, a := range addrs {
				if _, _, err := net.SplitHostPort(a); err != nil {
					return nil, fmt.Errorf("routing: upstream %s address %q: %w", u.Region, a, err)
				}
				if up.breakers[a] == nil {
					up.breakers[a] = newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown)
					up.attempts = append(up.attempts, attempt{addr: a, dr: dr})
				}
			}
		}
		if u.TLS {
			up.scheme = "https"
		}
		rt.ups[u.Region] = up
	}
	// Persistent connections to every upstream, each call on the
	// goroutine that serves it (see connTransport).
	ct := newConnTransport(cfg.ConnectTimeout, cfg.TLSConfig)
	ct.poll = cfg.HopPoll
	if cfg.IdleFor > 0 {
		ct.idleFor = cfg.IdleFor
	}
	var base http.RoundTripper = ct
	if cfg.WrapTransport != nil {
		base = cfg.WrapTransport(base)
	}
	rt.transport = base
	if meter != nil {
		c, err := meter.Int64Counter("meridian.routing.decisions", metric.WithDescription("routing decisions by action and owning region"))
		if err != nil {
			return nil, err
		}
		rt.decisions = c
		if err := rt.registerPeerMetrics(meter); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Meridian-Entry", rt.cfg.Local)
	if pre, ok := r.Context().Value(predecidedKey{}).(*predecided); ok && pre.rt == rt {
		// Front read the body and decided already (a call served here).
		rt.count(r.Context(), pre.d.Action, pre.d.Region, "")
		rt.act(w, r, pre.d, pre.body)
		return
	}
	r.Header.Del(HopFromHeader)
	if v := r.Header.Get(HopHeader); v != "" {
		if from, ok := rt.verifyHop(v, r.Method, r.URL.Path); ok {
			rt.serveHopped(w, r, from)
			return
		}
		r.Header.Del(HopHeader)
	}
	d, body, ok := rt.decideBody(w, r)
	if !ok {
		return
	}
	rt.count(r.Context(), d.Action, d.Region, "")
	rt.act(w, r, d, body)
}

// decideBody reads a routed form body (answering 400 itself when it is too
// large or unreadable: ok false) and decides the call.
func (rt *Router) decideBody(w http.ResponseWriter, r *http.Request) (d Decision, body []byte, ok bool) {
	if r.Method == http.MethodPost && isForm(r) && routedPath(r.URL.Path) {
		b, err := readBody(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, "invalid_request", "request body too large or unreadable")
			return Decision{}, nil, false
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
		return rt.Decide(r, formOf(r.URL.RawQuery, b)), b, true
	}
	var form url.Values
	if r.URL.RawQuery != "" {
		form = r.URL.Query()
	}
	return rt.Decide(r, form), nil, true // Decide only reads form: nil reads as empty
}

// act carries out a decision.
func (rt *Router) act(w http.ResponseWriter, r *http.Request, d Decision, body []byte) {
	switch d.Action {
	case Redirect:
		up := rt.ups[d.Region]
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, strings.TrimSuffix(up.URL, "/")+r.URL.RequestURI(), http.StatusFound)
	case Proxy:
		rt.forward(w, r, &callInfo{up: rt.ups[d.Region], safe: d.Safe, body: body})
	default:
		rt.local.ServeHTTP(w, r)
	}
}

// predecided carries Front's decision for a call it hands to the
// instrumented chain, so the router inside it neither reads the body nor
// decides again.
type predecided struct {
	rt   *Router
	d    Decision
	body []byte
}

type predecidedKey struct{}

// Front returns a handler to mount in front of next, the instrumented
// handler chain that contains rt (HTTP server spans and metrics, role
// gate). A routed form call (POST to a routed path, no hop header) for
// which lean(r) holds is decided here: when it goes to another region it
// is proxied at once, without next's per-request middleware; otherwise it
// continues through next with the decision attached, so the router in next
// does not read or decide it again. A routed form call that another
// region's router sent here (a hop header that verifies) for which lean(r)
// holds and that carries no W3C trace context is served by the local
// handler at once, the same way. Everything else goes through next
// unchanged. lean must be false whenever next would do more than observe
// the call (a role that refuses it) or record a span for it: the call is
// then not part of next's HTTP server metrics (the router counts it in
// meridian.routing.decisions, proxied ones also in
// meridian.routing.upstream.calls). The incoming W3C trace context of a
// proxied call is forwarded as it arrived; a hopped call that carries one
// goes through next, so its log records keep the trace id.
func (rt *Router) Front(next http.Handler, lean func(*http.Request) bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || !routedPath(r.URL.Path) || !isForm(r) || !lean(r) {
			next.ServeHTTP(w, r)
			return
		}
		if _, ok := r.Header[HopHeader]; ok {
			if from, ok := rt.leanHop(r); ok {
				// Another region's router sent this call here: served
				// at once, as the router in next would serve it.
				w.Header().Set("X-Meridian-Entry", rt.cfg.Local)
				rt.serveHopped(w, r, from)
				return
			}
			next.ServeHTTP(w, r) // traced, or stripped and decided by the router in next
			return
		}
		r.Header.Del(HopFromHeader)
		d, body, ok := rt.decideBody(w, r)
		if !ok {
			return
		}
		if d.Action == Proxy {
			w.Header().Set("X-Meridian-Entry", rt.cfg.Local)
			rt.count(r.Context(), d.Action, d.Region, "")
			rt.act(w, r, d, body)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), predecidedKey{}, &predecided{rt: rt, d: d, body: body})))
	})
}

// leanHop reports the region whose router sent r, when r may be served
// without the HTTP server middleware (Front, Calls): it carries exactly one
// hop header, which verifies for its method and path, and no trace
// context (a traced call keeps the middleware, so its log records keep
// the trace id).
func (rt *Router) leanHop(r *http.Request) (string, bool) {
	hop := r.Header[HopHeader]
	if _, traced := r.Header["Traceparent"]; traced || len(hop) != 1 {
		return "", false
	}
	return rt.verifyHop(hop[0], r.Method, r.URL.Path)
}

// serveHopped serves a call whose hop header verified (from: the region
// that sent it) with the local handler, which sees Meridian-Hop-From.
func (rt *Router) serveHopped(w http.ResponseWriter, r *http.Request, from string) {
	r.Header[HopFromHeader] = []string{from}
	rt.count(r.Context(), Local, rt.cfg.Local, "hop")
	rt.local.ServeHTTP(w, r)
}

func (rt *Router) count(ctx context.Context, a Action, region, reason string) {
	// The HTTP server metrics of this request (when served behind otelhttp)
	// carry the decision and the owning region: both from closed sets (a
	// region is named only after its tag verified against the configured
	// ones).
	if l, ok := otelhttp.LabelerFromContext(ctx); ok {
		l.Add(attribute.String("meridian.region", region), attribute.String("meridian.routing", a.String()))
	}
	if rt.decisions == nil {
		return
	}
	// The attribute set of each (decision, region, reason) is built once:
	// building it (sorting, de-duplicating) cost more than the count.
	k := decisionKey{a, region, reason}
	opt, ok := rt.decAttrs.Load(k)
	if !ok {
		attrs := []attribute.KeyValue{attribute.String("decision", a.String()), attribute.String("region", region)}
		if reason != "" {
			attrs = append(attrs, attribute.String("reason", reason))
		}
		opt, _ = rt.decAttrs.LoadOrStore(k, metric.WithAttributeSet(attribute.NewSet(attrs...)))
	}
	rt.decisions.Add(ctx, 1, opt.(metric.AddOption))
}

// decisionKey names one attribute set of the decisions counter; regions
// and reasons come from closed sets (configured regions, fixed reasons), so
// the cache is bounded.
type decisionKey struct {
	a              Action
	region, reason string
}

func isForm(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
}

func routedPath(p string) bool {
	switch p {
	case "/oauth/token", "/oauth/introspect", "/revoke", "/userinfo", "/dereference", "/authorize", "/end_session",
		"/login", "/login/password", "/login/totp", "/consent",
		"/login/passkey", "/login/passkey/verify", "/login/mfa/passkey":
		return true
	}
	return false
}

// Decide is the routing decision: a pure function of the request line,
// headers and form. It verifies the artifact's tag (MAC and configured
// region) before it ever names another region.
func (rt *Router) Decide(r *http.Request, form url.Values) Decision {
	var artifact string
	safe := false
	switch r.URL.Path {
	case "/authorize":
		// Proxied, not redirected: the browser stays on the host whose
		// discovery document the client read, so the authorization
		// response and the ID token name that host's issuer (RFC 9207).
		return rt.redirectBy(form.Get("client_id"))
	case "/end_session":
		// Proxied, not redirected: the session lives in the client's region,
		// and the ID token hint names the issuer of the host the browser is on.
		region, ok := rt.owner(form.Get("client_id"))
		if !ok {
			region, ok = rt.owner(form.Get("id_token_hint"))
		}
		return rt.proxyTo(region, ok, false)
	case "/oauth/token":
		switch form.Get("grant_type") {
		case "authorization_code":
			artifact = form.Get("code")
		case "refresh_token":
			artifact = form.Get("refresh_token")
		case "client_credentials":
			artifact = clientID(r, form)
		}
	case "/oauth/introspect", "/dereference":
		artifact, safe = form.Get("token"), true
	case "/revoke":
		artifact = form.Get("token")
	case "/userinfo":
		artifact, safe = bearer(r, form), true
	case "/login", "/login/password", "/login/totp", "/consent", "/authorize/callback",
		"/login/passkey", "/login/passkey/verify", "/login/mfa/passkey":
		// A login started on the global host stays with its region even if
		// DNS answers another region mid-login.
		artifact = form.Get("id")
	case "/login/federated/callback":
		artifact = form.Get("state")
	default:
		if rest, ok := strings.CutPrefix(r.URL.Path, SCIMPrefix); ok {
			return rt.scim(r, rest)
		}
		return rt.decideManagement(r, form)
	}
	region, ok := rt.owner(artifact)
	return rt.proxyTo(region, ok, safe)
}

// SCIMPrefix is where the SCIM 2.0 endpoint (region/scim) is served.
const SCIMPrefix = "/scim/v2/"

// scim decides a SCIM call (rest is the path after SCIMPrefix): a call
// naming a resource (Users/<id>, Groups/<id>) goes to the region whose tag
// the id carries, every other one (collections, creation, .search,
// discovery) to the region that issued the bearer token, the only one that can
// authenticate it. Reads may be repeated at a DR site.
func (rt *Router) scim(r *http.Request, rest string) Decision {
	safe := r.Method == http.MethodGet || r.Method == http.MethodHead
	typ, id, _ := strings.Cut(rest, "/")
	artifact := ""
	switch {
	case id == ".search":
		artifact, safe = bearer(r, nil), true // a query in a body
	case id != "" && typ == "Users":
		if _, err := rt.codec.VerifyKind(id, KindUser); err == nil {
			artifact = id
		}
	case id != "" && typ == "Groups":
		if _, err := rt.codec.VerifyKind(id, KindGroup); err == nil {
			artifact = id
		}
	default:
		artifact = bearer(r, nil)
	}
	region, ok := rt.owner(artifact)
	return rt.proxyTo(region, ok, safe)
}

// decideManagement routes the client management endpoints: the RFC 7592
// client configuration endpoint (/register/{client_id}) and the admin API
// on one client (/admin/clients/{client_id}[/secret]) go to the client's
// region; the admin API's collection (/admin/clients) goes to the region
// that issued the caller's access token, the only one that accepts it.
// Reads are safe to repeat at a DR site.
func (rt *Router) decideManagement(r *http.Request, form url.Values) Decision {
	safe := r.Method == http.MethodGet
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/register/"):
		region, ok := rt.owner(strings.TrimPrefix(p, "/register/"))
		return rt.proxyTo(region, ok, safe)
	case p == "/admin/clients":
		region, ok := rt.owner(bearer(r, nil))
		return rt.proxyTo(region, ok, safe)
	case strings.HasPrefix(p, "/admin/clients/"):
		id, _, _ := strings.Cut(strings.TrimPrefix(p, "/admin/clients/"), "/")
		region, ok := rt.owner(id)
		return rt.proxyTo(region, ok, safe)
	}
	return Decision{Action: Local, Region: rt.cfg.Local}
}

// proxyTo decides for an artifact owned by region (ok: its owner is known).
func (rt *Router) proxyTo(region string, ok, safe bool) Decision {
	if !ok || region == rt.cfg.Local {
		return Decision{Action: Local, Region: rt.cfg.Local}
	}
	return Decision{Action: Proxy, Region: region, Safe: safe}
}

func (rt *Router) redirectBy(clientID string) Decision {
	t, err := rt.codec.VerifyKind(clientID, KindClient)
	if err != nil || t.Region == rt.cfg.Local || rt.ups[t.Region] == nil {
		return Decision{Action: Local, Region: rt.cfg.Local}
	}
	return Decision{Action: Proxy, Region: t.Region}
}

// owner returns the region that issued an artifact: from its verified tag,
// or for a JWT access token from its key id ("<region>-…"; the owning
// region verifies the signature).
func (rt *Router) owner(artifact string) (string, bool) {
	if artifact == "" {
		return "", false
	}
	if strings.HasPrefix(artifact, "eyJ") {
		region, ok := jwtRegion(artifact)
		if !ok || rt.ups[region] == nil {
			return "", false
		}
		return region, true
	}
	t, err := rt.codec.Verify(artifact)
	if err != nil {
		return "", false
	}
	if t.Region != rt.cfg.Local && rt.ups[t.Region] == nil {
		return "", false
	}
	return t.Region, true
}

// jwtRegion reads the region from a compact JWS's key id.
func jwtRegion(jwt string) (string, bool) {
	dot := strings.IndexByte(jwt, '.')
	if dot <= 0 || dot > 512 {
		return "", false
	}
	raw, err := base64.RawURLEncoding.DecodeString(jwt[:dot])
	if err != nil {
		return "", false
	}
	var h struct {
		Kid string `json:"kid"`
	}
	if json.Unmarshal(raw, &h) != nil {
		return "", false
	}
	return KeyRegion(h.Kid)
}

func clientID(r *http.Request, form url.Values) string {
	if id, _, ok := r.BasicAuth(); ok {
		if u, err := url.QueryUnescape(id); err == nil {
			return u
		}
		return id
	}
	return form.Get("client_id")
}

func bearer(r *http.Request, form url.Values) string {
	if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
		return strings.TrimSpace(h[7:])
	}
	return form.Get("access_token")
}

// hopByHop are the headers of one connection (RFC 9110 §7.6.1), never
// forwarded; forwarding are the client-supplied forwarding headers, replaced
// by the router's own.
var (
	hopByHop   = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}
	forwarding = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"}
)

// copyBufs are the buffers upstream answers are copied through.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// forward proxies a call to its region (then its DR site, see roundTrip)
// and copies the answer back. The outbound request goes to the region's
// configured address with the original Host (so the upstream answers with
// the same issuer), the end-to-end headers of the call minus any
// client-supplied forwarding headers, the router's own X-Forwarded-* and a
// signed hop header.
func (rt *Router) forward(w http.ResponseWriter, r *http.Request, ci *callInfo) {
	ctx := r.Context()
	// The call's own header map becomes the outbound one: nothing reads it
	// after the call is forwarded, and copying it was a map per call.
	h := r.Header
	if h == nil {
		h = http.Header{}
	}
	removeConnectionHeaders(h)
	for _, k := range forwarding {
		delete(h, k)
	}
	delete(h, "Expect") // the body is sent at once
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		h["X-Forwarded-For"] = []string{ip}
	}
	h["X-Forwarded-Host"] = []string{r.Host}
	if r.TLS != nil {
		h["X-Forwarded-Proto"] = []string{"https"}
	} else {
		h["X-Forwarded-Proto"] = []string{"http"}
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // not Go's default
	}
	h[HopHeader] = []string{rt.hopValue(ci.up, r.Method, r.URL.Path)}
	out := (&http.Request{
		Method:     r.Method,
		URL:        &url.URL{Scheme: ci.up.scheme, Host: ci.up.Addr, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery},
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Host:       r.Host,
	})
	switch {
	case ci.body != nil:
		b := ci.body
		out.Body = io.NopCloser(bytes.NewReader(b))
		out.ContentLength = int64(len(b))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	case r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody:
		out.Body, out.ContentLength = r.Body, r.ContentLength
	}
	ci.deadline, ci.parent = time.Now().Add(rt.cfg.RequestTimeout), ctx
	resp, err := rt.roundTrip(out, ci)
	if err != nil {
		rt.proxyError(w, r, ci.up.Region, err)
		return
	}
	defer resp.Body.Close()
	if cw, ok := w.(*callWriter); ok && resp.ContentLength >= 0 {
		// Off the connection (Calls): the answer's head is written as
		// it came, after the writer's own header, without copying it
		// into the writer's header first.
		removeConnectionHeaders(resp.Header)
		cw.writeAnswer(resp.StatusCode, resp.Header, resp.ContentLength)
		rt.copyBody(w, r, ci, resp)
		return
	}
	dst := w.Header()
	for k, v := range resp.Header {
		if have, ok := dst[k]; ok {
			v = append(have[:len(have):len(have)], v...)
		}
		dst[k] = v
	}
	removeConnectionHeaders(dst)
	w.WriteHeader(resp.StatusCode)
	rt.copyBody(w, r, ci, resp)
}

// copyBody copies an upstream answer's body to the client once its head
// was written.
func (rt *Router) copyBody(w http.ResponseWriter, r *http.Request, ci *callInfo, resp *http.Response) {
	buf := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(writerOnly{w}, resp.Body, *buf)
	copyBufs.Put(buf)
	if err != nil && !callerGone(r.Context()) {
		// Headers are sent: the client sees a truncated answer.
		rt.log.WarnContext(r.Context(), "routed call cut off", "region", ci.up.Region, "path", r.URL.Path, "err", err)
	}
}

// writerOnly hides ReadFrom, so io.CopyBuffer uses the pooled buffer.
type writerOnly struct{ io.Writer }

// removeConnectionHeaders deletes the hop-by-hop headers and any header the
// Connection header names.
func removeConnectionHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				h.Del(f)
			}
		}
	}
	for _, k := range hopByHop {
		delete(h, k)
	}
}

// readBody reads a form body of at most maxForm bytes.
func readBody(r *http.Request) ([]byte, error) {
	defer r.Body.Close()
	if n := r.ContentLength; n >= 0 {
		if n > maxForm {
			return nil, errBodyTooLarge
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, err
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxForm+1))
	if err == nil && len(b) > maxForm {
		err = errBodyTooLarge
	}
	return b, err
}

var errBodyTooLarge = errors.New("routing: form body too large")

// Regions returns the ids of the other regions the router reaches.
func (rt *Router) Regions() []string {
	out := make([]string, 0, len(rt.cfg.Peers))
	for _, u := range rt.cfg.Peers {
		out = append(out, u.Region)
	}
	return out
}

// Call sends an internal request (region to region) to region's path with a
// signed hop header, through the same failover and breakers as proxied
// calls. form is sent as a POST body when non-nil, else the call is a GET.
// Callers must only use it for calls that are safe to repeat.
func (rt *Router) Call(ctx context.Context, region, path string, form url.Values) (*http.Response, error) {
	up := rt.ups[region]
	if up == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownRegion, region)
	}
	ctx, cancel := context.WithTimeout(ctx, rt.cfg.RequestTimeout)
	var body []byte
	method := http.MethodGet
	var rd io.Reader
	if form != nil {
		method = http.MethodPost
		body = []byte(form.Encode())
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, up.scheme+"://"+up.Addr+path, rd)
	if err != nil {
		cancel()
		return nil, err
	}
	if u, err := url.Parse(up.URL); err == nil {
		req.Host = u.Host
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	req.Header.Set(HopHeader, rt.hopValue(up, method, req.URL.Path))
	resp, err := rt.roundTrip(req, &callInfo{up: up, safe: true, body: body})
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// ErrRegionUnavailable is returned when neither a region nor its DR site
// can answer.
var ErrRegionUnavailable = errors.New("routing: region unavailable")

func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, region string, err error) {
	if callerGone(r.Context()) {
		// The client went away: nobody to answer, nothing wrong upstream.
		rt.log.DebugContext(r.Context(), "routed call abandoned by the client", "region", region, "path", r.URL.Path)
		return
	}
	rt.log.WarnContext(r.Context(), "routed call failed", "region", region, "path", r.URL.Path, "err", err)
	w.Header().Set("Retry-After", "5")
	w.Header().Set("Cache-Control", "no-store")
	if r.URL.Path == "/userinfo" {
		w.Header().Set("WWW-Authenticate", `Bearer error="temporarily_unavailable"`)
	}
	writeError(w, http.StatusServiceUnavailable, "temporarily_unavailable",
		fmt.Sprintf("region %s cannot be reached; retry later", region))
}

func writeError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

// roundTrip sends a proxied call to the region's addresses in turn, then
// to its DR site's, while the region cannot be reached and repeating is
// safe: always when the connection was never made (a refused dial, a
// failed TLS handshake, an open breaker), after sending only for
// idempotent calls. A code redemption is never sent twice; a blind retry
// would look like reuse. The region is failed over to its DR site only
// when none of its primary addresses answered.
//
// An open breaker skips its address, but not to the point of failing a
// call another address could still take: when every address tried has
// failed in a way that allows another attempt, the addresses skipped for
// an open breaker are tried last. During a rolling restart a node that
// was down long enough to open breakers is back before its peer goes
// down; without this, routers would fail the region's calls for the rest
// of the cooldown though one of its nodes serves. When every breaker is
// open the call still fails at once. An address that answered recently
// that it drains (serve.DrainingHeader) is tried after the others too, so
// calls have left a stopping node before it stops accepting.
func (rt *Router) roundTrip(req *http.Request, ci *callInfo) (*http.Response, error) {
	atts := ci.up.attempts
	lastErr := ErrRegionUnavailable
	var skipped []int
	order := make([]int, 0, len(atts))
	for _, drains := range []bool{false, true} {
		for i := range atts {
			if ci.up.breakers[atts[i].addr].draining(rt.now()) == drains {
				order = append(order, i)
			}
		}
	}
	tried := 0
	for n, i := range order {
		if !ci.up.breakers[atts[i].addr].allow(rt.now()) {
			lastErr = fmt.Errorf("%w: breaker open for %s", ErrRegionUnavailable, atts[i].addr)
			skipped = append(skipped, i)
			continue
		}
		tried++
		resp, again, err := rt.try(req, ci, i, len(order)-n, tried == 1)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if !again {
			return nil, lastErr
		}
	}
	if tried == 0 {
		return nil, lastErr
	}
	for n, i := range skipped {
		resp, again, err := rt.try(req, ci, i, len(skipped)-n, false)
		if err == nil {
			return resp, nil
		}
		lastErr = err
		if !again {
			break
		}
	}
	return nil, lastErr
}

// try sends the call to attempt i with left attempts (this one included)
// still to come (first: no attempt has read req's body yet), and reports
// whether another attempt may follow its failure.
func (rt *Router) try(req *http.Request, ci *callInfo, i, left int, first bool) (*http.Response, bool, error) {
	at := ci.up.attempts[i]
	b := ci.up.breakers[at.addr]
	out := req
	// A safe call with more addresses to try gives this attempt its
	// share of what is left, so a slow (not refusing) node still
	// leaves the others time to answer within the deadline (with one
	// primary address and a DR site: half each).
	parent := req.Context()
	if ci.parent != nil {
		parent = ci.parent // req carries no context of its own (see forward)
	}
	cancel := context.CancelFunc(func() {})
	ctx := parent
	switch {
	case !ci.deadline.IsZero():
		dl := ci.deadline
		if ci.safe && left > 1 {
			dl = time.Now().Add(time.Until(dl) / time.Duration(left))
		}
		ctx, cancel = context.WithDeadline(ctx, dl)
	case ci.safe && left > 1:
		if dl, ok := ctx.Deadline(); ok {
			ctx, cancel = context.WithTimeout(ctx, time.Until(dl)/time.Duration(left))
		}
	}
	if at.addr != req.URL.Host || !first {
		out = req.Clone(ctx)
		out.URL.Host = at.addr
		if !first && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				cancel()
				return nil, false, err
			}
			out.Body = body
		}
	} else if ctx != req.Context() {
		out = req.WithContext(ctx)
	}
	resp, err := rt.transport.RoundTrip(out)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(serve.RefusedHeader) != "" {
		// The node is shutting down and ran nothing of the call: as for a
		// refused dial, any call may go on to the next address.
		resp.Body.Close()
		cancel()
		b.drain(rt.now())
		err = fmt.Errorf("%w: %s is shutting down", ErrRegionUnavailable, at.addr)
		rt.countCall(parent, ci.up, at.dr, err)
		if left > 1 {
			rt.log.WarnContext(parent, "routed call refused by a node shutting down; trying the next address", "region", ci.up.Region,
				"addr", at.addr)
		}
		return nil, true, err
	}
	rt.countCall(parent, ci.up, at.dr, err)
	if err == nil {
		b.done(true, rt.now())
		if resp.Header.Get(serve.DrainingHeader) != "" {
			b.drain(rt.now())
			resp.Header.Del(serve.DrainingHeader) // about this upstream, not the caller's
		}
		resp.Body = cancelOnClose{resp.Body, cancel}
		return resp, false, nil
	}
	cancel()
	if left > 1 && !callerGone(parent) {
		// The next attempt's error replaces this one: log this
		// address's cause (a TLS failure, a refused dial) before it is lost.
		site := "primary"
		if at.dr {
			site = "dr"
		}
		rt.log.WarnContext(parent, "routed call to one address failed; trying the next", "region", ci.up.Region,
			"site", site, "addr", at.addr, "err", err)
	}
	if callerGone(parent) {
		// The downstream client (or internal caller) cancelled: that is
		// no fault of the upstream and must never count against it, or
		// anyone could open the breaker by abandoning requests.
		b.abandon()
		return nil, false, err
	}
	b.done(false, rt.now())
	if parent.Err() != nil || (!ci.deadline.IsZero() && !time.Now().Before(ci.deadline)) {
		return nil, false, err // the call's time is up
	}
	return nil, ci.safe || neverSent(err), err
}

// callerGone reports whether the call's context was cancelled by its caller
// rather than by the router's own deadline: the proxied request's context
// derives from the downstream connection's, which is cancelled when the
// client closes it early.
func callerGone(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

// neverSent reports whether err happened before any byte of the request
// could have reached the upstream (the dial failed).
func neverSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}
