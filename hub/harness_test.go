package hub_test

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
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
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// The federation under test: fedtest's three regions and the hub (hub
// topology) in this process, each on its own loopback address and reached
// by host name through f.Resolver, so issuers, redirect URIs and host-only
// cookies are those of a real deployment.
const (
	globalHost = "id.localhost"
	hubHost    = "hub.id.localhost"
)

var regionIDs = fedtest.Regions

func regionHost(id string) string { return id + ".id.localhost" }

// regionIssuer is region id's own issuer.
func (f *fed) regionIssuer(id string) string { return f.Cfg.Federation.URL(regionHost(id)) }

// hubURL is the hub's issuer; globalURL the global host's.
func (f *fed) hubURL() string    { return f.Cfg.Federation.URL(hubHost) }
func (f *fed) globalURL() string { return f.Cfg.GlobalIssuer() }

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

// fed is a fedtest federation with what the hub tests read of it.
type fed struct {
	*fedtest.Federation
	t      *testing.T
	ctx    context.Context
	opts   options
	codec  *routing.Codec
	hubKey []byte
	// fedKeys are the parties' federation private keys (regions and
	// federation.PartyHub).
	fedKeys map[string]*ecdsa.PrivateKey
	client  *http.Client // back channel
	hasher  *lookup.Hasher
	redis   *redis.Client
	prefix  string
	metrics *sdkmetric.ManualReader
	logs    map[string]*lockedBuffer // every region's log output
	dsn     map[string]string        // each region's store: PostgreSQL URL (postgres option) or SQLite file
	// The running hub's broker and lookup store and table (the mesh's
	// shared store in mesh topology); startHub renews them.
	broker *hub.Broker
	lookup lookup.Store
	table  *lookup.Table
}

// newFed starts the regions and, in hub topology, the hub, with the
// federation timings shortened so outages show within a test's deadline.
func newFed(t *testing.T, o options) *fed {
	t.Helper()
	f := &fed{t: t, ctx: t.Context(), opts: o, logs: map[string]*lockedBuffer{}, dsn: map[string]string{},
		metrics: sdkmetric.NewManualReader()}
	for _, id := range regionIDs {
		f.logs[id] = &lockedBuffer{}
	}
	meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(f.metrics))
	tel := func(site string) *telemetry.Telemetry {
		tl := fedtest.QuietTelemetry()
		if site == "hub" {
			tl.Meter = meter
			if o.hubLog != nil {
				tl.Log = o.hubLog
			}
		} else if lb, ok := f.logs[site]; ok {
			tl.Log = slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
		return tl
	}
	store := fedtest.SQLite
	if o.postgres {
		store = fedtest.Postgres
	}
	f.Federation = fedtest.Start(t, fedtest.Options{Topology: o.topology, Hub: o.topology != federation.TopologyMesh, Redis: o.redis,
		Store: store, Telemetry: tel, Configure: func(c *config.Config) { c.Hub.TrustedProxies = o.trustedProxies },
		Federation: federate.Tuning{RP: federation.RPOptions{HealthTTL: time.Millisecond, ProbeTimeout: time.Second},
			Poll: 30 * time.Millisecond, MinBackoff: 20 * time.Millisecond, MaxBackoff: 100 * time.Millisecond}})
	f.codec, f.hasher, f.client = f.Codec(), f.Hasher(), f.HTTPClient()
	f.fedKeys = map[string]*ecdsa.PrivateKey{}
	for _, p := range append([]string{federation.PartyHub}, regionIDs...) {
		f.fedKeys[p] = f.Keyring(p).Key
	}
	for _, id := range regionIDs {
		f.dsn[id] = f.Database(id)
	}
	var err error
	if f.hubKey, err = config.LoadSecret("hub.key_file", "", filepath.Join(f.Cfg.DataDir, "secrets", "hub.key"), fedtest.Discard()); err != nil {
		t.Fatal(err)
	}
	if o.redis {
		f.redis, f.prefix = testenv.RedisClient(t), f.RedisPrefix
	}
	f.renew()
	return f
}

// renew points broker, lookup and table at the running hub (or the mesh's
// shared store).
func (f *fed) renew() {
	if f.Hub != nil {
		f.broker = f.Hub.Broker
	}
	f.lookup, f.table = f.Lookup(), f.Table()
}

func (f *fed) startHub() {
	f.StartHub()
	f.renew()
}

func (f *fed) stopHub() { f.Halt("hub") }

func (f *fed) addUser(regionID, username, password string, claims map[string]string) store.User {
	f.t.Helper()
	u, err := region.CreateUser(f.ctx, f.Nodes[regionID].Store, region.UserSpec{Username: username, Password: password, Claims: claims})
	if err != nil {
		f.t.Fatal(err)
	}
	f.Notify(regionID)
	return u
}

func (f *fed) waitResolves(username, want string) {
	f.t.Helper()
	fedtest.Eventually(f.t, username+" in the lookup table", func() bool {
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
	c, err := region.CreateClient(f.ctx, f.Nodes[regionID].Store, f.codec, regionID,
		region.ClientSpec{Name: "demo", RedirectURIs: []string{fedtest.AppRedirect}, FirstParty: true})
	if err != nil {
		f.t.Fatal(err)
	}
	p, err := oidc.NewProvider(oidc.ClientContext(f.ctx, f.client), issuer)
	if err != nil {
		f.t.Fatalf("discovery at %s: %v", issuer, err)
	}
	return &app{f: f, provider: p, issuer: issuer, conf: oauth2.Config{ClientID: c.ID, ClientSecret: c.Secret,
		Endpoint: p.Endpoint(), RedirectURL: fedtest.AppRedirect, Scopes: []string{oidc.ScopeOpenID, "profile", "email"}}}
}

type authFlow struct {
	url, state, nonce, verifier string
}

func (a *app) start() authFlow {
	fl := authFlow{state: hex.EncodeToString(fedtest.RandomKey(a.f.t)[:8]), nonce: hex.EncodeToString(fedtest.RandomKey(a.f.t)[:8]),
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
	return &browser{t: f.t, f: f, c: &http.Client{Jar: jar, Transport: f.HTTPClient().Transport, Timeout: 20 * time.Second,
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
		hosts = append(hosts, req.URL.Hostname())
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
		if !inFederation(loc.Hostname()) || (b.stopAt != nil && b.stopAt(loc)) {
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

// inFederation reports a host name of the federation.
func inFederation(host string) bool {
	return host == globalHost || strings.HasSuffix(host, "."+globalHost)
}

// serve runs h on a fresh loopback listener until the test ends and
// returns the server and its address (a handler a test assembles itself,
// or a reverse proxy in front of the hub).
func serve(t *testing.T, h http.Handler) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return srv, ln.Addr().String()
}
