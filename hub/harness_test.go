package hub_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/internal/clientaddr"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/routing"
)

// The federation under test: three regions and the hub, each on its own
// 127.0.0.1 listener, reached by host name through a routing table (the
// same mechanism production back-channels use), so issuers, redirect URIs
// and host-only cookies are those of a real deployment.
const (
	globalHost  = "id.localhost"
	hubHost     = "hub.id.localhost"
	appRedirect = "http://127.0.0.1:9999/callback"
)

var regionIDs = []string{"eu", "us", "ap"}

func regionHost(id string) string   { return id + ".id.localhost" }
func regionIssuer(id string) string { return "http://" + regionHost(id) }

const (
	hubURL    = "http://" + hubHost
	globalURL = "http://" + globalHost
)

// routes is the mutable host → listener table every client dials through.
type routes struct {
	mu sync.RWMutex
	m  map[string]string
}

func (r *routes) set(host, addr string) {
	r.mu.Lock()
	r.m[host] = addr
	r.mu.Unlock()
}

func (r *routes) lookup(host string) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a, ok := r.m[host]
	return a, ok
}

func (r *routes) transport() *http.Transport {
	var d net.Dialer
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		to, ok := r.lookup(host)
		if !ok {
			return nil, errors.New("test routes: unknown host " + host)
		}
		return d.DialContext(ctx, network, to)
	}, DisableKeepAlives: true}
}

type options struct {
	topology string
	redis    bool // lookup table (and hub state) on the real Redis
	postgres bool // region stores on the real PostgreSQL (a schema each)
	// hubLog, when set, receives the hub's log (audit records).
	hubLog *slog.Logger
	// trustedProxies are the hub's trusted reverse proxies
	// (hub.trusted_proxies).
	trustedProxies []string
}

type fed struct {
	t      *testing.T
	ctx    context.Context
	opts   options
	codec  *routing.Codec
	hubKey []byte
	// fedKeys are the parties' federation private keys (regions and
	// federation.PartyHub); keyring(self) is a party's view of them.
	fedKeys map[string]*ecdsa.PrivateKey
	routes  *routes
	client  *http.Client // back channel
	lookup  lookup.Store
	table   *lookup.Table
	hasher  *lookup.Hasher
	redis   *redis.Client
	prefix  string
	regions map[string]*regionNode
	broker  *hub.Broker
	hubSrv  *http.Server
	metrics *sdkmetric.ManualReader
	logs    map[string]*logBuffer // every region's log output
	dsn     map[string]string     // each region's store: PostgreSQL URL (postgres option) or SQLite file
}

// logBuffer collects a region's log records for inspection.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type regionNode struct {
	id     string
	addr   string
	st     store.Store
	p      *region.Provider
	pusher *federate.Pusher
	srv    *http.Server
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func randomKey(t *testing.T) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func serve(t *testing.T, h http.Handler) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, ln, h), ln.Addr().String()
}

