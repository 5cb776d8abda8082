package fedtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	hubserver "github.com/meridian-id/meridian/hub/server"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// Options shape a federation. The zero value is eu, us and ap in hub
// topology on SQLite, no DR sites, no GeoDNS, no hub process.
type Options struct {
	// DR configures (and runs) eu's DR site on 127.0.0.21.
	DR bool
	// Node2 gives eu a second address (127.0.0.31, site "eu/2") in
	// regions[eu].addresses, served by a second node with the same config,
	// data_dir and database.
	Node2 bool
	// SecondNodes are sites ("eu", "us", "ap", "hub") that get a second
	// node "<site>/2" (127.0.0.31, .32, .33; the hub's 127.0.0.30) with the
	// same config, data_dir and database, its address listed after the
	// first in the site's addresses, so routers and the hub dial both (Node2
	// is SecondNodes with "eu"). The hub's second node shares the first's
	// state only on Redis (Options.Redis).
	SecondNodes []string
	// Deferred are sites ("eu", "eu/dr", …) Start configures but does not
	// run: the test starts them itself (Start) or runs them as processes.
	Deferred []string
	// LookupPrefix, in mesh topology, has every node open its partition of
	// the lookup table on its own hub.redis under this Redis key prefix
	// (node.Options.LookupPrefix), as production nodes do, instead of
	// sharing one store the test opened.
	LookupPrefix string
	// Store is every region's database kind (SQLite, Postgres, MySQL;
	// default SQLite in data_dir).
	Store string
	// Databases overrides a site's database URL: by region id, and
	// "eu/dr" for the DR site's own (absent: the DR site shares eu's).
	Databases map[string]string
	// DNS configures GeoDNS (dns: subnets 127/8 → eu, 10.1/16 → us,
	// 10.2/16 → ap), for geodns.FromConfig.
	DNS bool
	// Topology is federation.topology (default hub).
	Topology string
	// Hub runs the hub (hub/server) on 127.0.0.10.
	Hub bool
	// Redis puts the hub's lookup table and state on the machine's Redis
	// (internal/testenv), under a prefix of the test's own.
	Redis bool
	// Spans records every node's spans in Federation.Spans.
	Spans bool
	// RequestTimeout is federation.request_timeout (default 5s: it bounds
	// a proxied login step, argon2id included).
	RequestTimeout time.Duration
	// RolePoll and KeyTimings are passed to every node (node.Options).
	RolePoll   time.Duration
	KeyTimings region.KeyOptions
	// Federation shortens the federation timings of every node (RP health
	// probing, outbox pusher) and, for RP, of the hub.
	Federation federate.Tuning
	// Telemetry, when set, is the telemetry of each site ("eu", "eu/dr",
	// "hub"): tests that read logs or metrics supply their own.
	Telemetry func(site string) *telemetry.Telemetry
	// Configure edits the config before it is validated and used.
	Configure func(*config.Config)
}

// Federation is a running federation: one node per site in this process,
// each on its own loopback address like configs/regions.yaml.
type Federation struct {
	T    testing.TB
	Cfg  *config.Config
	Port int
	// Nodes are the running nodes by site: "eu", "us", "ap", "eu/dr",
	// "us/2", … (the hub's nodes are not here).
	Nodes map[string]*node.Node
	// Hub is the running hub (Options.Hub).
	Hub *hubserver.Hub
	// Dials counts every request a router sent to another region.
	Dials atomic.Int64
	// Spans holds the nodes' spans (Options.Spans).
	Spans *tracetest.InMemoryExporter
	// ConfigOf, when it has a site's entry, is the config that site's
	// node starts with next (a rolling change reaches nodes one at a time).
	ConfigOf map[string]*config.Config
	// RedisPrefix is the hub's Redis key prefix (Options.Redis).
	RedisPrefix string
	// Resolver is the federation's DNS as every client of Client sees it:
	// each host at its site's address, the global host at eu's (Set
	// re-points it, as GeoDNS would).
	Resolver *oidctest.Resolver
	// Hosts, when it has a host's entry, overrides the address At's
	// clients resolve it to (as GeoDNS answers after a health change).
	Hosts map[string]string

	dialsTo sync.Map                 // address dialled → *atomic.Int64
	accepts map[string]*atomic.Int64 // site → connections accepted

	opts Options
	stop map[string]func()
	mesh lookup.Store // the shared lookup store in mesh topology
}

