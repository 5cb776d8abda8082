package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

const appRedirect = "http://127.0.0.1:9999/callback"

var regionIPs = map[string]string{"eu": "127.0.0.11", "us": "127.0.0.12", "ap": "127.0.0.13"}

// federation is three regional nodes (eu, us, ap), each with its own
// SQLite store and listener on its own loopback address, like configs/regions.yaml.
type federation struct {
	t        testing.TB
	cfg      *config.Config
	nodes    map[string]*node.Node
	stop     map[string]context.CancelFunc
	done     map[string]chan struct{}
	resolver *oidctest.Resolver
	spans    *tracetest.InMemoryExporter
	dials    atomic.Int64
	port     int
	// keyTimings shorten signing-key rotation (node.Options.KeyTimings).
	keyTimings region.KeyOptions
	// cfgOf, when it has a region's entry, is that node's own copy of the
	// config (a rolling change reaches nodes one at a time).
	cfgOf map[string]*config.Config
}

// freePort finds a port free on every region address.
func freePort(t testing.TB) int {
	for i := 0; i < 20; i++ {
		ln, err := net.Listen("tcp", regionIPs["eu"]+":0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for _, ip := range regionIPs {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return port
		}
	}
	t.Fatal("no common free port")
	return 0
}

func startFederation(t testing.TB, opts ...func(*federation)) *federation {
	port := freePort(t)
	f := &federation{t: t, nodes: map[string]*node.Node{}, stop: map[string]context.CancelFunc{}, done: map[string]chan struct{}{},
		spans: tracetest.NewInMemoryExporter(), port: port}
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: port, CookieDomain: "id.localhost",
			// The request timeout bounds a proxied login step, argon2id included.
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 5 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.10:" + strconv.Itoa(port), Addresses: []string{"127.0.0.10"}}},
		Telemetry: config.Telemetry{LogLevel: "info"},
	}
	hosts := map[string]string{}
	for _, id := range []string{"eu", "us", "ap"} {
		ip := regionIPs[id]
		cfg.Regions = append(cfg.Regions, config.Region{ID: id, Site: config.Site{Host: id + ".id.localhost",
			Listen: net.JoinHostPort(ip, strconv.Itoa(port)), Addresses: []string{ip}}})
		hosts[id+".id.localhost"] = ip
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	for _, o := range opts {
		o(f)
	}
	f.resolver = oidctest.NewResolver(hosts)
	for _, id := range []string{"eu", "us", "ap"} {
		f.start(id)
	}
	return f
}

func (f *federation) telemetry(id string) *telemetry.Telemetry {
	return &telemetry.Telemetry{
		Tracer:     sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans)),
		Meter:      noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)).With("region", id),
	}
}

// start runs region id's node until stopped.
func (f *federation) start(id string) {
	t := f.t
	ctx := context.Background()
	cfg := f.cfg
	if c, ok := f.cfgOf[id]; ok {
		cfg = c
	}
	n, err := node.New(ctx, cfg, id, node.Options{WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) { f.dials.Add(1); return rt.RoundTrip(r) })
	}, KeyTimings: f.keyTimings}, f.telemetry(id))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.cfg.Region(id)
	ln, err := net.Listen("tcp", r.Listen)
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = n.ServeListeners(sctx, ln, nil); n.Close(); close(done) }()
	f.nodes[id], f.stop[id], f.done[id] = n, cancel, done
	t.Cleanup(func() { cancel(); <-done })
}

