package node_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// TestRoutingKeyRotationNodeByNode follows docs/operations.md's routing-key
// rotation on a running three-region federation and its hub the way an
// operator runs it: every site (eu, us, ap and the hub) has two nodes
// behind its load balancer, and every node, one at a time, is drained
// (SIGTERM: /readyz fails, the balancer takes it out, it keeps serving for
// federation.drain_period), restarted with the step's key ring and put
// back once ready, while background workers run continuously through
// every region: routed authorization, code redemption, introspection (also
// by a client of another region), userinfo and refresh calls, and
// cross-region sign-ins through the hub (a user resident in another region
// signs in at each app, the code is redeemed, userinfo is fetched from the
// user's home). Every call of every worker over the whole rotation must
// succeed — zero failures — for clients registered before the rotation
// and during it. After the old key retires, every one of those clients
// still works and cross-region sign-ins still succeed.
//
// The hub names itself to each region by a client id derived from the
// routing key it signs with; regions register the id of every key in
// their ring (federation.HubClientIDs), which is what lets a hub and a
// region on different steps still federate.
func TestRoutingKeyRotationNodeByNode(t *testing.T) {
	dir := t.TempDir()
	keyFile := func(name string) (string, []byte) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, b
	}
	oldFile, oldKey := keyFile("routing-old.key")
	newFile, newKey := keyFile("routing-new.key")
	ids := []string{"eu", "us", "ap"}
	warnings := &warnLog{}
	// Concurrent sign-ins (argon2id) on a shared CI machine can take
	// longer than the harness's 5 s per proxied step; a deadline is not
	// what this test is about. Two hub nodes share their state on Redis.
	f := fedtest.Start(t, fedtest.Options{RequestTimeout: 30 * time.Second, Redis: true,
		SecondNodes: []string{"eu", "us", "ap", "hub"},
		Telemetry:   warnings.telemetry,
		Configure: func(c *config.Config) {
			c.Federation.RoutingKeyFile = oldFile
			c.Federation.DrainPeriod = rotationDrain
		}})
	startHub(f, f.Cfg)
	f.ConfigOf["hub/2"] = f.Cfg
	f.Start("hub/2")
	hub := &hubNode{f: f}

	register := func(id string, cfg *config.Config) region.RegisteredClient {
		codec, err := node.Codec(cfg, cfg.DataDir, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		c, err := region.CreateClient(t.Context(), f.Nodes[id].Store, codec, id, region.ClientSpec{Name: "app-" + id,
			RedirectURIs: []string{fedtest.AppRedirect}, FirstParty: true, Scopes: []string{region.ScopeIntrospect}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var apps appSet
	for _, id := range ids {
		f.User(id, "user-"+id)
		apps.add(register(id, f.Cfg))
	}
	hub.reconcile()

	lb := newBalancer(f)
	load := startLoad(t, f, lb, &apps)

	phases := []struct {
		name string
		ring []config.RoutingKey
	}{
		{"phase 1 (old signs, new verifies)", []config.RoutingKey{{File: oldFile, Use: "sign"}, {File: newFile, Use: "verify"}}},
		{"phase 2 (new signs, old verifies)", []config.RoutingKey{{File: newFile, Use: "sign"}, {File: oldFile, Use: "verify"}}},
		{"phase 3 (old retired)", []config.RoutingKey{{File: newFile, Use: "sign"}, {File: oldFile, Use: "clients"}}},
	}
	for _, p := range phases {
		cfg := *f.Cfg
		cfg.Federation.RoutingKeyFile = ""
		cfg.Federation.RoutingKeys = p.ring
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		// Every node, one at a time; the hub's nodes move between
		// regions' so that each step runs both ahead of and behind them.
		for _, site := range []string{"eu", "eu/2", "hub", "hub/2", "us", "us/2", "ap", "ap/2"} {
			lb.roll(site, &cfg)
			load.await(2) // every worker completes rounds with this mix
		}
		if p.name == phases[0].name {
			// Clients registered mid-rotation carry m2 ids naming the old key.
			for _, id := range ids {
				apps.add(register(id, &cfg))
			}
			load.await(2)
		}
	}
	// The old key is retired: every client, old and new, keeps working.
	load.await(2)
	calls, signIns, failures := load.stop()
	for _, err := range failures {
		t.Error(err)
	}
	if len(failures) > 0 {
		t.Logf("the nodes' warnings:\n%s", warnings.String())
	}
	wantIDs := map[string]int{routing.KeyID(oldKey): 3, "": 3}
	for _, app := range apps.all() {
		tag, _ := routing.Parse(app.ID)
		wantIDs[tag.KeyID]--
	}
	if wantIDs[routing.KeyID(oldKey)] != 0 || wantIDs[""] != 0 || bytes.Equal(oldKey, newKey) {
		t.Fatalf("client ids by key: %v", wantIDs)
	}
	t.Logf("%d routed calls and %d cross-region sign-ins, run continuously through 24 rolling node restarts (2 nodes per site), %d failures",
		calls, signIns, len(failures))
}

// rotationDrain is federation.drain_period in the rotation tests: long
// enough for the test's load balancer to see /readyz fail and take the
// node out before it stops accepting.
const rotationDrain = 2 * time.Second

// warnLog collects the warnings of every node (routed calls that failed,
// rejected answers) to explain a failure.
type warnLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (w *warnLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !bytes.Contains(p, []byte("development secret")) {
		w.b.Write(p)
	}
	return len(p), nil
}

func (w *warnLog) String() string { w.mu.Lock(); defer w.mu.Unlock(); return w.b.String() }

// telemetry records nothing but site's warnings.
func (w *warnLog) telemetry(site string) *telemetry.Telemetry {
	tel := fedtest.QuietTelemetry()
	tel.Log = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn})).With("site", site)
	return tel
}