// Config is the config of an in-process federation on port: the shape of
// configs/regions.yaml with data_dir in a temporary directory.
func Config(t testing.TB, port int, o Options) *config.Config {
	t.Helper()
	timeout := o.RequestTimeout
	if timeout == 0 {
		timeout = 5 * time.Second
	}
	topology := o.Topology
	if topology == "" {
		topology = federation.TopologyHub
	}
	hubIP := SiteIP("hub")
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: port, CookieDomain: "id.localhost",
			Topology: topology, ConnectTimeout: 500 * time.Millisecond, RequestTimeout: timeout},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: net.JoinHostPort(hubIP, strconv.Itoa(port)), Addresses: []string{hubIP}}},
		Telemetry: config.Telemetry{LogLevel: "info"},
	}
	prox := map[string][]string{"eu": {"us", "ap"}, "us": {"eu", "ap"}, "ap": {"us", "eu"}}
	for _, id := range Regions {
		ip := SiteIP(id)
		db, ok := o.Databases[id]
		if !ok && o.Store != "" && o.Store != SQLite {
			db = Database(t, o.Store)
		}
		addrs := []string{ip}
		if o.second(id) {
			addrs = append(addrs, SiteIP(id+"/2"))
		}
		r := config.Region{ID: id, Site: config.Site{Host: id + ".id.localhost", Listen: net.JoinHostPort(ip, strconv.Itoa(port)),
			Addresses: addrs, Database: db}, Proximity: prox[id]}
		if id == "eu" && o.DR {
			dr := SiteIP("eu/dr")
			r.DR = &config.Site{Host: "eu-dr.id.localhost", Listen: net.JoinHostPort(dr, strconv.Itoa(port)), Addresses: []string{dr},
				Database: o.Databases["eu/dr"]}
		}
		cfg.Regions = append(cfg.Regions, r)
	}
	if o.second("hub") {
		cfg.Hub.Addresses = append(cfg.Hub.Addresses, SiteIP("hub/2"))
	}
	if o.DNS {
		cfg.DNS = config.DNS{TTL: 30, DefaultRegion: "eu",
			NameServers: []config.NameServer{{Name: "ns1.id.localhost", Addresses: []string{"127.0.0.1"}}},
			Subnets:     []config.SubnetRoute{{CIDR: "127.0.0.0/8", Region: "eu"}, {CIDR: "10.1.0.0/16", Region: "us"}, {CIDR: "10.2.0.0/16", Region: "ap"}},
			Health:      config.HealthCheck{Interval: time.Hour, Timeout: 500 * time.Millisecond, Fall: 2, Rise: 2}}
	}
	if o.Redis {
		ro := testenv.RedisOptions(t)
		cfg.Hub.Redis = fmt.Sprintf("redis://%s/%d", ro.Addr, ro.DB)
	}
	if o.Configure != nil {
		o.Configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Start runs the federation o describes until the test ends: the hub (when
// asked) and eu, us and ap (and eu's DR site), each through the production
// composition on its configured listener.
func Start(t testing.TB, o Options) *Federation {
	t.Helper()
	port := FreePort(t)
	f := &Federation{T: t, Cfg: Config(t, port, o), Port: port, Nodes: map[string]*node.Node{}, ConfigOf: map[string]*config.Config{},
		Spans: tracetest.NewInMemoryExporter(), opts: o, stop: map[string]func(){}, Hosts: map[string]string{}, accepts: map[string]*atomic.Int64{}}
	if o.Redis {
		f.RedisPrefix = fmt.Sprintf("meridian-test:%x:", RandomKey(t)[:6])
		t.Cleanup(func() {
			c := testenv.RedisClient(t)
			ctx := context.Background()
			if keys, _ := c.Keys(ctx, f.RedisPrefix+"*").Result(); len(keys) > 0 {
				c.Del(ctx, keys...)
			}
		})
	}
	f.Resolver = oidctest.NewResolver(map[string]string{"id.localhost": SiteIP("eu"), "hub.id.localhost": SiteIP("hub")})
	for _, id := range Regions {
		f.Resolver.Set(id+".id.localhost", SiteIP(id))
	}
	if f.Cfg.Federation.Topology == federation.TopologyMesh && o.LookupPrefix == "" {
		f.mesh = f.openMeshLookup()
	}
	if o.Hub {
		f.StartHub()
		if o.second("hub") && !slices.Contains(o.Deferred, "hub/2") {
			f.Start("hub/2")
		}
	}
	sites := slices.Clone(Regions)
	for _, id := range Regions {
		if o.second(id) {
			sites = append(sites, id+"/2")
		}
	}
	if o.DR {
		sites = append(sites, "eu/dr")
	}
	for _, site := range sites {
		if !slices.Contains(o.Deferred, site) {
			f.Start(site)
		}
	}
	return f
}

// second reports whether site ("eu", "hub", …) has a second node.
func (o Options) second(site string) bool {
	return (site == "eu" && o.Node2) || slices.Contains(o.SecondNodes, site)
}

// Telemetry is the telemetry a node of region id runs with: spans into
// f.Spans when Options.Spans is set, nothing recorded otherwise.
func (f *Federation) Telemetry(id string) *telemetry.Telemetry {
	if f.opts.Telemetry != nil {
		return f.opts.Telemetry(id)
	}
	if !f.opts.Spans {
		return QuietTelemetry()
	}
	return &telemetry.Telemetry{
		Tracer:     sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.Spans)),
		Meter:      noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)).With("region", id),
	}
}