// halt stops region id's node and waits until its listener is closed.
func (f *federation) halt(id string) {
	f.stop[id]()
	<-f.done[id]
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (fn roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

// at returns the base URL of the global host as served by region id: the
// resolver sends id.localhost to that region, as GeoDNS would.
func (f *federation) at(id string) (*http.Client, string) {
	res := oidctest.NewResolver(map[string]string{"id.localhost": regionIPs[id]})
	for k, v := range regionIPs {
		res.Set(k+".id.localhost", v)
	}
	return res.Client(), fmt.Sprintf("http://id.localhost:%d", f.port)
}

func (f *federation) client(id string) region.RegisteredClient {
	codec, err := node.Codec(f.cfg, f.cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	c, err := region.CreateClient(context.Background(), f.nodes[id].Store, codec, id, region.ClientSpec{Name: "app-" + id,
		RedirectURIs: []string{appRedirect}, FirstParty: true, Scopes: []string{region.ScopeIntrospect, region.ScopeDereference}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

func (f *federation) user(id, name string) {
	if _, err := region.CreateUser(context.Background(), f.nodes[id].Store, region.UserSpec{Username: name, Password: "password-" + name,
		Claims: map[string]string{"name": name}}); err != nil {
		f.t.Fatal(err)
	}
}

// loginVia signs name in to app through the global host as served by
// region entry, and returns the authorization code's redirect.
func (f *federation) loginVia(entry string, app region.RegisteredClient, name, verifier string) *url.URL {
	c, base := f.at(entry)
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {appRedirect}, "scope": {"openid profile offline_access"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	b := oidctest.NewBrowser(f.t, c.Transport)
	return b.Login(base+"/authorize?"+q.Encode(), appRedirect, name, "password-"+name)
}

func (f *federation) token(entry string, app region.RegisteredClient, form url.Values) (int, oidctest.OAuthError, map[string]any) {
	c, base := f.at(entry)
	return oidctest.PostForm(f.t, c, base+"/oauth/token", form, app.ID, app.Secret)
}

func (f *federation) introspect(entry string, caller region.RegisteredClient, token string) (int, map[string]any) {
	c, base := f.at(entry)
	s, _, m := oidctest.PostForm(f.t, c, base+"/oauth/introspect", url.Values{"token": {token}}, caller.ID, caller.Secret)
	return s, m
}

func TestCrossRegionRouting(t *testing.T) {
	f := startFederation(t)
	app := f.client("eu")
	rsUS := f.client("us") // a resource server resident in us
	f.user("eu", "ada")
	verifier := oauth2.GenerateVerifier()

	// An authorize request for an eu client landing at us ends at eu.
	loc := f.loginVia("us", app, "ada", verifier)
	code := loc.Query().Get("code")
	if code == "" || loc.Query().Get("iss") != fmt.Sprintf("http://id.localhost:%d", f.port) {
		t.Fatalf("authorization response %s", loc)
	}

	// The eu code is redeemed at ap.
	s, oe, tok := f.token("ap", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {appRedirect}, "code_verifier": {verifier}})
	if s != 200 {
		t.Fatalf("code redemption through ap: %d %+v", s, oe)
	}
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)

	// The ID token verifies against the global issuer's discovery and JWKS,
	// whichever region serves them.
	for _, entry := range []string{"us", "ap"} {
		c, base := f.at(entry)
		ctx := oidc.ClientContext(context.Background(), c)
		p, err := oidc.NewProvider(ctx, base)
		if err != nil {
			t.Fatalf("discovery via %s: %v", entry, err)
		}
		if _, err := p.Verifier(&oidc.Config{ClientID: app.ID}).Verify(ctx, tok["id_token"].(string)); err != nil {
			t.Fatalf("ID token via %s: %v", entry, err)
		}
		// userinfo through this region.
		if _, err := p.UserInfo(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: at, TokenType: "Bearer"})); err != nil {
			t.Fatalf("userinfo via %s: %v", entry, err)
		}
	}

	// Introspection through us and ap, by the app itself and by a resource
	// server resident in us (authenticated by us, answered by eu).
	for _, entry := range []string{"us", "ap", "eu"} {
		for _, caller := range []region.RegisteredClient{app, rsUS} {
			if s, m := f.introspect(entry, caller, at); s != 200 || m["active"] != true {
				t.Fatalf("introspection via %s by %s: %d %v", entry, caller.Name, s, m)
			}
		}
	}

	// The refresh token is rotated at us.
	s, oe, tok2 := f.token("us", app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	if s != 200 || tok2["refresh_token"] == rt {
		t.Fatalf("refresh through us: %d %+v", s, oe)
	}

	// Dereference through ap: opaque in, RFC 9068 JWT out.
	c, base := f.at("ap")
	s, oe, d := oidctest.PostForm(t, c, base+"/dereference", url.Values{"token": {tok2["access_token"].(string)}}, rsUS.ID, rsUS.Secret)
	if s != 200 || d["access_token"] == nil {
		t.Fatalf("dereference: %d %+v", s, oe)
	}
	// The JWT names eu's issuer and is signed by an eu key; it verifies
	// with the federation JWKS any region publishes.
	jws, err := jose.ParseSignedCompact(d["access_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims)
	issuers := map[string]string{}
	for i := range f.cfg.Regions {
		issuers[f.cfg.Regions[i].ID] = f.cfg.Issuer(&f.cfg.Regions[i])
	}
	if err := routing.CheckKeyRegion(jws.Signatures[0].Header.KeyID, claims.Iss, issuers); err != nil || claims.Iss != issuers["eu"] {
		t.Fatalf("dereferenced JWT: kid %s iss %s: %v", jws.Signatures[0].Header.KeyID, claims.Iss, err)
	}
	ks := fetchJWKS(t, c, base+"/keys")
	if _, err := jws.Verify(ks); err != nil {
		t.Fatalf("dereferenced JWT does not verify with the federation JWKS served by ap: %v", err)
	}

	// Revocation through ap; introspection through us sees it.
	s, _, _ = oidctest.PostForm(t, c, base+"/revoke", url.Values{"token": {tok2["access_token"].(string)}}, app.ID, app.Secret)
	if s != 200 {
		t.Fatalf("revocation through ap: %d", s)
	}
	if s, m := f.introspect("us", app, tok2["access_token"].(string)); s != 200 || m["active"] != false {
		t.Fatalf("revoked token via us: %d %v", s, m)
	}
}

// TestConcurrentRedemption races the same code at eu and through us: exactly
// one redemption wins, every time.
func TestConcurrentRedemption(t *testing.T) {
	f := startFederation(t)
	app := f.client("eu")
	f.user("eu", "bob")
	for i := 0; i < 15; i++ {
		verifier := oauth2.GenerateVerifier()
		code := f.loginVia("eu", app, "bob", verifier).Query().Get("code")
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {appRedirect}, "code_verifier": {verifier}}
		var wins, losses atomic.Int64
		var wg sync.WaitGroup
		for _, entry := range []string{"eu", "us", "eu", "us", "ap"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch s, oe, _ := f.token(entry, app, form); {
				case s == 200:
					wins.Add(1)
				case s == 400 && oe.Error == "invalid_grant":
					losses.Add(1)
				default:
					t.Errorf("unexpected answer %d %+v", s, oe)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || losses.Load() != 4 {
			t.Fatalf("round %d: %d successes, %d invalid_grant; want exactly one success", i, wins.Load(), losses.Load())
		}
	}
}

// TestRegionDown stops eu: its artifacts get 503 temporarily_unavailable
// within the configured deadline (never a guessed answer); us's are unaffected.
func TestRegionDown(t *testing.T) {
	f := startFederation(t)
	euApp, usApp := f.client("eu"), f.client("us")
	f.user("eu", "eve")
	f.user("us", "sam")
	v1, v2 := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	c1 := f.loginVia("eu", euApp, "eve", v1).Query().Get("code")
	c2 := f.loginVia("us", usApp, "sam", v2).Query().Get("code")
	_, _, euTok := f.token("eu", euApp, url.Values{"grant_type": {"authorization_code"}, "code": {c1}, "redirect_uri": {appRedirect}, "code_verifier": {v1}})
	_, _, usTok := f.token("us", usApp, url.Values{"grant_type": {"authorization_code"}, "code": {c2}, "redirect_uri": {appRedirect}, "code_verifier": {v2}})

	f.halt("eu")
	start := time.Now()
	s, m := f.introspect("us", euApp, euTok["access_token"].(string))
	if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Fatalf("eu token with eu down: %d %v", s, m)
	}
	if d := time.Since(start); d > f.cfg.Federation.RequestTimeout+time.Second {
		t.Fatalf("answered after %s, beyond the configured deadline", d)
	}
	if s, m := f.introspect("ap", usApp, usTok["access_token"].(string)); s != 200 || m["active"] != true {
		t.Fatalf("us token while eu is down: %d %v", s, m)
	}
	if s, oe, _ := f.token("ap", usApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {usTok["refresh_token"].(string)}}); s != 200 {
		t.Fatalf("us refresh while eu is down: %d %+v", s, oe)
	}
}

// TestOneTraceAcrossHop checks that a routed call's router span and the
// upstream's server span share one trace.
func TestOneTraceAcrossHop(t *testing.T) {
	f := startFederation(t)
	app := f.client("eu")
	f.user("eu", "tia")
	v := oauth2.GenerateVerifier()
	code := f.loginVia("eu", app, "tia", v).Query().Get("code")
	_, _, tok := f.token("eu", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {appRedirect}, "code_verifier": {v}})
	f.spans.Reset()
	// Send the call with a known trace context through us.
	c, base := f.at("us")
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/introspect", bytes.NewBufferString(url.Values{"token": {tok["access_token"].(string)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	servers := map[string]bool{}
	for _, sp := range f.spans.GetSpans() {
		if sp.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
			servers[sp.SpanKind.String()] = true
		}
	}
	if !servers["server"] || !servers["client"] {
		t.Fatalf("spans in the trace: %v; want the router's client span and the upstream's server span", servers)
	}
	n := 0
	for _, sp := range f.spans.GetSpans() {
		if sp.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" && sp.SpanKind.String() == "server" {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("%d server spans in the trace, want the entry region's and eu's", n)
	}
}

// fetchJWKS returns a key set as a JWS verification key.
func fetchJWKS(t testing.TB, c *http.Client, u string) *jose.JSONWebKeySet {
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return &set
}
