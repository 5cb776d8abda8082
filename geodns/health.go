package geodns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Upstream names one health-checked site: a region's primary, or its DR
// site.
type Upstream struct {
	Region string
	DR     bool
}

// String returns "eu" for a primary and "eu/dr" for a DR site.
func (u Upstream) String() string {
	if u.DR {
		return u.Region + "/dr"
	}
	return u.Region
}

func (u Upstream) site() string {
	if u.DR {
		return "dr"
	}
	return "primary"
}

// Snapshot is an immutable view of upstream health at one moment. Upstreams
// it does not know of, and every upstream of a nil Snapshot, count as up
// (the checker's start state). Reading it takes no lock.
type Snapshot struct {
	down    map[Upstream]bool
	changed chan struct{}
}

// NewSnapshot returns a snapshot in which exactly the given upstreams are
// down. Its Changed channel never closes. Useful for tests and for
// [Zone.Answer] callers outside a [Server].
func NewSnapshot(down ...Upstream) *Snapshot {
	s := &Snapshot{down: make(map[Upstream]bool, len(down)), changed: make(chan struct{})}
	for _, u := range down {
		s.down[u] = true
	}
	return s
}

// Up reports whether u is up in this snapshot.
func (s *Snapshot) Up(u Upstream) bool {
	if s == nil || len(s.down) == 0 {
		return true
	}
	return !s.down[u]
}

// Down returns the upstreams that are down, sorted by region, primary
// before DR.
func (s *Snapshot) Down() []Upstream {
	if s == nil {
		return nil
	}
	out := make([]Upstream, 0, len(s.down))
	for u := range s.down {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b Upstream) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		if a.DR == b.DR {
			return 0
		}
		if b.DR {
			return -1
		}
		return 1
	})
	return out
}

// Changed returns a channel closed once a newer snapshot replaces this one,
// so a caller can wait for a state change instead of polling.
func (s *Snapshot) Changed() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.changed
}

// target is one checked upstream and its hysteresis counters.
type target struct {
	up        Upstream
	url       string
	isUp      bool
	successes int // consecutive, while down
	failures  int // consecutive, while up
	attrs     metric.MeasurementOption
}

// Checker polls each region's and DR site's health URL and publishes a
// [Snapshot]. An upstream starts up; Fall consecutive failed checks mark it
// down and Rise consecutive successful ones mark it up again. A check
// succeeds on a 2xx status within the timeout; redirects are not followed.
// The HTTP client dials only the hosts and ports of the configured URLs and
// ignores proxy settings. Upstreams without a URL are not checked and stay
// up.
//
// State changes are logged (Warn for down, Info for up) and counted. Metrics
// (all with attributes region and site = primary | dr):
//   - geodns.upstream.up: gauge, 1 up, 0 down, as the answers see it.
//   - geodns.upstream.transitions: counter, plus state = up | down.
//   - geodns.upstream.checks: counter, plus result = ok | fail.
type Checker struct {
	cfg     HealthConfig
	log     *slog.Logger
	client  *http.Client
	targets []*target // fixed at construction; counters guarded by mu

	mu      sync.Mutex // serialises check rounds
	snap    atomic.Pointer[Snapshot]
	running atomic.Bool

	transitions metric.Int64Counter
	checks      metric.Int64Counter
	gauge       metric.Registration
}

// NewChecker builds a checker for cfg's health URLs. cfg is validated (and
// defaulted) first. log and meter may be nil.
func NewChecker(cfg Config, log *slog.Logger, meter metric.Meter) (*Checker, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("geodns")
	}
	c := &Checker{cfg: cfg.Health, log: log}
	allowed := map[string]bool{}
	add := func(u Upstream, raw string) error {
		if raw == "" {
			return nil
		}
		pu, err := parseHealthURL(raw)
		if err != nil {
			return fmt.Errorf("geodns: health URL of %s: %w", u, err)
		}
		port := pu.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[pu.Scheme]
		}
		allowed[net.JoinHostPort(pu.Hostname(), port)] = true
		c.targets = append(c.targets, &target{
			up:    u,
			url:   pu.String(),
			isUp:  true,
			attrs: metric.WithAttributes(attribute.String("region", u.Region), attribute.String("site", u.site())),
		})
		return nil
	}
	for _, r := range cfg.Regions {
		if err := add(Upstream{Region: r.ID}, r.HealthURL); err != nil {
			return nil, err
		}
		if err := add(Upstream{Region: r.ID, DR: true}, r.DRHealthURL); err != nil {
			return nil, err
		}
	}
	c.client = newHealthClient(allowed, cfg.Health.Timeout, cfg.Health.TLSClientConfig)
	c.snap.Store(NewSnapshot())

	var err error
	if c.transitions, err = meter.Int64Counter("geodns.upstream.transitions",
		metric.WithDescription("Health state changes of upstreams, by region, site and new state."),
		metric.WithUnit("{transition}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if c.checks, err = meter.Int64Counter("geodns.upstream.checks",
		metric.WithDescription("Health checks run, by region, site and result."),
		metric.WithUnit("{check}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	gauge, err := meter.Int64ObservableGauge("geodns.upstream.up",
		metric.WithDescription("Upstream health as the DNS answers see it: 1 up, 0 down."),
		metric.WithUnit("1"))
	if err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if c.gauge, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		snap := c.Snapshot()
		for _, t := range c.targets {
			v := int64(0)
			if snap.Up(t.up) {
				v = 1
			}
			o.ObserveInt64(gauge, v, t.attrs)
		}
		return nil
	}, gauge); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	return c, nil
}