// Start runs the node of site ("eu", "eu/dr", "eu/2", "hub/2", …) on its
// configured listener until halted or the test ends.
func (f *Federation) Start(site string) {
	t := f.T
	t.Helper()
	id, dr, _ := strings.Cut(site, "/")
	if id == "hub" {
		f.StartHubNode(site)
		return
	}
	cfg := f.Cfg
	if c, ok := f.ConfigOf[site]; ok {
		cfg = c
	}
	n, err := node.New(context.Background(), cfg, id, node.Options{DR: dr == "dr", RolePoll: f.opts.RolePoll, KeyTimings: f.opts.KeyTimings,
		Lookup: f.mesh, LookupPrefix: f.opts.LookupPrefix, Federation: f.opts.Federation,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return RoundTripFunc(func(r *http.Request) (*http.Response, error) {
				f.Dials.Add(1)
				c, _ := f.dialsTo.LoadOrStore(r.URL.Host, new(atomic.Int64))
				c.(*atomic.Int64).Add(1)
				return rt.RoundTrip(r)
			})
		}}, f.Telemetry(site))
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cfg.Region(id)
	listen := r.Listen
	switch dr {
	case "dr":
		listen = r.DR.Listen
	case "2":
		listen = SiteAddr(site, f.Port)
	}
	f.Nodes[site] = n
	f.serve(site, listen, func(ctx context.Context, ln net.Listener) { _ = n.ServeListeners(ctx, ln, nil); n.Close() }, n.Close)
}

// StartHub runs the hub (hub/server) on hub.listen until halted ("hub")
// or the test ends, with ConfigOf["hub"] when set.
func (f *Federation) StartHub() {
	f.T.Helper()
	f.StartHubNode("hub")
}

// StartHubNode runs a node of the hub: "hub" on hub.listen (it becomes
// f.Hub) or "hub/2" on its own address (Options.SecondNodes), with
// ConfigOf[site] when set, until halted or the test ends.
func (f *Federation) StartHubNode(site string) {
	t := f.T
	t.Helper()
	cfg := f.Cfg
	if c, ok := f.ConfigOf[site]; ok {
		cfg = c
	}
	h, err := hubserver.New(context.Background(), cfg, hubserver.Options{Prefix: f.RedisPrefix, RP: f.opts.Federation.RP}, f.Telemetry("hub"))
	if err != nil {
		t.Fatal(err)
	}
	listen := cfg.Hub.Listen
	if site == "hub" {
		f.Hub = h
	} else {
		listen = SiteAddr(site, f.Port)
	}
	f.serve(site, listen, func(ctx context.Context, ln net.Listener) { _ = h.ServeListeners(ctx, ln, nil); h.Close() }, h.Close)
}