func serveOn(t *testing.T, ln net.Listener, h http.Handler) *http.Server {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// newFed starts the regions and, in hub topology, the hub.
func newFed(t *testing.T, o options) *fed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &fed{t: t, ctx: ctx, opts: o, routes: &routes{m: map[string]string{}}, regions: map[string]*regionNode{},
		logs: map[string]*logBuffer{}, dsn: map[string]string{}}
	var err error
	if f.codec, err = routing.NewCodec(regionIDs, randomKey(t)); err != nil {
		t.Fatal(err)
	}
	f.hubKey = randomKey(t)
	f.fedKeys = map[string]*ecdsa.PrivateKey{}
	for _, p := range append([]string{federation.PartyHub}, regionIDs...) {
		if f.fedKeys[p], err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
	}
	if f.hasher, err = lookup.NewHasher(f.hubKey, nil); err != nil {
		t.Fatal(err)
	}
	f.client = &http.Client{Transport: f.routes.transport(), Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if o.redis {
		f.redis = redis.NewClient(&redis.Options{Addr: testenv.RedisAddr(t)})
		t.Cleanup(func() { f.redis.Close() })
		f.prefix = "meridian-test:" + hex.EncodeToString(randomKey(t)[:6]) + ":"
		rs, err := redisstore.New(ctx, f.redis, redisstore.Options{Prefix: f.prefix + "lookup:", BucketBits: redisstore.MinBucketBits})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = rs.Drop(context.Background())
			keys, _ := f.redis.Keys(context.Background(), f.prefix+"*").Result()
			if len(keys) > 0 {
				f.redis.Del(context.Background(), keys...)
			}
		})
		f.lookup = rs
	} else {
		es, err := embedded.Open(ctx, filepath.Join(t.TempDir(), "lookup.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { es.Close() })
		f.lookup = es
	}
	if f.table, err = lookup.NewTable(f.hasher, f.lookup); err != nil {
		t.Fatal(err)
	}
	lns := map[string]net.Listener{}
	for _, id := range regionIDs {
		if lns[id], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range regionIDs {
		f.startRegion(id, lns)
	}
	if o.topology == federation.TopologyHub {
		f.startHub()
	}
	return f
}

// keyring is party self's federation identity: its own private key and
// every party's public key.
func (f *fed) keyring(self string) *federation.Keyring {
	kr := &federation.Keyring{Self: self, Key: f.fedKeys[self], Public: map[string]*ecdsa.PublicKey{}}
	for p, k := range f.fedKeys {
		kr.Public[p] = &k.PublicKey
	}
	return kr
}

// hopKeys are the regions' public keys, as a router takes them.
func (f *fed) hopKeys() map[string]*ecdsa.PublicKey {
	m := map[string]*ecdsa.PublicKey{}
	for _, id := range regionIDs {
		m[id] = &f.fedKeys[id].PublicKey
	}
	return m
}

func (f *fed) bases(id string) []string {
	out := []string{regionIssuer(id)}
	if id == "eu" {
		out = append(out, globalURL)
	}
	for _, o := range regionIDs {
		if o != id {
			out = append(out, regionIssuer(o))
		}
	}
	return out
}

// startRegion runs region id as a node does: its router (cross-region
// redirects and proxying, by artifact tag) in front of the user-keys
// listing and the provider.
func (f *fed) startRegion(id string, lns map[string]net.Listener) {
	t := f.t
	ctx := f.ctx
	var st interface {
		store.Store
		Migrate(context.Context) error
		Close() error
	}
	var err error
	if f.opts.postgres {
		f.dsn[id] = testenv.PostgresSchema(t)
		st, err = postgres.Open(ctx, f.dsn[id])
	} else {
		f.dsn[id] = filepath.Join(t.TempDir(), id+".db")
		st, err = sqlite.Open(ctx, f.dsn[id])
	}
	if err != nil {
		t.Fatal(err)
	}
	f.logs[id] = &logBuffer{}
	log := slog.New(slog.NewTextHandler(f.logs[id], &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cookieKey := randomKey(t)
	ucfg := federate.LoginConfig{Region: id, Bases: f.bases(id), Topology: f.opts.topology, HubURL: hubURL, Hasher: f.hasher, Regions: regionIDs,
		Codec: f.codec, Key: f.fedKeys[id], CookieKey: cookieKey, HTTPClient: f.client, Log: log,
		RP: federation.RPOptions{HealthTTL: time.Millisecond, ProbeTimeout: time.Second}}
	var sink federate.KeySink
	if f.opts.topology == federation.TopologyMesh {
		ucfg.Table = f.table
		ucfg.Peers = map[string]string{}
		entries := map[string][]string{}
		for _, r := range regionIDs {
			ucfg.Peers[r] = regionIssuer(r)
			entries[r] = f.bases(r)
		}
		if err := federate.EnsurePeerClients(ctx, st, f.codec, id, entries, f.keyring(id)); err != nil {
			t.Fatal(err)
		}
		sink = federate.StoreSink{Store: f.lookup, Region: id}
	} else {
		if err := federate.EnsureHubClient(ctx, st, f.codec, id, hubURL, &f.fedKeys[federation.PartyHub].PublicKey); err != nil {
			t.Fatal(err)
		}
		if sink, err = federate.NewHubSink(hubURL, f.fedKeys[id], id, f.client); err != nil {
			t.Fatal(err)
		}
	}
	up, err := federate.NewLogin(ucfg)
	if err != nil {
		t.Fatal(err)
	}
	var ups []routing.Upstream
	for _, o := range regionIDs {
		if o != id {
			ups = append(ups, routing.Upstream{Region: o, URL: regionIssuer(o), Addr: lns[o].Addr().String()})
		}
	}
	var local http.Handler // the router's local handler, set below
	rt, err := routing.NewRouter(routing.RouterConfig{Local: id, Upstreams: ups, HopKey: f.fedKeys[id], HopKeys: f.hopKeys()}, f.codec,
		http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { local.ServeHTTP(w, r) }), log, nil)
	if err != nil {
		t.Fatal(err)
	}
	peerHosts := map[string]string{}
	for _, o := range regionIDs {
		if o != id {
			peerHosts[regionHost(o)] = regionIssuer(o)
		}
	}
	p, err := region.New(ctx, region.Config{Region: id, Issuer: regionIssuer(id), GlobalIssuer: globalURL,
		RegionHosts: []string{regionHost(id)}, PeerHosts: peerHosts, CookieKey: cookieKey, CookieDomain: globalHost, Upstream: up, Peers: rt}, st, f.codec, log)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := federate.NewUserKeysHandler(federate.UserKeysConfig{Region: id, Issuer: regionIssuer(id), Codec: f.codec,
		HubKey: &f.fedKeys[federation.PartyHub].PublicKey, Hasher: f.hasher,
		Users: st, CursorKey: cookieKey})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(federation.UserKeysPath, keys)
	mux.Handle("/", p)
	local = mux
	srv := serveOn(t, lns[id], rt)
	addr := lns[id].Addr().String()
	f.routes.set(regionHost(id), addr)
	if id == "eu" {
		f.routes.set(globalHost, addr)
	}
	pusher, err := federate.NewPusher(federate.PusherConfig{Region: id, Outbox: st, Hasher: f.hasher, Sink: sink,
		Poll: 30 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = pusher.Run(ctx) }()
	f.regions[id] = &regionNode{id: id, addr: addr, st: st, p: p, pusher: pusher, srv: srv}
}

func (f *fed) startHub() {
	t := f.t
	if f.broker == nil {
		var regs []hub.Region
		for _, id := range regionIDs {
			regs = append(regs, hub.Region{ID: id, Issuer: regionIssuer(id), Bases: f.bases(id)})
		}
		var state hub.StateStore
		if f.redis != nil {
			state = hub.NewRedisState(f.redis, f.prefix+"hub:")
		}
		f.metrics = sdkmetric.NewManualReader()
		meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.metrics)).Meter("test")
		log := f.opts.hubLog
		if log == nil {
			log = discard()
		}
		trusted, err := clientaddr.Parse(f.opts.trustedProxies)
		if err != nil {
			t.Fatal(err)
		}
		b, err := hub.New(hub.Config{Issuer: hubURL, Regions: regs, Codec: f.codec, Keys: f.keyring(federation.PartyHub), TrustedProxies: trusted,
			Hasher: f.hasher, Lookup: f.lookup, State: state, Secret: randomKey(t), HTTPClient: f.client, Log: log, Meter: meter,
			RP: federation.RPOptions{HealthTTL: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		f.broker = b
	}
	srv, addr := serve(t, f.broker)
	f.hubSrv = srv
	f.routes.set(hubHost, addr)
}

func (f *fed) stopHub() {
	if err := f.hubSrv.Close(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fed) addUser(regionID, username, password string, claims map[string]string) store.User {
	f.t.Helper()
	u, err := region.CreateUser(f.ctx, f.regions[regionID].st, region.UserSpec{Username: username, Password: password, Claims: claims})
	if err != nil {
		f.t.Fatal(err)
	}
	f.regions[regionID].pusher.Notify()
	return u
}

// eventually waits (polling) until cond holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(15 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func (f *fed) waitResolves(username, want string) {
	f.t.Helper()
	eventually(f.t, username+" in the lookup table", func() bool {
		got, err := f.table.Resolve(f.ctx, username)
		return err == nil && got == want
	})
}

// app is a relying party registered in a region, using go-oidc and
// x/oauth2 unmodified against the global host.
type app struct {
	f        *fed
	provider *oidc.Provider
	conf     oauth2.Config
	issuer   string
}

func (f *fed) newApp(regionID, issuer string) *app {
	f.t.Helper()
	c, err := region.CreateClient(f.ctx, f.regions[regionID].st, f.codec, regionID,
		region.ClientSpec{Name: "demo", RedirectURIs: []string{appRedirect}, FirstParty: true})
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := oidc.NewProvider(oidc.ClientContext(f.ctx, f.client), issuer)
	if err != nil {
		f.t.Fatalf("discovery at %s: %v", issuer, err)
	}
	return &app{f: f, provider: p, issuer: issuer, conf: oauth2.Config{ClientID: c.ID, ClientSecret: c.Secret,
		Endpoint: p.Endpoint(), RedirectURL: appRedirect, Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}}
}

type authFlow struct {
	url, state, nonce, verifier string
}

func (a *app) start() authFlow {
	fl := authFlow{state: hex.EncodeToString(randomKey(a.f.t)[:8]), nonce: hex.EncodeToString(randomKey(a.f.t)[:8]),
		verifier: oauth2.GenerateVerifier()}
	fl.url = a.conf.AuthCodeURL(fl.state, oauth2.S256ChallengeOption(fl.verifier), oidc.Nonce(fl.nonce))
	return fl
}

type signedIn struct {
	idToken  *oidc.IDToken
	userinfo map[string]any
	amr      []string
}

// finish checks the authorization response, redeems the code and verifies
// the ID token.
func (a *app) finish(fl authFlow, loc *url.URL) signedIn {
	t := a.f.t
	t.Helper()
	q := loc.Query()
	// The authorization response names the issuer the application
	// discovered (RFC 9207), which its ID token names too (checked by the
	// verifier below).
	if q.Get("state") != fl.state || q.Get("iss") != a.issuer || q.Get("code") == "" {
		t.Fatalf("authorization response %s: want state, iss=%s and a code", loc, a.issuer)
	}
	ctx := context.WithValue(oidc.ClientContext(a.f.ctx, a.f.client), oauth2.HTTPClient, a.f.client)
	tok, err := a.conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(fl.verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := a.provider.Verifier(&oidc.Config{ClientID: a.conf.ClientID}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != fl.nonce {
		t.Fatalf("nonce %q", idt.Nonce)
	}
	var claims struct {
		AMR []string `json:"amr"`
	}
	_ = idt.Claims(&claims)
	ui, err := a.provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	m := map[string]any{}
	_ = ui.Claims(&m)
	return signedIn{idToken: idt, userinfo: m, amr: claims.AMR}
}

// browser is a cookie-jar HTTP client that resolves federation hosts
// through the routes and shows each redirect.
type browser struct {
	t *testing.T
	f *fed
	c *http.Client
	// stopAt, when set, makes the browser stop before following a
	// redirect it matches (returned as page.out).
	stopAt func(*url.URL) bool
}

func (f *fed) newBrowser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: f.t, f: f, c: &http.Client{Jar: jar, Transport: f.routes.transport(), Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// page is where the browser stopped: a page, or a redirect out of the
// federation (to the application).
type page struct {
	method string
	url    *url.URL
	status int
	header http.Header
	body   string
	out    *url.URL // redirect to a host outside the federation
	hosts  []string // hosts visited on the way
}

func (p page) has(s string) bool { return strings.Contains(p.body, s) }

// isPassword reports a password form.
func (p page) isPassword() bool { return p.has(`name="password"`) }

// isUsername reports the identifier step.
func (p page) isUsername() bool { return p.has(`action="/login"`) }

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	var hosts []string
	for range 20 {
		hosts = append(hosts, req.URL.Host)
		resp, err := b.c.Do(req)
		if err != nil {
			b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode < 300 || resp.StatusCode >= 400 {
			return page{method: req.Method, url: req.URL, status: resp.StatusCode, header: resp.Header, body: string(body), hosts: hosts}
		}
		loc, err := req.URL.Parse(resp.Header.Get("Location"))
		if err != nil {
			b.t.Fatal(err)
		}
		if _, ok := b.f.routes.lookup(loc.Hostname()); !ok || (b.stopAt != nil && b.stopAt(loc)) {
			return page{method: req.Method, url: req.URL, status: resp.StatusCode, header: resp.Header, out: loc, hosts: hosts}
		}
		req, _ = http.NewRequest(http.MethodGet, loc.String(), nil)
	}
	b.t.Fatal("redirect loop")
	return page{}
}

func (b *browser) visit(u string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	return b.do(req)
}

var (
	formRE = regexp.MustCompile(`<form method="post" action="([^"]+)">`)
	// Inputs a browser submits with their values: hidden fields and the
	// (readonly) username field.
	hiddenRE = regexp.MustCompile(`<input type="(?:hidden|text)"(?: id="[a-z]+")? name="([a-z]+)" value="([^"]*)"`)
)

// submit posts the page's form with its hidden fields and the given ones.
func (b *browser) submit(p page, fields url.Values) page {
	b.t.Helper()
	m := formRE.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no form on %s (%d): %s", p.url, p.status, p.body)
	}
	form := url.Values{}
	for _, h := range hiddenRE.FindAllStringSubmatch(p.body, -1) {
		form.Set(h[1], html.UnescapeString(h[2]))
	}
	for k, v := range fields {
		form[k] = v
	}
	action, _ := p.url.Parse(html.UnescapeString(m[1]))
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// login drives an identifier-first login from an authorization URL and
// returns the redirect to the application. It fails if a password page
// appears when password is empty (SSO expected).
func (b *browser) login(authURL, username, password string) (*url.URL, page) {
	b.t.Helper()
	p := b.visit(authURL)
	sawPassword := false
	for range 6 {
		switch {
		case p.out != nil:
			return p.out, p
		case p.isPassword():
			if password == "" {
				b.t.Fatalf("password page at %s although the user has a session", p.url.Host)
			}
			sawPassword = true
			p = b.submit(p, url.Values{"username": {username}, "password": {password}})
		case p.isUsername():
			p = b.submit(p, url.Values{"username": {username}})
		default:
			b.t.Fatalf("unexpected page at %s (%d): %s", p.url, p.status, p.body)
		}
	}
	_ = sawPassword
	b.t.Fatalf("login did not finish; last page %s (%d): %s", p.url, p.status, p.body)
	return nil, p
}

// passwordPage walks to the password page of username.
func (b *browser) passwordPage(authURL, username string) page {
	b.t.Helper()
	p := b.visit(authURL)
	for range 4 {
		if p.isPassword() {
			return p
		}
		if !p.isUsername() {
			b.t.Fatalf("unexpected page at %s (%d): %s", p.url, p.status, p.body)
		}
		p = b.submit(p, url.Values{"username": {username}})
	}
	b.t.Fatal("no password page")
	return p
}

// loginCount is the hub's meridian.hub.logins for outcome and region.
func (f *fed) loginCount(outcome, region string) int64 {
	f.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(f.ctx, &rm); err != nil {
		f.t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "meridian.hub.logins" || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				o, _ := dp.Attributes.Value("outcome")
				r, _ := dp.Attributes.Value("region")
				if o.AsString() == outcome && r.AsString() == region {
					n += dp.Value
				}
			}
		}
	}
	return n
}
