package routing

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/serve"
)

// TestRefusedByShuttingDownNode plays the node that shuts down while a
// router holds a kept connection to it: the router's next call, a code
// redemption (never repeated once a node may have run it), is sent on
// that connection after the node stopped taking calls. The node refuses
// it (503, serve.RefusedHeader) without running it, and the router sends
// it to the site's other node. A 503 without the header is an answer like
// any other: passed on, never repeated.
func TestRefusedByShuttingDownNode(t *testing.T) {
	code := func(f *fixture) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
	}
	call := func(f *fixture, form url.Values) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		f.router.ServeHTTP(w, formReq("/oauth/token", form))
		return w
	}

	t.Run("a real node's listener, shut down under a kept connection", func(t *testing.T) {
		node1, node2 := &seen{}, &seen{}
		node2Srv := httptest.NewServer(node2.handler("eu-2"))
		t.Cleanup(node2Srv.Close)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr1 := ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		gate := &gateCalls{h: node1.handler("eu-1"), entered: make(chan struct{}, 1), release: make(chan struct{})}
		go func() {
			done <- serve.RunDrain(ctx, 0, []serve.Listener{{Server: serve.Public(node1.handler("eu-1")), Listener: ln,
				Calls: gate, Log: slog.New(slog.DiscardHandler)}})
		}()
		t.Cleanup(func() { cancel(); <-done })
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{addr1, node2Srv.Listener.Addr().String()}
		})
		// A first call leaves a kept connection to node 1 in the pool.
		if w := call(f, code(f)); w.Header().Get("X-Served-By") != "eu-1" {
			t.Fatalf("first call served by %q (status %d)", w.Header().Get("X-Served-By"), w.Code)
		}
		// The next call reaches node 1 on that connection and is held
		// there until node 1 has stopped taking calls (net/http's server
		// is shut down), as a call does that arrives at that moment.
		gate.armed.Store(true)
		n1, n2 := node1.count(), node2.count()
		answer := make(chan *httptest.ResponseRecorder, 1)
		go func() { answer <- call(f, code(f)) }()
		select {
		case <-gate.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the call never reached node 1")
		}
		cancel() // node 1 shuts down (no drain period): its listener closes
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
			c, err := net.Dial("tcp", addr1)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatal("node 1 still accepting")
			}
		}
		close(gate.release)
		w := <-answer
		if got := w.Header().Get("X-Served-By"); got != "eu-2" || w.Code != http.StatusOK {
			t.Fatalf("redemption sent while node 1 shut down: served by %q (status %d %s), want node 2", got, w.Code, w.Body)
		}
		if node1.count() != n1 || node2.count() != n2+1 {
			t.Fatalf("node 1 ran %d calls, node 2 %d; want 0 and 1", node1.count()-n1, node2.count()-n2)
		}
		if w.Header().Get(serve.RefusedHeader) != "" || w.Header().Get(serve.DrainingHeader) != "" {
			t.Fatal("the refusal's headers reached the caller")
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("node 1 RunDrain = %v", err)
			}
			done <- nil
		case <-time.After(10 * time.Second):
			t.Fatal("node 1 did not finish shutting down")
		}
	})

	t.Run("a 503 without the refusal header is not repeated", func(t *testing.T) {
		busy := &seen{}
		busySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			busy.handler("eu-1").ServeHTTP(&statusWriter{ResponseWriter: w, code: http.StatusServiceUnavailable}, r)
		}))
		t.Cleanup(busySrv.Close)
		other := &seen{}
		otherSrv := httptest.NewServer(other.handler("eu-2"))
		t.Cleanup(otherSrv.Close)
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{busySrv.Listener.Addr().String(), otherSrv.Listener.Addr().String()}
		})
		w := call(f, code(f))
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("X-Served-By") != "eu-1" || other.count() != 0 {
			t.Fatalf("status %d served by %q, node 2 called %d times; want node 1's 503 passed on", w.Code, w.Header().Get("X-Served-By"), other.count())
		}
	})

	t.Run("every address refuses: 503 temporarily_unavailable", func(t *testing.T) {
		refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(serve.RefusedHeader, "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		t.Cleanup(refusing.Close)
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{refusing.Listener.Addr().String()}
		})
		w := call(f, code(f))
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "temporarily_unavailable") ||
			w.Header().Get(serve.RefusedHeader) != "" {
			t.Fatalf("status %d body %s, refusal header %q", w.Code, w.Body, w.Header().Get(serve.RefusedHeader))
		}
	})
}

// gateCalls is a CallServer that answers calls with h on the connection
// (so it stays the listener's, kept); once armed, it holds the next call
// until release and then hands it to net/http.
type gateCalls struct {
	h       http.Handler
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

func (g *gateCalls) ServeCall(_ context.Context, c *serve.Call) (bool, bool) {
	if g.armed.CompareAndSwap(true, false) {
		g.entered <- struct{}{}
		<-g.release
		return false, false
	}
	r, err := http.ReadRequest(c.R)
	if err != nil {
		return true, false
	}
	w := httptest.NewRecorder()
	g.h.ServeHTTP(w, r)
	resp := w.Result()
	resp.ContentLength = int64(w.Body.Len())
	if resp.Write(c.W) != nil || c.W.Flush() != nil {
		return true, false
	}
	return true, true
}

// statusWriter answers with code instead of 200.
type statusWriter struct {
	http.ResponseWriter
	code int
	sent bool
}

func (w *statusWriter) WriteHeader(int) { w.sent = true; w.ResponseWriter.WriteHeader(w.code) }
func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.sent {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// TestRouterLetsGoOfIdleConnections: RouterConfig.IdleFor bounds how long
// an idle upstream connection is reused (nodes set it below the drain
// period, after which a node closes the connections still idle).
func TestRouterLetsGoOfIdleConnections(t *testing.T) {
	up, conns := countingUpstream(t, (&seen{}).handler("eu-1"))
	f := newFixture(t, func(c *RouterConfig) {
		c.Peers[0].Addr, c.IdleFor = up.Listener.Addr().String(), 200*time.Millisecond
	})
	introspect := func() {
		w := httptest.NewRecorder()
		f.router.ServeHTTP(w, formReq("/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}}))
		if w.Code != http.StatusOK {
			t.Fatalf("status %d", w.Code)
		}
	}
	introspect()
	introspect()
	if n := conns.Load(); n != 1 {
		t.Fatalf("%d connections for two calls in a row, want 1 (kept)", n)
	}
	time.Sleep(400 * time.Millisecond)
	introspect()
	if n := conns.Load(); n != 2 {
		t.Fatalf("%d connections after the idle bound passed, want a new one", n)
	}
}
