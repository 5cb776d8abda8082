package routing

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// countingUpstream serves h and counts the connections made to it.
func countingUpstream(t *testing.T, h http.Handler) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	conns := new(atomic.Int64)
	up := httptest.NewUnstartedServer(h)
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.Start()
	t.Cleanup(up.Close)
	return up, conns
}

// TestHopConnections: routed calls reuse one persistent connection, and a
// connection the upstream closed while idle is never used for a call (no
// spurious failure, nothing counted against the breaker).
func TestHopConnections(t *testing.T) {
	up, conns := countingUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("eu"))
	}))
	f := newFixture(t, func(c *RouterConfig) {
		c.Peers[0].Addr = up.Listener.Addr().String()
		c.BreakerThreshold = 1
	})
	srv, _ := routerServer(t, f.router)
	tok := f.mint(t, KindAccess, "eu")
	call := func() {
		t.Helper()
		resp, err := introspect(context.Background(), srv.URL, tok, false)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "eu" {
			t.Fatalf("status %d body %q", resp.StatusCode, b)
		}
	}
	for i := 0; i < 20; i++ {
		call()
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("20 sequential routed calls opened %d upstream connections, want 1", n)
	}
	for i := 0; i < 3; i++ {
		up.CloseClientConnections() // the upstream drops its idle connections
		waitFor(t, "the upstream to close its connections", func() bool {
			// alive() sees the close once the FIN arrived.
			pc := f.router.transport.(*counting).next.(*connTransport)
			pc.mu.Lock()
			defer pc.mu.Unlock()
			for _, l := range pc.idle {
				for _, c := range l {
					if alive(c) {
						return false
					}
				}
			}
			return true
		})
		call() // a breaker threshold of 1: any spurious failure would open it
	}
	if f.router.ups["eu"].breakers[up.Listener.Addr().String()].open(time.Now()) {
		t.Fatal("breaker open after the upstream closed idle connections")
	}
}

// TestHopTLS: an upstream reached over TLS is verified against the
// configured roots, and one connection serves many calls (their answers
// polled for on the raw socket beneath TLS).
func TestHopTLS(t *testing.T) {
	var conns atomic.Int64
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write([]byte("eu"))
	}))
	up.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	up.StartTLS()
	t.Cleanup(up.Close)
	tests := []struct {
		name   string
		trust  bool
		status int
	}{
		{"trusted upstream", true, 200},
		{"untrusted certificate", false, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *RouterConfig) {
				c.Peers[0].Addr, c.Peers[0].TLS = up.Listener.Addr().String(), true
				c.HopPoll = 50 * time.Millisecond // answers polled on the raw socket under TLS
				if tt.trust {
					c.TLSConfig = up.Client().Transport.(*http.Transport).TLSClientConfig
				}
			})
			srv, _ := routerServer(t, f.router)
			tok := f.mint(t, KindAccess, "eu")
			before := conns.Load()
			for i := 0; i < 5; i++ {
				resp, err := introspect(context.Background(), srv.URL, tok, false)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
				}
			}
			if tt.trust && conns.Load()-before != 1 {
				t.Fatalf("5 calls opened %d TLS connections, want 1", conns.Load()-before)
			}
			if n := f.out.next.(*connTransport).polled.Load(); tt.trust && n == 0 {
				t.Fatal("no call polled its TLS connection")
			}
		})
	}
}

// TestHopPoll: a call polls its connection for the answer only while it
// is the only call in flight and its address answered within the poll
// bound lately: calls to a nearby upstream poll, calls to one that takes
// longer stop polling after a few answers (and all answers are right),
// and a call made while another is in flight never polls.
func TestHopPoll(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Query().Get("do") {
		case "slow":
			time.Sleep(3 * time.Millisecond)
		case "hold":
			<-release
		}
		_, _ = w.Write([]byte("eu:" + r.URL.Query().Get("do")))
	}))
	t.Cleanup(up.Close)
	ct := newConnTransport(time.Second, nil)
	// A bound far above any loopback answer where calls must poll, one
	// below the slow answers where they must stop: the test holds on a
	// loaded machine (a late answer only ends a poll early).
	const near, far = 50 * time.Millisecond, time.Millisecond
	ct.poll = near
	t.Cleanup(ct.CloseIdleConnections)
	call := func(do string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, up.URL+"/?do="+do, nil)
		resp, err := ct.RoundTrip(req)
		if err != nil {
			t.Error(err)
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "eu:"+do {
			t.Errorf("answer %q (%v), want eu:%s", b, err, do)
		}
	}
	ct.poll = 0 // federation.hop_poll: 0
	call("fast")
	if n := ct.polled.Load(); n != 0 {
		t.Fatalf("%d calls polled with polling off", n)
	}
	ct.poll = near
	for range 5 {
		call("fast")
	}
	if n := ct.polled.Load(); n != 5 {
		t.Fatalf("%d of 5 calls to a nearby upstream polled", n)
	}
	ct.poll = far
	for range 20 {
		call("slow") // 3 ms > the 1 ms bound: the average passes it within a few calls
	}
	p0 := ct.polled.Load()
	for range 5 {
		call("slow")
	}
	if n := ct.polled.Load() - p0; n != 0 {
		t.Fatalf("%d calls polled for an upstream that answers in 3 ms or more (bound 1 ms)", n)
	}
	ct.poll = near
	for range 40 {
		call("fast") // the average comes back under the bound
	}
	p0 = ct.polled.Load()
	call("fast")
	if ct.polled.Load() != p0+1 {
		t.Fatal("a nearby upstream's calls did not poll again once its answers were fast again")
	}
	ct.polled.Store(0)
	held := make(chan struct{})
	go func() { defer close(held); call("hold") }()
	for ct.inflight.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	for range 3 {
		call("fast")
	}
	close(release)
	<-held
	// The held call itself may have polled (it was alone at first); the
	// three made while it was in flight did not.
	if n := ct.polled.Load(); n > 1 {
		t.Fatalf("%d calls polled while another call was in flight", n)
	}
}
