package routing

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Upstream is another region as the router reaches it. Only these
// addresses are ever dialled: an artifact names a region id, never a host.
type Upstream struct {
	Region string
	URL    string // public base URL of the region host, for browser redirects
	Addr   string // host:port of the region's nodes
	DRAddr string // host:port of its DR site; empty if none
	TLS    bool   // dial with TLS
}

// RouterConfig configures a Router.
type RouterConfig struct {
	Local          string
	Upstreams      []Upstream
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
	proxy     *httputil.ReverseProxy
	log       *slog.Logger
	decisions metric.Int64Counter
	now       func() time.Time
}

type upstream struct {
	Upstream
	breakers map[string]*breaker // by address
}

type ctxKey struct{}

type callInfo struct {
	up   *upstream
	safe bool
	body []byte
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
	rt := &Router{cfg: cfg, codec: codec, local: local, ups: map[string]*upstream{}, hop: newHopSigner(codec), log: log, now: time.Now}
	for _, u := range cfg.Upstreams {
		if !codec.HasRegion(u.Region) || u.Region == cfg.Local {
			return nil, fmt.Errorf("routing: upstream %q is not another configured region", u.Region)
		}
		if _, _, err := net.SplitHostPort(u.Addr); err != nil {
			return nil, fmt.Errorf("routing: upstream %s address %q: %w", u.Region, u.Addr, err)
		}
		up := &upstream{Upstream: u, breakers: map[string]*breaker{u.Addr: newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown)}}
		if u.DRAddr != "" {
			up.breakers[u.DRAddr] = newBreaker(cfg.BreakerThreshold, cfg.BreakerCooldown)
		}
		rt.ups[u.Region] = up
	}
	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	var base http.RoundTripper = &http.Transport{
		DialContext:           dialer.DialContext,
		TLSClientConfig:       cfg.TLSConfig,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   cfg.ConnectTimeout,
		ResponseHeaderTimeout: cfg.RequestTimeout,
		ForceAttemptHTTP2:     true,
	}
	if cfg.WrapTransport != nil {
		base = cfg.WrapTransport(base)
	}
	rt.proxy = &httputil.ReverseProxy{
		Rewrite:      rt.rewrite,
		Transport:    &failover{rt: rt, base: base},
		ErrorHandler: rt.proxyError,
	}
	if meter != nil {
		c, err := meter.Int64Counter("meridian.routing.decisions", metric.WithDescription("routing decisions by action and owning region"))
		if err != nil {
			return nil, err
		}
		rt.decisions = c
	}
	return rt, nil
}

// ServeHTTP implements http.Handler.
func (rt *Router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Meridian-Entry", rt.cfg.Local)
	r.Header.Del(HopFromHeader)
	if v := r.Header.Get(HopHeader); v != "" {
		if from, ok := rt.hop.verify(v, rt.cfg.Local, rt.now()); ok {
			rt.count(r.Context(), Local, rt.cfg.Local, "hop")
			r.Header.Set(HopFromHeader, from)
			rt.local.ServeHTTP(w, r)
			return
		}
		r.Header.Del(HopHeader)
	}
	var body []byte
	form := r.URL.Query()
	if r.Method == http.MethodPost && isForm(r) && routedPath(r.URL.Path) {
		b, err := io.ReadAll(io.LimitReader(r.Body, maxForm+1))
		r.Body.Close()
		if err != nil || len(b) > maxForm {
			writeError(w, http.StatusBadRequest, "invalid_request", "request body too large or unreadable")
			return
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(b))
		if pf, err := url.ParseQuery(string(b)); err == nil {
			for k, v := range pf {
				form[k] = append(form[k], v...)
			}
		}
	}
	d := rt.Decide(r, form)
	rt.count(r.Context(), d.Action, d.Region, "")
	switch d.Action {
	case Redirect:
		up := rt.ups[d.Region]
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, strings.TrimSuffix(up.URL, "/")+r.URL.RequestURI(), http.StatusFound)
	case Proxy:
		ctx, cancel := context.WithTimeout(r.Context(), rt.cfg.RequestTimeout)
		defer cancel()
		ctx = context.WithValue(ctx, ctxKey{}, &callInfo{up: rt.ups[d.Region], safe: d.Safe, body: body})
		rt.proxy.ServeHTTP(w, r.WithContext(ctx))
	default:
		rt.local.ServeHTTP(w, r)
	}
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
	attrs := []attribute.KeyValue{attribute.String("decision", a.String()), attribute.String("region", region)}
	if reason != "" {
		attrs = append(attrs, attribute.String("reason", reason))
	}
	rt.decisions.Add(ctx, 1, metric.WithAttributes(attrs...))
}

func isForm(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded")
}

