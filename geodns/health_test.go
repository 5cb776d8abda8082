package geodns

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// statusServer is a /readyz endpoint whose status the test sets.
type statusServer struct {
	*httptest.Server
	status atomic.Int32
	hits   atomic.Int32
}

func newStatusServer(t *testing.T) *statusServer {
	t.Helper()
	s := &statusServer{}
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		w.WriteHeader(int(s.status.Load()))
	}))
	t.Cleanup(s.Close)
	return s
}

// syncBuffer is a log sink safe for concurrent writers and readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// healthConfig checks eu at euURL and eu's DR site at euDRURL (either may be
// empty); each site gets the single address its URL names, so the check
// dials that address.
func healthConfig(euURL, euDRURL string, fall, rise int) Config {
	c := testConfig()
	site := func(h *Host, raw string) {
		if raw == "" {
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			panic(err)
		}
		h.Addrs = []netip.Addr{netip.MustParseAddr(u.Hostname())}
	}
	site(&c.Regions[0].Host, euURL)
	site(c.Regions[0].DR, euDRURL)
	c.Regions[0].HealthURL = euURL
	c.Regions[0].DRHealthURL = euDRURL
	c.Health = HealthConfig{Interval: time.Hour, Timeout: 2 * time.Second, Fall: fall, Rise: rise}
	return c
}

func TestCheckerHysteresis(t *testing.T) {
	hs := newStatusServer(t)
	var logs syncBuffer
	meter := newRecMeter()
	c, err := NewChecker(healthConfig(hs.URL+"/readyz", "", 3, 2),
		slog.New(slog.NewTextHandler(&logs, nil)), meter)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	euAt := euUp.At(netip.MustParseAddr("127.0.0.1"))
	if got := c.Targets(); len(got) != 1 || got[0] != euAt {
		t.Fatalf("Targets = %v, want [%v]", got, euAt)
	}
	if !c.Snapshot().Up(euUp) {
		t.Fatal("start state must be up")
	}
	const ok, fail = http.StatusOK, http.StatusServiceUnavailable
	steps := []struct {
		status int32
		up     bool
	}{
		{fail, true}, {fail, true}, {ok, true}, // a success resets the failure count
		{fail, true}, {fail, true}, {fail, false}, // third consecutive failure: down
		{ok, false}, {fail, false}, {ok, false}, // a failure resets the success count
		{ok, true}, // second consecutive success: up
		{ok, true},
	}
	for i, st := range steps {
		hs.status.Store(st.status)
		before := c.Snapshot()
		snap := c.CheckOnce(context.Background())
		if got := snap.Up(euUp); got != st.up {
			t.Fatalf("step %d (status %d): up = %v, want %v", i, st.status, got, st.up)
		}
		if snap != c.Snapshot() {
			t.Fatalf("step %d: CheckOnce's snapshot is not the current one", i)
		}
		changed := before.Up(euUp) != st.up
		select {
		case <-before.Changed():
			if !changed {
				t.Fatalf("step %d: Changed closed without a state change", i)
			}
		default:
			if changed {
				t.Fatalf("step %d: state changed but Changed is still open", i)
			}
		}
	}
	if got := int(hs.hits.Load()); got != len(steps) {
		t.Errorf("%d requests to /readyz, want %d", got, len(steps))
	}
	out := logs.String()
	if !strings.Contains(out, "geodns upstream down") || !strings.Contains(out, "upstream=eu@127.0.0.1") ||
		!strings.Contains(out, "geodns upstream up") {
		t.Errorf("state changes not logged:\n%s", out)
	}
	if n := meter.sum("geodns.upstream.transitions{address=127.0.0.1,region=eu,site=primary,state=down}"); n != 1 {
		t.Errorf("down transitions = %d, want 1", n)
	}
	if n := meter.sum("geodns.upstream.transitions{address=127.0.0.1,region=eu,site=primary,state=up}"); n != 1 {
		t.Errorf("up transitions = %d, want 1", n)
	}
	if n := meter.sum("geodns.upstream.checks{address=127.0.0.1,region=eu,result=fail,site=primary}"); n != 6 {
		t.Errorf("failed checks = %d, want 6", n)
	}
	if g := meter.observe()["geodns.upstream.up{address=127.0.0.1,region=eu,site=primary}"]; g != 1 {
		t.Errorf("gauge = %d, want 1", g)
	}
}