// newHealthClient returns an HTTP client that can only dial the given
// host:port pairs, never uses a proxy and never follows redirects.
func newHealthClient(allowed map[string]bool, timeout time.Duration, tlsConf *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if !allowed[addr] {
				return nil, fmt.Errorf("geodns: health check may not dial %s", addr)
			}
			return dialer.DialContext(ctx, network, addr)
		},
		TLSClientConfig:       tlsConf,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// Snapshot returns the current health view. It never returns nil and takes
// no lock.
func (c *Checker) Snapshot() *Snapshot { return c.snap.Load() }

// Upstreams lists the checked upstreams, in configuration order.
func (c *Checker) Upstreams() []Upstream {
	out := make([]Upstream, len(c.targets))
	for i, t := range c.targets {
		out[i] = t.up
	}
	return out
}

// CheckOnce runs one round of checks, all upstreams in parallel, applies the
// results and returns the snapshot in force afterwards. Rounds never
// overlap: a call waits for one in progress. A round cut short by ctx is
// discarded.
func (c *Checker) CheckOnce(ctx context.Context) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := make([]error, len(c.targets))
	var wg sync.WaitGroup
	for i, t := range c.targets {
		wg.Go(func() { errs[i] = c.probe(ctx, t.url) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		// Cancelled mid-round (shutdown): the failures say nothing about
		// the upstreams.
		return c.snap.Load()
	}

	changed := false
	for i, t := range c.targets {
		err := errs[i]
		result := "ok"
		if err != nil {
			result = "fail"
		}
		c.checks.Add(ctx, 1, t.attrs, metric.WithAttributes(attribute.String("result", result)))
		switch {
		case err == nil && t.isUp:
			t.failures = 0
		case err == nil:
			t.successes++
			if t.successes >= c.cfg.Rise {
				t.isUp, t.successes, changed = true, 0, true
				c.log.LogAttrs(ctx, slog.LevelInfo, "geodns upstream up",
					slog.String("upstream", t.up.String()), slog.String("url", t.url),
					slog.Int("rise", c.cfg.Rise))
				c.transitions.Add(ctx, 1, t.attrs, metric.WithAttributes(attribute.String("state", "up")))
			}
		case t.isUp:
			t.failures++
			if t.failures >= c.cfg.Fall {
				t.isUp, t.failures, changed = false, 0, true
				c.log.LogAttrs(ctx, slog.LevelWarn, "geodns upstream down",
					slog.String("upstream", t.up.String()), slog.String("url", t.url),
					slog.Int("fall", c.cfg.Fall), slog.String("error", err.Error()))
				c.transitions.Add(ctx, 1, t.attrs, metric.WithAttributes(attribute.String("state", "down")))
			}
		default:
			t.successes = 0
		}
	}
	old := c.snap.Load()
	if !changed {
		return old
	}
	next := &Snapshot{down: map[Upstream]bool{}, changed: make(chan struct{})}
	for _, t := range c.targets {
		if !t.isUp {
			next.down[t.up] = true
		}
	}
	c.snap.Store(next)
	close(old.changed)
	return next
}

// probe GETs one URL; nil means healthy.
func (c *Checker) probe(ctx context.Context, rawURL string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "meridian-geodns-health/1")
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

// ErrCheckerRunning is returned by [Checker.Run] when another Run is active.
var ErrCheckerRunning = errors.New("geodns: health checker already running")

// Run checks every Interval until ctx is done, then returns nil. The first
// round runs one Interval after the start (every upstream starts up). Only
// one Run may be active at a time.
func (c *Checker) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrCheckerRunning
	}
	defer c.running.Store(false)
	if len(c.targets) == 0 {
		<-ctx.Done()
		return nil
	}
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			c.CheckOnce(ctx)
		}
	}
}

// Close releases the checker's idle connections and metric callback.
func (c *Checker) Close() error {
	c.client.CloseIdleConnections()
	if c.gauge != nil {
		return c.gauge.Unregister()
	}
	return nil
}
