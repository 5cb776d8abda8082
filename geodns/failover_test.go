package geodns

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// readySite is a /readyz server on one loopback address that the test stops
// and starts again on the same address, and that records the Host header of
// each check.
type readySite struct {
	t    *testing.T
	addr string // ip:port
	mu   sync.Mutex
	srv  *http.Server
	host string // last Host header seen
}

func (r *readySite) start() {
	r.t.Helper()
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		r.t.Fatalf("listen %s: %v", r.addr, err)
	}
	r.serve(ln)
}

func (r *readySite) serve(ln net.Listener) {
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.host = req.Host
		r.mu.Unlock()
		if req.URL.Path != "/readyz" {
			http.NotFound(w, req)
		}
	})}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (r *readySite) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	_ = r.srv.Close()
}

func (r *readySite) lastHost() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.host
}

// readySites starts /readyz servers on the given loopback addresses, all on
// one port (as the nodes of one site listen on the same port), and returns
// them with that port.
func readySites(t *testing.T, ips ...string) ([]*readySite, string) {
	t.Helper()
	for range 20 {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(first.Addr().String())
		lns := []net.Listener{first}
		for _, ip := range ips[1:] {
			ln, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				break // the port is taken on that address: pick another
			}
			lns = append(lns, ln)
		}
		if len(lns) < len(ips) {
			for _, ln := range lns {
				_ = ln.Close()
			}
			continue
		}
		sites := make([]*readySite, len(ips))
		for i, ln := range lns {
			sites[i] = &readySite{t: t, addr: ln.Addr().String()}
			sites[i].serve(ln)
			t.Cleanup(sites[i].stop)
		}
		return sites, port
	}
	t.Fatalf("no common free port on %v", ips)
	return nil, ""
}

// multiAddrConfig gives eu two primary addresses (127.0.0.51, .52) and one
// DR address (127.0.0.53), each checked at its own /readyz; the state file
// is under dir.
func multiAddrConfig(primaryPort, drPort, dir string) Config {
	c := testConfig()
	a := netip.MustParseAddr
	c.Regions[0].Host.Addrs = []netip.Addr{a("127.0.0.51"), a("127.0.0.52")}
	c.Regions[0].DR.Addrs = []netip.Addr{a("127.0.0.53")}
	c.Regions[0].HealthURL = "http://eu.id.localhost:" + primaryPort + "/readyz"
	c.Regions[0].DRHealthURL = "http://eu-dr.id.localhost:" + drPort + "/readyz"
	c.Health = HealthConfig{Interval: time.Hour, Timeout: 2 * time.Second, Fall: 1, Rise: 1}
	c.StateFile = filepath.Join(dir, StateFileName)
	return c
}