// appSet is the registered apps, grown while workers read it.
type appSet struct {
	mu   sync.Mutex
	apps []region.RegisteredClient
}

func (s *appSet) add(a region.RegisteredClient) {
	s.mu.Lock()
	s.apps = append(s.apps, a)
	s.mu.Unlock()
}

func (s *appSet) all() []region.RegisteredClient {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.apps)
}

// balancer stands in for each site's load balancer (or GeoDNS) in front
// of its two nodes: it spreads new connections over the nodes in rotation
// and takes a node out when its /readyz fails, as a health check does.
// Clients connect anew for every request (no keep-alive), as they reach a
// balancer that owns the connections to the nodes. Each client (a user's
// browser or an app) connects from an address of its own in 127.1/16, as
// users do from theirs: the hub's per-address login limits are not what
// this test is about.
type balancer struct {
	f    *fedtest.Federation
	mu   sync.Mutex
	out  map[string]bool // node sites ("eu/2") out of rotation
	next atomic.Uint64
}

func newBalancer(f *fedtest.Federation) *balancer {
	return &balancer{f: f, out: map[string]bool{}}
}

// ip is the address of a node in rotation of site ("eu", "hub").
func (b *balancer) ip(site string) string {
	nodes := []string{site, site + "/2"}
	b.mu.Lock()
	nodes = slices.DeleteFunc(nodes, func(n string) bool { return b.out[n] })
	b.mu.Unlock()
	return fedtest.SiteIP(nodes[int(b.next.Add(1))%len(nodes)])
}

// client is a user agent (browser or relying party) whose global host is
// served by region entry.
func (b *balancer) client(entry string) (*http.Client, string) {
	n := b.next.Add(1)
	src := &net.TCPAddr{IP: net.IPv4(127, 1, byte(n>>8), byte(n))}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		site := entry
		if h, ok := strings.CutSuffix(host, ".id.localhost"); ok {
			site = h
		}
		d := net.Dialer{LocalAddr: src}
		return d.DialContext(ctx, network, net.JoinHostPort(b.ip(site), port))
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}, Timeout: 90 * time.Second},
		b.f.Cfg.GlobalIssuer()
}

// ready is node's public /readyz answer (0 when it does not answer).
func (b *balancer) ready(node string) int {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + fedtest.SiteAddr(node, b.f.Port) + "/readyz")
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// roll restarts node with cfg the way an operator does behind a load
// balancer: SIGTERM (the node fails /readyz and drains), the balancer
// takes it out once /readyz fails, the process exits, the node starts with
// the new config and goes back into rotation once /readyz passes.
func (b *balancer) roll(node string, cfg *config.Config) {
	t := b.f.T
	t.Helper()
	stopped := make(chan struct{})
	go func() { b.f.Halt(node); close(stopped) }()
	fedtest.Eventually(t, node+"'s /readyz to fail", func() bool { return b.ready(node) != http.StatusOK })
	b.mu.Lock()
	b.out[node] = true
	b.mu.Unlock()
	<-stopped
	b.f.ConfigOf[node] = cfg
	b.f.Start(node)
	fedtest.Eventually(t, node+"'s /readyz to pass", func() bool { return b.ready(node) == http.StatusOK })
	b.mu.Lock()
	delete(b.out, node)
	b.mu.Unlock()
}

// load is the background workers of a rotation test.
type load struct {
	t        testing.TB
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	rounds   []atomic.Int64 // per worker
	calls    atomic.Int64
	signIns  atomic.Int64
	mu       sync.Mutex
	failures []error
}