func routedPath(p string) bool {
	switch p {
	case "/oauth/token", "/oauth/introspect", "/revoke", "/userinfo", "/dereference", "/authorize", "/end_session",
		"/login", "/login/password", "/login/totp", "/consent":
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
	case "/login", "/login/password", "/login/totp", "/consent", "/authorize/callback":
		// A login started on the global host stays with its region even if
		// DNS answers another region mid-login.
		artifact = form.Get("id")
	case "/login/federated/callback":
		artifact = form.Get("state")
	default:
		return Decision{Action: Local, Region: rt.cfg.Local}
	}
	region, ok := rt.owner(artifact)
	return rt.proxyTo(region, ok, safe)
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
	return Decision{Action: Redirect, Region: t.Region}
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

// rewrite prepares the outbound request: the region's configured address,
// the original Host (so the upstream answers with the same issuer), no
// client-supplied forwarding headers, and a signed hop header.
func (rt *Router) rewrite(pr *httputil.ProxyRequest) {
	ci := pr.In.Context().Value(ctxKey{}).(*callInfo)
	scheme := "http"
	if ci.up.TLS {
		scheme = "https"
	}
	pr.Out.URL.Scheme = scheme
	pr.Out.URL.Host = ci.up.Addr
	pr.Out.Host = pr.In.Host
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Real-Ip"} {
		pr.Out.Header.Del(h)
	}
	pr.SetXForwarded()
	pr.Out.Header.Set(HopHeader, rt.hop.sign(rt.cfg.Local, ci.up.Region, rt.now()))
	if ci.body != nil {
		b := ci.body
		pr.Out.Body = io.NopCloser(bytes.NewReader(b))
		pr.Out.ContentLength = int64(len(b))
		pr.Out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
	}
}

// Regions returns the ids of the other regions the router reaches.
func (rt *Router) Regions() []string {
	out := make([]string, 0, len(rt.cfg.Upstreams))
	for _, u := range rt.cfg.Upstreams {
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
	scheme := "http"
	if up.TLS {
		scheme = "https"
	}
	var body []byte
	method := http.MethodGet
	var rd io.Reader
	if form != nil {
		method = http.MethodPost
		body = []byte(form.Encode())
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(context.WithValue(ctx, ctxKey{}, &callInfo{up: up, safe: true, body: body}), method, scheme+"://"+up.Addr+path, rd)
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
	req.Header.Set(HopHeader, rt.hop.sign(rt.cfg.Local, region, rt.now()))
	resp, err := rt.proxy.Transport.RoundTrip(req)
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

// ErrUpstreamUnavailable is returned when neither a region nor its DR site
// can answer.
var ErrUpstreamUnavailable = errors.New("routing: region unavailable")

func (rt *Router) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ci, _ := r.Context().Value(ctxKey{}).(*callInfo)
	region := ""
	if ci != nil {
		region = ci.up.Region
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

// failover sends a proxied call to the region, then to its DR site when the
// region cannot be reached and repeating is safe: always when the
// connection was never made, after sending only for idempotent calls. A
// code redemption is never sent twice; a blind retry would look like reuse.
type failover struct {
	rt   *Router
	base http.RoundTripper
}

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	ci := req.Context().Value(ctxKey{}).(*callInfo)
	addrs := []string{ci.up.Addr}
	if ci.up.DRAddr != "" {
		addrs = append(addrs, ci.up.DRAddr)
	}
	lastErr := ErrUpstreamUnavailable
	for i, addr := range addrs {
		b := ci.up.breakers[addr]
		now := f.rt.now()
		if !b.allow(now) {
			lastErr = fmt.Errorf("%w: breaker open for %s", ErrUpstreamUnavailable, addr)
			continue
		}
		out := req
		// A safe call with a DR site gives the primary half of what is left,
		// so a slow (not refusing) primary still leaves the DR site time to
		// answer within the deadline.
		cancel := context.CancelFunc(func() {})
		if i == 0 && ci.safe && len(addrs) > 1 {
			if dl, ok := req.Context().Deadline(); ok {
				var actx context.Context
				actx, cancel = context.WithTimeout(req.Context(), time.Until(dl)/2)
				out = req.WithContext(actx)
			}
		}
		if i > 0 {
			out = req.Clone(req.Context())
			out.URL.Host = addr
			if req.GetBody != nil {
				body, err := req.GetBody()
				if err != nil {
					cancel()
					return nil, err
				}
				out.Body = body
			}
		}
		resp, err := f.base.RoundTrip(out)
		if err == nil {
			b.done(true, f.rt.now())
			resp.Body = cancelOnClose{resp.Body, cancel}
			return resp, nil
		}
		cancel()
		lastErr = err
		if callerGone(req.Context()) {
			// The downstream client (or internal caller) cancelled: that is
			// no fault of the upstream and must never count against it, or
			// anyone could open the breaker by abandoning requests.
			b.abandon()
			break
		}
		b.done(false, f.rt.now())
		if req.Context().Err() != nil {
			break
		}
		if !ci.safe && !neverSent(err) {
			break
		}
	}
	return nil, lastErr
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