// TestServerEveryAddressAndNoFailback runs real /readyz servers on
// 127.0.0.51 and .52 (eu's primary) and .53 (eu's DR site) and asks a
// served GeoDNS over UDP and TCP with a miekg/dns client:
//
//   - one primary address stops: eu keeps answering with the other;
//   - both stop: eu is failed over to the DR site;
//   - both come back: eu stays on the DR site, also across a GeoDNS
//     restart (state file);
//   - an operator fails eu back over the admin endpoint: the primary
//     answers again.
func TestServerEveryAddressAndNoFailback(t *testing.T) {
	primary, pport := readySites(t, "127.0.0.51", "127.0.0.52")
	dr, drport := readySites(t, "127.0.0.53")
	dir := t.TempDir()
	cfg := multiAddrConfig(pport, drport, dir)
	meter := newRecMeter()
	srv, dnsAddr := startServerMeter(t, cfg, meter)
	ctx := context.Background()

	regionHost := query("eu.id.localhost.", dns.TypeA)
	global := query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24"))
	drHost := query("eu-dr.id.localhost.", dns.TypeA)
	expectAt := func(addr, step string, want ...string) {
		t.Helper()
		for _, network := range []string{"udp", "tcp"} {
			for _, m := range []*dns.Msg{regionHost, global} {
				r := exchange(t, network, addr, m.Copy())
				if got := addrs(r.Answer); !slices.Equal(got, want) {
					t.Fatalf("%s: %s %s answered %v, want %v", step, network, m.Question[0].Name, got, want)
				}
			}
		}
	}
	expect := func(step string, want ...string) { t.Helper(); expectAt(dnsAddr, step, want...) }
	gauge := func(key string) int64 { return meter.observe()[key] }

	srv.Health().CheckOnce(ctx)
	expect("all healthy", "127.0.0.51", "127.0.0.52")
	if got := addrs(exchange(t, "udp", dnsAddr, drHost.Copy()).Answer); !slices.Equal(got, []string{"127.0.0.53"}) {
		t.Fatalf("DR host: %v", got)
	}
	// Each address was dialled with the site's host name as Host header.
	for _, s := range primary {
		if h := s.lastHost(); h != "eu.id.localhost:"+pport {
			t.Fatalf("check of %s sent Host %q", s.addr, h)
		}
	}
	if h := dr[0].lastHost(); h != "eu-dr.id.localhost:"+drport {
		t.Fatalf("DR check sent Host %q", h)
	}

	primary[0].stop()
	srv.Health().CheckOnce(ctx)
	expect("127.0.0.51 stopped", "127.0.0.52")
	if g := gauge("geodns.upstream.up{address=127.0.0.51,region=eu,site=primary}"); g != 0 {
		t.Errorf("gauge of the stopped address = %d, want 0", g)
	}
	if g := gauge("geodns.upstream.up{address=127.0.0.52,region=eu,site=primary}"); g != 1 {
		t.Errorf("gauge of the live address = %d, want 1", g)
	}
	if g := gauge("geodns.region.failed_over{region=eu}"); g != 0 {
		t.Errorf("failed_over with one primary address up = %d, want 0", g)
	}

	primary[1].stop()
	srv.Health().CheckOnce(ctx)
	expect("both primary addresses stopped", "127.0.0.53")
	if g := gauge("geodns.region.failed_over{region=eu}"); g != 1 {
		t.Errorf("failed_over = %d, want 1", g)
	}
	if n := meter.sum("geodns.region.failovers{action=failover,region=eu}"); n != 1 {
		t.Errorf("failovers = %d, want 1", n)
	}

	primary[0].start()
	primary[1].start()
	for range 3 {
		srv.Health().CheckOnce(ctx)
	}
	if !srv.Health().Snapshot().Up(Target{Region: "eu"}) {
		t.Fatal("primary not seen up again")
	}
	expect("primary back: no automatic failback", "127.0.0.53")

	// A restart reads the state file: still the DR site, before any check
	// and after.
	srv2, dnsAddr2 := startServerMeter(t, cfg, nil)
	expectAt(dnsAddr2, "restarted, before a check", "127.0.0.53")
	srv2.Health().CheckOnce(ctx)
	expectAt(dnsAddr2, "restarted, primary healthy", "127.0.0.53")

	admin := httptest.NewServer(srv2.AdminHandler())
	t.Cleanup(admin.Close)
	// Without the JSON content type (what a cross-site form could send),
	// nothing happens.
	resp, err := http.Post(admin.URL+"/dns/failback/eu", "application/x-www-form-urlencoded", strings.NewReader("x=1"))
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("form POST: %d, want 415", resp.StatusCode)
	}
	expectAt(dnsAddr2, "after a refused failback", "127.0.0.53")

	rs, err := RequestFailback(ctx, nil, admin.URL, "eu")
	if err != nil {
		t.Fatalf("failback: %v", err)
	}
	if rs.FailedOver || len(rs.Addresses) != 3 {
		t.Fatalf("failback reply: %+v", rs)
	}
	expectAt(dnsAddr2, "operator failback", "127.0.0.51", "127.0.0.52")
	if b, err := os.ReadFile(cfg.StateFile); err != nil || strings.Contains(string(b), `"eu"`) {
		t.Fatalf("state file after failback: %q %v", b, err)
	}
	if _, err := RequestFailback(ctx, nil, admin.URL, "eu"); err == nil || !strings.Contains(err.Error(), "not failed over") {
		t.Fatalf("second failback: %v", err)
	}
	if _, err := RequestFailback(ctx, nil, admin.URL, "ap"); err == nil || !strings.Contains(err.Error(), "HTTP 404") {
		t.Fatalf("failback of a region without DR: %v", err)
	}

	// Primary down again: failed over again, and a failback is refused
	// while no primary address is up.
	primary[0].stop()
	primary[1].stop()
	srv2.Health().CheckOnce(ctx)
	expectAt(dnsAddr2, "second outage", "127.0.0.53")
	if err := srv2.Health().Failback(ctx, "eu"); !errors.Is(err, ErrPrimaryDown) {
		t.Fatalf("failback with the primary down: %v", err)
	}
}

// startServerMeter is startServer with a meter (nil: no-op).
func startServerMeter(t *testing.T, cfg Config, meter *recMeter) (*Server, string) {
	t.Helper()
	var s *Server
	var err error
	if meter == nil {
		s, err = New(cfg, nil, nil)
	} else {
		s, err = New(cfg, nil, meter)
	}
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pc, ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = s.Serve(ctx, pc, ln); close(done) }()
	t.Cleanup(func() { cancel(); <-done; _ = s.Close() })
	return s, pc.LocalAddr().String()
}

// TestStateFile: a missing file is no failover, an unreadable one stops the
// start (ignoring it would fail regions back), a region without a DR site is
// ignored.
func TestStateFile(t *testing.T) {
	dir := t.TempDir()
	cfg := multiAddrConfig("1", "2", dir)
	if c, err := NewChecker(cfg, nil, nil); err != nil || c.Snapshot().FailedOver("eu") {
		t.Fatalf("missing file: %v", err)
	}
	write := func(s string) {
		if err := os.WriteFile(cfg.StateFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(`{"failed_over":["eu","ap","mars"]}`)
	c, err := NewChecker(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	snap := c.Snapshot()
	if !snap.FailedOver("eu") || snap.FailedOver("ap") || snap.FailedOver("mars") {
		t.Fatalf("failed over: eu=%v ap=%v mars=%v", snap.FailedOver("eu"), snap.FailedOver("ap"), snap.FailedOver("mars"))
	}
	write(`{"failed_over":`)
	if _, err := NewChecker(cfg, nil, nil); err == nil || !strings.Contains(err.Error(), "unreadable") {
		t.Fatalf("corrupt file: %v", err)
	}
	if err := os.Remove(cfg.StateFile); err != nil {
		t.Fatal(err)
	}
	// Writes go through a temporary file and a rename.
	if err := saveState(cfg.StateFile, state{FailedOver: []string{"eu"}}); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(cfg.StateFile)
	if err != nil || !slices.Equal(st.FailedOver, []string{"eu"}) {
		t.Fatalf("round trip: %+v %v", st, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("left over files: %v", entries)
	}
}