// startLoad runs, until stop, one worker per region making routed calls
// and one per region signing users in across regions, every request
// through lb.
func startLoad(t testing.TB, f *fedtest.Federation, lb *balancer, apps *appSet) *load {
	ids := []string{"eu", "us", "ap"}
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, cancel: cancel, rounds: make([]atomic.Int64, 2*len(ids))}
	home := func(app region.RegisteredClient) string { tag, _ := routing.Parse(app.ID); return tag.Region }
	for w := range 2 * len(ids) {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := w; ctx.Err() == nil; i++ {
				all := apps.all()
				app := all[i%len(all)]
				h := slices.Index(ids, home(app))
				if w < len(ids) {
					l.fail(failed(t, func(t testing.TB) { l.routed(t, lb, ids, h, i, app, all) }))
				} else {
					resident, entry := ids[(h+1)%len(ids)], ids[(h+2)%len(ids)]
					if i%2 == 1 {
						entry = ids[h] // also through the app's own region
					}
					l.signIns.Add(1)
					l.fail(failed(t, func(t testing.TB) {
						c, base := lb.client(entry)
						m, err := signInVia(t, c, base, app, "user-"+resident)
						if err != nil {
							t.Fatalf("%v", err)
						}
						if sub, _ := m["sub"].(string); m["name"] != "user-"+resident || !strings.HasPrefix(sub, "fed."+resident+".") {
							t.Fatalf("cross-region sign-in of user-%s at %s via %s: userinfo %v", resident, app.ID, entry, m)
						}
					}))
				}
				l.rounds[w].Add(1)
			}
		}()
	}
	return l
}

// routed runs an authorization for app's own user through a region other
// than its home, redeems the code through a third, introspects the token
// through every region (by app and by a client of another region), asks
// every region for userinfo and refreshes the token.
func (l *load) routed(t testing.TB, lb *balancer, ids []string, h, i int, app region.RegisteredClient, all []region.RegisteredClient) {
	entry, redeem := ids[(h+1)%len(ids)], ids[(h+2)%len(ids)]
	if i%2 == 1 {
		entry, redeem = redeem, entry
	}
	c, base := lb.client(entry)
	verifier := oauth2.GenerateVerifier()
	loc := oidctest.NewBrowser(t, c.Transport).Login(fedtest.AuthURL(base, app, verifier), fedtest.AppRedirect, "user-"+ids[h], "password-user-"+ids[h])
	l.calls.Add(1)
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("authorize for %s via %s: %s", app.ID, entry, loc)
	}
	rc, rbase := lb.client(redeem)
	s, oe, tok := oidctest.PostForm(t, rc, rbase+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}}, app.ID, app.Secret)
	l.calls.Add(1)
	if s != http.StatusOK {
		t.Fatalf("code of %s redeemed via %s: %d %+v", app.ID, redeem, s, oe)
	}
	at := tok["access_token"].(string)
	for _, e := range ids {
		ec, ebase := lb.client(e)
		for _, caller := range []region.RegisteredClient{app, all[(i+1)%len(all)]} {
			s, _, m := oidctest.PostForm(t, ec, ebase+"/oauth/introspect", url.Values{"token": {at}}, caller.ID, caller.Secret)
			l.calls.Add(1)
			if s != http.StatusOK || m["active"] != true {
				t.Fatalf("introspection of %s's token via %s by %s: %d %v", app.ID, e, caller.ID, s, m)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, ebase+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+at)
		resp, err := ec.Do(req)
		l.calls.Add(1)
		if err != nil {
			t.Fatalf("userinfo via %s: %v", e, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("userinfo of %s's token via %s: %d", app.ID, e, resp.StatusCode)
		}
	}
	s, oe, _ = oidctest.PostForm(t, c, base+"/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}},
		app.ID, app.Secret)
	l.calls.Add(1)
	if s != http.StatusOK {
		t.Fatalf("refresh of %s via %s: %d %+v", app.ID, entry, s, oe)
	}
}

func (l *load) fail(err error) {
	if err != nil {
		l.mu.Lock()
		l.failures = append(l.failures, fmt.Errorf("%s: %w", time.Now().Format("15:04:05.000"), err))
		l.mu.Unlock()
	}
}

// await returns once every worker has completed n more rounds.
func (l *load) await(n int64) {
	want := make([]int64, len(l.rounds))
	for i := range l.rounds {
		want[i] = l.rounds[i].Load() + n
	}
	fedtest.EventuallyWithin(l.t, 5*time.Minute, "the workers' rounds", func() bool {
		for i := range l.rounds {
			if l.rounds[i].Load() < want[i] {
				return false
			}
		}
		return true
	})
}

// stop ends the workers and returns what they did.
func (l *load) stop() (calls, signIns int64, failures []error) {
	l.cancel()
	l.wg.Wait()
	return l.calls.Load(), l.signIns.Load(), l.failures
}

// failed runs fn with a testing.TB whose failures end fn and are
// returned instead of failing the test, so a worker goroutine counts
// them and goes on.
func failed(t testing.TB, fn func(testing.TB)) (err error) {
	r := &recorder{TB: t}
	defer func() {
		if p := recover(); p != nil && p != r {
			panic(p)
		}
		err = r.err
	}()
	fn(r)
	return r.err
}

// recorder is a testing.TB that records its first failure and unwinds on
// Fatal.
type recorder struct {
	testing.TB
	err error
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}
func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	panic(r)
}
func (r *recorder) Fatal(args ...any) { r.Error(args...); panic(r) }
func (r *recorder) FailNow() {
	if r.err == nil {
		r.err = errors.New("failed")
	}
	panic(r)
}