func TestCheckerFailures(t *testing.T) {
	other := newStatusServer(t) // must never be dialled
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/readyz", http.StatusFound)
	}))
	t.Cleanup(redirect.Close)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only once the client gives up
	}))
	t.Cleanup(slow.Close)
	stopped := newStatusServer(t)
	stoppedURL := stopped.URL + "/readyz"
	stopped.Close()

	tests := []struct {
		name string
		url  string
	}{
		{"redirect is a failure, not followed", redirect.URL + "/readyz"},
		{"timeout", slow.URL + "/readyz"},
		{"server stopped", stoppedURL},
		{"server error", func() string { s := newStatusServer(t); s.status.Store(500); return s.URL }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := healthConfig(tc.url, "", 1, 1)
			cfg.Health.Timeout = 200 * time.Millisecond
			meter := newRecMeter()
			c, err := NewChecker(cfg, nil, meter)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if c.CheckOnce(context.Background()).Up(euUp) {
				t.Fatalf("upstream still up after a failed check with Fall=1")
			}
			if g := meter.observe()["geodns.upstream.up{address=127.0.0.1,region=eu,site=primary}"]; g != 0 {
				t.Errorf("gauge = %d, want 0", g)
			}
		})
	}
	if n := other.hits.Load(); n != 0 {
		t.Errorf("redirect target was requested %d times", n)
	}
}

func TestHealthClientDialsOnlyConfiguredHosts(t *testing.T) {
	allowed := newStatusServer(t)
	forbidden := newStatusServer(t)
	client := newHealthClient(strings.TrimPrefix(allowed.URL, "http://"), time.Second, nil)
	if resp, err := client.Get(allowed.URL); err != nil {
		t.Fatalf("configured host: %v", err)
	} else {
		_ = resp.Body.Close()
	}
	// Another URL still reaches only the configured address.
	if resp, err := client.Get(forbidden.URL); err == nil {
		_ = resp.Body.Close()
	}
	if allowed.hits.Load() != 2 || forbidden.hits.Load() != 0 {
		t.Fatalf("forbidden host got a request")
	}
}

// TestCheckerRun checks the periodic loop without sleeping: it waits for the
// snapshot's Changed channel.
func TestCheckerRun(t *testing.T) {
	hs := newStatusServer(t)
	hs.status.Store(http.StatusServiceUnavailable)
	cfg := healthConfig(hs.URL, "", 2, 1)
	cfg.Health.Interval = 10 * time.Millisecond
	cfg.Health.Timeout = 10 * time.Millisecond
	c, err := NewChecker(cfg, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	waitChange := func(want bool) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			snap := c.Snapshot()
			if snap.Up(euUp) == want {
				return
			}
			select {
			case <-snap.Changed():
			case <-deadline:
				t.Fatalf("eu never became up=%v", want)
			}
		}
	}
	waitChange(false)
	hs.status.Store(http.StatusOK)
	waitChange(true)

	if err := c.Run(ctx); err != ErrCheckerRunning {
		t.Errorf("second Run: %v, want ErrCheckerRunning", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

func TestSnapshot(t *testing.T) {
	var nilSnap *Snapshot
	if !nilSnap.Up(euUp) || nilSnap.Down() != nil {
		t.Error("nil snapshot must report everything up")
	}
	s := NewSnapshot(euDR)
	if !s.Up(euUp) || s.Up(euDR) || len(s.Down()) != 1 {
		t.Errorf("NewSnapshot(eu/dr): up(eu)=%v up(eu/dr)=%v down=%v", s.Up(euUp), s.Up(euDR), s.Down())
	}
	if euDR.String() != "eu/dr" || euUp.String() != "eu" {
		t.Errorf("Target.String: %q %q", euUp, euDR)
	}
}

func TestCheckerCancelledRoundIsDiscarded(t *testing.T) {
	hs := newStatusServer(t)
	c, err := NewChecker(healthConfig(hs.URL, "", 1, 1), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for range 3 {
		if !c.CheckOnce(ctx).Up(euUp) {
			t.Fatal("a cancelled round marked the upstream down")
		}
	}
}
