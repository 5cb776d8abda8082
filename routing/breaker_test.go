package routing

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// slowUpstream answers "eu" at once, or, for a request carrying X-Test-Slow,
// signals its arrival and holds it until the caller goes away.
func slowUpstream(t *testing.T) (*httptest.Server, chan struct{}) {
	arrived := make(chan struct{}, 64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if r.Header.Get("X-Test-Slow") != "" {
			arrived <- struct{}{}
			<-r.Context().Done()
			return
		}
		w.Header().Set("X-Served-By", "eu")
		_, _ = w.Write([]byte("eu"))
	}))
	t.Cleanup(srv.Close)
	return srv, arrived
}

// routerServer serves rt on a loopback listener and counts finished calls.
func routerServer(t *testing.T, rt *Router) (*httptest.Server, *atomic.Int64) {
	var done atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer done.Add(1)
		rt.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &done
}

func introspect(ctx context.Context, base, token string, slow bool) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/oauth/introspect", strings.NewReader(url.Values{"token": {token}}.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if slow {
		req.Header.Set("X-Test-Slow", "1")
	}
	return http.DefaultClient.Do(req)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestAbandonedCallsDoNotOpenBreaker: clients that close their connection
// while the upstream is still working must not count as upstream failures,
// so they cannot open another region's breaker for everyone else.
func TestAbandonedCallsDoNotOpenBreaker(t *testing.T) {
	up, arrived := slowUpstream(t)
	f := newFixture(t, func(c *RouterConfig) {
		c.Peers[0].Addr = up.Listener.Addr().String()
		c.BreakerThreshold, c.BreakerCooldown = 3, time.Hour
	})
	srv, done := routerServer(t, f.router)
	tok := f.mint(t, KindAccess, "eu")
	const abandoned = 30
	for i := 0; i < abandoned; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			resp, err := introspect(ctx, srv.URL, tok, true)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		select {
		case <-arrived: // the call reached the upstream; now the client walks away
		case err := <-errc:
			cancel()
			t.Fatalf("abandoned call %d answered before reaching the upstream (breaker open?): %v", i, err)
		}
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("abandoned call %d: %v", i, err)
		}
	}
	waitFor(t, "the router to finish the abandoned calls", func() bool { return done.Load() >= abandoned })
	if f.router.ups["eu"].breakers[up.Listener.Addr().String()].open(time.Now()) {
		t.Fatal("abandoned calls opened the breaker")
	}
	for i := 0; i < 5; i++ {
		resp, err := introspect(context.Background(), srv.URL, tok, false)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "eu" {
			t.Fatalf("other client after abandoned calls: status %d body %q", resp.StatusCode, b)
		}
	}
}

// TestUpstreamFaultsOpenBreaker: genuine upstream faults (refused dials,
// upstream timeouts, connections dropped mid-call) still open the breaker,
// which then answers 503 without dialling.
func TestUpstreamFaultsOpenBreaker(t *testing.T) {
	reset, _ := resetAddr(t)
	tests := []struct {
		name    string
		addr    string
		timeout time.Duration
	}{
		{"dial refused", deadAddr(t), 5 * time.Second},
		{"upstream timeout", hangAddr(t), 200 * time.Millisecond},
		{"broken response", reset, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *RouterConfig) {
				c.Peers[0].Addr = tt.addr
				c.RequestTimeout = tt.timeout
				c.BreakerThreshold, c.BreakerCooldown = 3, time.Hour
			})
			srv, _ := routerServer(t, f.router)
			tok := f.mint(t, KindAccess, "eu")
			for i := 0; i < 3; i++ {
				resp, err := introspect(context.Background(), srv.URL, tok, false)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("status %d, want 503", resp.StatusCode)
				}
			}
			n := f.out.n.Load()
			resp, err := introspect(context.Background(), srv.URL, tok, false)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Fatalf("status %d, want 503 with Retry-After", resp.StatusCode)
			}
			if f.out.n.Load() != n {
				t.Fatal("breaker did not open: the upstream was dialled again")
			}
		})
	}
}
