package faults

import (
	"context"
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

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	fedkeys "github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// appRedirect is the redirect URI of every test application.
const appRedirect = "http://127.0.0.1:9999/callback"

// siteIP is the loopback address of a site, as in configs/regions.yaml:
// "eu", "us", "ap", "eu/dr" (eu's DR site), "eu/2" (eu's second node,
// with fedOptions.euNode2) and "hub".
func siteIP(site string) string {
	switch site {
	case "eu":
		return "127.0.0.11"
	case "us":
		return "127.0.0.12"
	case "ap":
		return "127.0.0.13"
	case "eu/dr":
		return "127.0.0.21"
	case "eu/2":
		return "127.0.0.31"
	case "hub":
		return "127.0.0.10"
	}
	panic("faults: unknown site " + site)
}

// fedOptions tune an in-process federation.
type fedOptions struct {
	euDR       bool              // configure (and run) eu's DR site on 127.0.0.21
	databases  map[string]string // region -> PostgreSQL URL; absent: SQLite
	dnsSubnets bool              // configure GeoDNS (for geodns.FromConfig)
	// euDRDatabase is eu's DR site's own database (regions[0].dr.database);
	// empty: the DR site shares eu's.
	euDRDatabase string
	rolePoll     time.Duration // node.Options.RolePoll
	// euNode2 gives eu a second address (127.0.0.31, site "eu/2") served
	// by a second node on the same database.
	euNode2 bool
}

// federation is three regional nodes (eu, us, ap) in this process, each on
// its own loopback address and store, like region/node's federation tests.
type federation struct {
	t     testing.TB
	cfg   *config.Config
	port  int
	nodes map[string]*node.Node // by site: "eu", "us", "ap", "eu/dr"
	stop  map[string]func()
	// dials counts every outbound request a router made to another region.
	dials    atomic.Int64
	rolePoll time.Duration
	// dialsTo counts the routers' outbound requests by address dialled.
	dialsTo sync.Map // string → *atomic.Int64
	// accepts counts the connections each site's listener accepted.
	accepts map[string]*atomic.Int64
	// hosts, when set, overrides where at() resolves a host (as GeoDNS
	// would answer it after a health change).
	hosts map[string]string
}

// dialed is how many requests the routers sent to addr.
func (f *federation) dialed(addr string) int64 {
	if c, ok := f.dialsTo.Load(addr); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// countingListener counts the connections it accepts.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// freeFedPort finds a TCP port free on the address of every site.
func freeFedPort(t testing.TB) int {
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.11:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		ok := true
		for _, site := range []string{"hub", "eu", "us", "ap", "eu/dr", "eu/2"} {
			ip := siteIP(site)
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
	t.Fatal("no port free on every federation address")
	return 0
}

// fedConfig is the federation config of an in-process federation on port.
func fedConfig(t testing.TB, port int, o fedOptions) *config.Config {
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: port, CookieDomain: "id.localhost",
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.10:" + strconv.Itoa(port), Addresses: []string{"127.0.0.10"}}},
		Telemetry: config.Telemetry{LogLevel: "info"},
	}
	prox := map[string][]string{"eu": {"us", "ap"}, "us": {"eu", "ap"}, "ap": {"us", "eu"}}
	for _, id := range []string{"eu", "us", "ap"} {
		ip := siteIP(id)
		addrs := []string{ip}
		if id == "eu" && o.euNode2 {
			addrs = append(addrs, siteIP("eu/2"))
		}
		r := config.Region{ID: id, Site: config.Site{Host: id + ".id.localhost", Listen: net.JoinHostPort(ip, strconv.Itoa(port)),
			Addresses: addrs, Database: o.databases[id]}, Proximity: prox[id]}
		if id == "eu" && o.euDR {
			dr := siteIP("eu/dr")
			r.DR = &config.Site{Host: "eu-dr.id.localhost", Listen: net.JoinHostPort(dr, strconv.Itoa(port)), Addresses: []string{dr},
				Database: o.euDRDatabase}
		}
		cfg.Regions = append(cfg.Regions, r)
	}
	if o.dnsSubnets {
		cfg.DNS = config.DNS{TTL: 30, DefaultRegion: "eu",
			NameServers: []config.NameServer{{Name: "ns1.id.localhost", Addresses: []string{"127.0.0.1"}}},
			Subnets:     []config.SubnetRoute{{CIDR: "127.0.0.0/8", Region: "eu"}, {CIDR: "10.1.0.0/16", Region: "us"}, {CIDR: "10.2.0.0/16", Region: "ap"}},
			Health:      config.HealthCheck{Interval: time.Hour, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}}
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startFederation runs eu, us and ap (and eu's DR site when asked).
func startFederation(t testing.TB, o fedOptions) *federation {
	port := freeFedPort(t)
	f := &federation{t: t, cfg: fedConfig(t, port, o), port: port, nodes: map[string]*node.Node{}, stop: map[string]func(){}, rolePoll: o.rolePoll,
		accepts: map[string]*atomic.Int64{}}
	for _, id := range []string{"eu", "us", "ap"} {
		f.start(id)
	}
	if o.euDR {
		f.start("eu/dr")
	}
	return f
}

// quietTelemetry is telemetry that records nothing.
func quietTelemetry() *telemetry.Telemetry {
	return &telemetry.Telemetry{
		Tracer:     sdktrace.NewTracerProvider(),
		Meter:      noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// start runs the node of site ("eu", "eu/dr", "eu/2", …) on its configured
// listener until halted or the test ends.
func (f *federation) start(site string) {
	t := f.t
	id, dr := site, false
	switch site {
	case "eu/dr":
		id, dr = "eu", true
	case "eu/2":
		id = "eu"
	}
	n, err := node.New(context.Background(), f.cfg, id, node.Options{DR: dr, RolePoll: f.rolePoll, WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			f.dials.Add(1)
			c, _ := f.dialsTo.LoadOrStore(r.URL.Host, new(atomic.Int64))
			c.(*atomic.Int64).Add(1)
			return rt.RoundTrip(r)
		})
	}}, quietTelemetry())
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.cfg.Region(id)
	listen := r.Listen
	if dr {
		listen = r.DR.Listen
	}
	if site == "eu/2" {
		listen = net.JoinHostPort(siteIP(site), strconv.Itoa(f.port))
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	if f.accepts[site] == nil {
		f.accepts[site] = new(atomic.Int64)
	}
	ln = countingListener{ln, f.accepts[site]}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.ServeListeners(ctx, ln, nil); n.Close(); close(done) }()
	stopped := false
	f.nodes[site] = n
	f.stop[site] = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(func() { f.stop[site]() })
}

// halt stops a site and waits until its listener is closed.
func (f *federation) halt(site string) { f.stop[site]() }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (fn roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }

// at returns a client whose view of DNS sends the global host to region
// entry (as GeoDNS would) and region hosts to their own addresses, and the
// global base URL.
func (f *federation) at(entry string) (*http.Client, string) {
	res := oidctest.NewResolver(map[string]string{"id.localhost": siteIP(entry)})
	for _, id := range []string{"eu", "us", "ap"} {
		res.Set(id+".id.localhost", siteIP(id))
	}
	for h, ip := range f.hosts {
		res.Set(h, ip)
	}
	c := res.Client()
	c.Timeout = 30 * time.Second
	return c, fmt.Sprintf("http://id.localhost:%d", f.port)
}

// codec is the federation's routing codec.
// keyring is party self's federation identity in this federation (the
// development keys under its data_dir).
func (f *federation) keyring(self string) *fedkeys.Keyring {
	kr, err := setup.Keyring(f.cfg, f.cfg.DataDir, self, slog.New(slog.DiscardHandler))
	if err != nil {
		panic(err)
	}
	return kr
}

func (f *federation) codec() *routing.Codec {
	c, err := node.Codec(f.cfg, f.cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// client registers a confidential first-party client in region id.
func (f *federation) client(id string, grants ...string) region.RegisteredClient {
	c, err := region.CreateClient(context.Background(), f.nodes[id].Store, f.codec(), id, region.ClientSpec{Name: "app-" + id,
		RedirectURIs: []string{appRedirect}, FirstParty: true, GrantTypes: grants,
		Scopes: []string{region.ScopeIntrospect, region.ScopeDereference}})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// user creates name (password "password-<name>") in region id.
func (f *federation) user(id, name string) {
	if _, err := region.CreateUser(context.Background(), f.nodes[id].Store, region.UserSpec{Username: name,
		Password: "password-" + name, Claims: map[string]string{"name": name}}); err != nil {
		f.t.Fatal(err)
	}
}

// authURL is an authorization request for app through the global host.
func authURL(base string, app region.RegisteredClient, verifier string) string {
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {appRedirect},
		"scope": {"openid profile offline_access"}, "state": {"st"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	return base + "/authorize?" + q.Encode()
}

// login signs name in to app through the global host as served by entry
// and returns the authorization code.
func (f *federation) login(entry string, app region.RegisteredClient, name, verifier string) string {
	c, base := f.at(entry)
	b := oidctest.NewBrowser(f.t, c.Transport)
	loc := b.Login(authURL(base, app, verifier), appRedirect, name, "password-"+name)
	code := loc.Query().Get("code")
	if code == "" {
		f.t.Fatalf("login of %s via %s: no code in %s", name, entry, loc)
	}
	return code
}

// tokens logs name in via entry and redeems the code at entry.
func (f *federation) tokens(entry string, app region.RegisteredClient, name string) map[string]any {
	v := oauth2.GenerateVerifier()
	code := f.login(entry, app, name, v)
	s, oe, tok := f.token(entry, app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {appRedirect}, "code_verifier": {v}})
	if s != 200 {
		f.t.Fatalf("code redemption via %s: %d %+v", entry, s, oe)
	}
	return tok
}

// token posts to /oauth/token through entry with app's credentials.
func (f *federation) token(entry string, app region.RegisteredClient, form url.Values) (int, oidctest.OAuthError, map[string]any) {
	c, base := f.at(entry)
	return oidctest.PostForm(f.t, c, base+"/oauth/token", form, app.ID, app.Secret)
}

// introspect asks entry about token with caller's credentials.
func (f *federation) introspect(entry string, caller region.RegisteredClient, token string) (int, map[string]any) {
	c, base := f.at(entry)
	s, _, m := oidctest.PostForm(f.t, c, base+"/oauth/introspect", url.Values{"token": {token}}, caller.ID, caller.Secret)
	return s, m
}