// serve runs run on a listener on addr until Halt(site) or the test's end.
func (f *Federation) serve(site, addr string, run func(context.Context, net.Listener), closeFn func() error) {
	t := f.T
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = closeFn()
		t.Fatal(err)
	}
	if f.accepts[site] == nil {
		f.accepts[site] = new(atomic.Int64)
	}
	ln = countingListener{ln, f.accepts[site]}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { run(ctx, ln); close(done) }()
	stopped := false
	f.stop[site] = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	stop := f.stop[site]
	t.Cleanup(stop)
}

// Dialed is how many requests the nodes' routers and back channels sent
// to addr (host:port).
func (f *Federation) Dialed(addr string) int64 {
	if c, ok := f.dialsTo.Load(addr); ok {
		return c.(*atomic.Int64).Load()
	}
	return 0
}

// Accepted is how many connections site's listeners have accepted.
func (f *Federation) Accepted(site string) int64 {
	if c := f.accepts[site]; c != nil {
		return c.Load()
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

// Halt stops a site ("eu", "eu/dr", "eu/2", "hub", "hub/2") and waits until its listener is
// closed.
func (f *Federation) Halt(site string) { f.stop[site]() }

// At returns a client whose view of DNS sends the global host to site
// entry (as GeoDNS would) and every other federation host to its own
// address (or to its entry in Hosts), and the global base URL.
func (f *Federation) At(entry string) (*http.Client, string) {
	res := oidctest.NewResolver(map[string]string{"id.localhost": SiteIP(entry), "hub.id.localhost": SiteIP("hub")})
	for _, id := range Regions {
		res.Set(id+".id.localhost", SiteIP(id))
	}
	for h, ip := range f.Hosts {
		res.Set(h, ip)
	}
	c := res.Client()
	c.Timeout = 30 * time.Second
	return c, f.Cfg.GlobalIssuer()
}

// Codec is the federation's routing codec.
func (f *Federation) Codec() *routing.Codec {
	c, err := node.Codec(f.Cfg, f.Cfg.DataDir, Discard())
	if err != nil {
		f.T.Fatal(err)
	}
	return c
}

// Keyring is party self's federation identity in this federation (the
// development keys under its data_dir).
func (f *Federation) Keyring(self string) *federation.Keyring {
	kr, err := setup.Keyring(f.Cfg, f.Cfg.DataDir, self, Discard())
	if err != nil {
		f.T.Fatal(err)
	}
	return kr
}

// Client registers a confidential first-party client in region id
// (redirect AppRedirect, scopes introspect and dereference).
func (f *Federation) Client(id string, grants ...string) region.RegisteredClient {
	c, err := region.CreateClient(context.Background(), f.Nodes[id].Store, f.Codec(), id, region.ClientSpec{Name: "app-" + id,
		RedirectURIs: []string{AppRedirect}, FirstParty: true, GrantTypes: grants,
		Scopes: []string{region.ScopeIntrospect, region.ScopeDereference}})
	if err != nil {
		f.T.Fatal(err)
	}
	return c
}

// User creates name (password "password-<name>") in region id.
func (f *Federation) User(id, name string) {
	if _, err := region.CreateUser(context.Background(), f.Nodes[id].Store, region.UserSpec{Username: name,
		Password: "password-" + name, Claims: map[string]string{"name": name}}); err != nil {
		f.T.Fatal(err)
	}
}

// AuthURL is an authorization request for app through the global host at
// base (PKCE S256 of verifier, state "st").
func AuthURL(base string, app region.RegisteredClient, verifier string) string {
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {AppRedirect},
		"scope": {"openid profile offline_access"}, "state": {"st"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	return base + "/authorize?" + q.Encode()
}

// LoginRedirect signs name in to app through the global host as served by
// entry and returns the authorization response (the redirect to the app).
func (f *Federation) LoginRedirect(entry string, app region.RegisteredClient, name, verifier string) *url.URL {
	c, base := f.At(entry)
	b := oidctest.NewBrowser(f.T, c.Transport)
	return b.Login(AuthURL(base, app, verifier), AppRedirect, name, "password-"+name)
}

// Login is LoginRedirect's authorization code; it fails the test when
// there is none.
func (f *Federation) Login(entry string, app region.RegisteredClient, name, verifier string) string {
	loc := f.LoginRedirect(entry, app, name, verifier)
	code := loc.Query().Get("code")
	if code == "" {
		f.T.Fatalf("login of %s via %s: no code in %s", name, entry, loc)
	}
	return code
}

// Tokens logs name in via entry and redeems the code at entry.
func (f *Federation) Tokens(entry string, app region.RegisteredClient, name string) map[string]any {
	v := oauth2.GenerateVerifier()
	code := f.Login(entry, app, name, v)
	s, oe, tok := f.Token(entry, app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {AppRedirect}, "code_verifier": {v}})
	if s != 200 {
		f.T.Fatalf("code redemption via %s: %d %+v", entry, s, oe)
	}
	return tok
}

// Token posts form to /oauth/token through entry with app's credentials.
func (f *Federation) Token(entry string, app region.RegisteredClient, form url.Values) (int, oidctest.OAuthError, map[string]any) {
	c, base := f.At(entry)
	return oidctest.PostForm(f.T, c, base+"/oauth/token", form, app.ID, app.Secret)
}

// Introspect asks entry about token with caller's credentials.
func (f *Federation) Introspect(entry string, caller region.RegisteredClient, token string) (int, map[string]any) {
	c, base := f.At(entry)
	s, _, m := oidctest.PostForm(f.T, c, base+"/oauth/introspect", url.Values{"token": {token}}, caller.ID, caller.Secret)
	return s, m
}

// openMeshLookup opens the lookup store the regions of a mesh share: on
// Redis under the test's prefix (Options.Redis), else embedded.
func (f *Federation) openMeshLookup() lookup.Store {
	t := f.T
	ctx := context.Background()
	if f.opts.Redis {
		rs, err := redisstore.New(ctx, testenv.RedisClient(t), redisstore.Options{Prefix: f.RedisPrefix + "lookup:", BucketBits: redisstore.MinBucketBits})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rs.Drop(context.Background()) })
		return rs
	}
	es, err := embedded.Open(ctx, filepath.Join(t.TempDir(), "lookup.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { es.Close() })
	return es
}

// Lookup is the lookup store: the running hub's, or the one the regions of
// a mesh share (nil in hub topology while no hub runs).
func (f *Federation) Lookup() lookup.Store {
	if f.mesh != nil {
		return f.mesh
	}
	if f.Hub != nil {
		return f.Hub.Stores.Lookup
	}
	return nil
}

// Hasher computes the federation's lookup keys (k_hub under data_dir).
func (f *Federation) Hasher() *lookup.Hasher {
	h, err := hubserver.Hasher(f.Cfg, hubserver.Options{}, "", Discard())
	if err != nil {
		f.T.Fatal(err)
	}
	return h
}

// Table is the lookup table on Lookup.
func (f *Federation) Table() *lookup.Table {
	tb, err := lookup.NewTable(f.Hasher(), f.Lookup())
	if err != nil {
		f.T.Fatal(err)
	}
	return tb
}

// Database is where region id's primary keeps its data: its database URL,
// or the SQLite file under data_dir.
func (f *Federation) Database(id string) string {
	r, _ := f.Cfg.Region(id)
	if r.Database != "" {
		return r.Database
	}
	return filepath.Join(f.Cfg.DataDir, id, "meridian.db")
}

// Notify wakes region id's outbox pusher (after a user change made
// directly in its store).
func (f *Federation) Notify(id string) {
	if m := f.Nodes[id].Member(); m != nil {
		m.Pusher.Notify()
	}
}

// HTTPClient is an HTTP client resolving through f.Resolver that does not
// follow redirects (a back channel, or a relying party's client).
func (f *Federation) HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: f.Resolver.DialContext, DisableKeepAlives: true}, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
