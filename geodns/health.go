package geodns

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
)

// Target names one health-checked site or one address of it: a region's
// primary or its DR site, and with Addr set one address of that site.
type Target struct {
	Region string
	DR     bool
	// Addr is one address of the site; the zero Addr names the site as a
	// whole (in a [Snapshot]: every address of it).
	Addr netip.Addr
}

// String returns "eu" for a primary, "eu/dr" for a DR site and
// "eu@127.0.0.11" or "eu/dr@127.0.0.21" for one address.
func (u Target) String() string {
	s := u.Region
	if u.DR {
		s += "/dr"
	}
	if u.Addr.IsValid() {
		s += "@" + u.Addr.String()
	}
	return s
}

// Site returns u without its address: the site u belongs to.
func (u Target) Site() Target { return Target{Region: u.Region, DR: u.DR} }

// At returns the upstream for one address of site u.
func (u Target) At(a netip.Addr) Target {
	return Target{Region: u.Region, DR: u.DR, Addr: a.Unmap()}
}

func (u Target) site() string {
	if u.DR {
		return "dr"
	}
	return "primary"
}

// Snapshot is an immutable view of upstream health at one moment, plus the
// regions that have been failed over to their DR site (see
// [Checker.Failback]). Targets it does not know of, and every upstream of
// a nil Snapshot, count as up (the checker's start state). Reading it takes
// no lock.
type Snapshot struct {
	down       map[Target]bool
	failedOver map[string]bool
	changed    chan struct{}
}

// NewSnapshot returns a snapshot in which exactly the given upstreams are
// down: a Target without Addr takes down every address of its site. No
// region is failed over. Its Changed channel never closes. Useful for tests
// and for [Zone.Answer] callers outside a [Server].
func NewSnapshot(down ...Target) *Snapshot {
	s := &Snapshot{down: make(map[Target]bool, len(down)), changed: make(chan struct{})}
	for _, u := range down {
		s.down[u] = true
	}
	return s
}

// WithFailedOver returns a copy of s in which the given regions are also
// failed over to their DR sites (their region host answers the DR site
// whatever the primary's health).
func (s *Snapshot) WithFailedOver(regions ...string) *Snapshot {
	n := &Snapshot{down: map[Target]bool{}, failedOver: map[string]bool{}, changed: make(chan struct{})}
	if s != nil {
		maps.Copy(n.down, s.down)
		maps.Copy(n.failedOver, s.failedOver)
	}
	for _, r := range regions {
		n.failedOver[r] = true
	}
	return n
}

// Up reports whether u is up in this snapshot. An address is down when it,
// or its whole site, is marked down; a site (no Addr) is up unless marked
// down as a whole, which a [Checker] does once every address of it is down.
func (s *Snapshot) Up(u Target) bool {
	if s == nil || len(s.down) == 0 {
		return true
	}
	if s.down[u] {
		return false
	}
	return !u.Addr.IsValid() || !s.down[u.Site()]
}

// FailedOver reports whether region has been failed over to its DR site and
// not yet failed back by an operator.
func (s *Snapshot) FailedOver(region string) bool {
	return s != nil && s.failedOver[region]
}

// allUp reports whether nothing at all is marked down (the fast path of the
// answer).
func (s *Snapshot) allUp() bool { return s == nil || len(s.down) == 0 }

// Down returns the upstreams marked down (from a [Checker]: each address
// down, and each site with every address down), sorted by region, primary
// before DR, then by address (the site first).
func (s *Snapshot) Down() []Target {
	if s == nil {
		return nil
	}
	out := make([]Target, 0, len(s.down))
	for u := range s.down {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b Target) int {
		if c := strings.Compare(a.Region, b.Region); c != 0 {
			return c
		}
		if a.DR != b.DR {
			if b.DR {
				return -1
			}
			return 1
		}
		return a.Addr.Compare(b.Addr)
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

// target is one checked address and its hysteresis counters.
type target struct {
	up        Target // with Addr
	url       string
	client    *http.Client // dials only up.Addr at the URL's port
	isUp      bool
	successes int // consecutive, while down
	failures  int // consecutive, while up
	attrs     metric.MeasurementOption
}

// latchRegion is a region with a DR site, as the failover latch sees it.
type latchRegion struct {
	id      string
	checked bool // the primary has a health URL; else it never fails over
	attrs   metric.MeasurementOption
}

// Checker polls every address of each region's and DR site's health URL and
// publishes a [Snapshot]. Each address is checked on its own: the URL is
// requested from that address (the URL's host name stays the Host header
// and the TLS server name), so one dead node of a site marks only its
// address down. An address starts up; Fall consecutive failed checks mark it
// down and Rise consecutive successful ones mark it up again. A check
// succeeds on a 2xx status within the timeout; redirects are not followed
// and proxy settings are ignored. Sites without a URL are not checked and
// stay up.
//
// Failover latch: when no address of a region's primary is up and an address
// of its DR site is, the region is failed over, and stays failed over when
// the primary recovers, until an operator calls [Checker.Failback]: moving
// writes back to an old primary automatically would lose what the DR site
// accepted (split brain). The latch is kept in Config.StateFile, so a
// restart is not a failback.
//
// State changes are logged (Warn for down and failover, Info for up and
// failback) and counted. Metrics:
//   - geodns.upstream.up: gauge, 1 up, 0 down, by region, site = primary |
//     dr, and address.
//   - geodns.upstream.transitions: counter, same attributes plus state = up
//     | down.
//   - geodns.upstream.checks: counter, same attributes plus result = ok |
//     fail.
//   - geodns.region.failed_over: gauge, 1 while a region (with a DR site)
//     is failed over, by region.
//   - geodns.region.failovers: counter, by region and action = failover |
//     failback.
type Checker struct {
	cfg       HealthConfig
	log       *slog.Logger
	targets   []*target // fixed at construction; counters guarded by mu
	regions   []string  // every region id, in configuration order
	latches   []latchRegion
	stateFile string

	mu         sync.Mutex // serialises check rounds and failbacks
	failedOver map[string]bool
	snap       atomic.Pointer[Snapshot]
	running    atomic.Bool

	transitions metric.Int64Counter
	checks      metric.Int64Counter
	failovers   metric.Int64Counter
	gauge       metric.Registration
}

// NewChecker builds a checker for cfg's health URLs. cfg is validated (and
// defaulted) first, and the failover state is read from cfg.StateFile (a
// missing file means no region is failed over; an unreadable one is an
// error, since ignoring it would fail regions back). log and meter may be
// nil.
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
	c := &Checker{cfg: cfg.Health, log: log, stateFile: cfg.StateFile, failedOver: map[string]bool{}}
	add := func(site Target, host *Host, raw string) error {
		if raw == "" {
			return nil
		}
		pu, err := parseHealthURL(raw)
		if err != nil {
			return fmt.Errorf("geodns: health URL of %s: %w", site, err)
		}
		port := pu.Port()
		if port == "" {
			port = map[string]string{"http": "80", "https": "443"}[pu.Scheme]
		}
		for _, a := range host.Addrs {
			u := site.At(a)
			c.targets = append(c.targets, &target{
				up:     u,
				url:    pu.String(),
				client: newHealthClient(net.JoinHostPort(u.Addr.String(), port), cfg.Health.Timeout, cfg.Health.TLSClientConfig),
				isUp:   true,
				attrs: metric.WithAttributes(attribute.String("region", u.Region), attribute.String("site", u.site()),
					attribute.String("address", u.Addr.String())),
			})
		}
		return nil
	}
	known := map[string]bool{}
	for _, r := range cfg.Regions {
		c.regions = append(c.regions, r.ID)
		if err := add(Target{Region: r.ID}, &r.Host, r.HealthURL); err != nil {
			return nil, err
		}
		if r.DR == nil {
			continue
		}
		if err := add(Target{Region: r.ID, DR: true}, r.DR, r.DRHealthURL); err != nil {
			return nil, err
		}
		known[r.ID] = true
		c.latches = append(c.latches, latchRegion{id: r.ID, checked: r.HealthURL != "",
			attrs: metric.WithAttributes(attribute.String("region", r.ID))})
	}
	if c.stateFile != "" {
		st, err := loadState(c.stateFile)
		if err != nil {
			return nil, err
		}
		for _, id := range st.FailedOver {
			if !known[id] {
				log.Warn("geodns state file names a region without a DR site; ignored", "region", id, "file", c.stateFile)
				continue
			}
			c.failedOver[id] = true
			log.Warn("geodns region stays failed over to its DR site (state file)", "region", id, "file", c.stateFile)
		}
	}
	c.snap.Store(c.build())

	var err error
	if c.transitions, err = meter.Int64Counter("geodns.upstream.transitions",
		metric.WithDescription("Health state changes of upstream addresses, by region, site, address and new state."),
		metric.WithUnit("{transition}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if c.checks, err = meter.Int64Counter("geodns.upstream.checks",
		metric.WithDescription("Health checks run, by region, site, address and result."),
		metric.WithUnit("{check}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if c.failovers, err = meter.Int64Counter("geodns.region.failovers",
		metric.WithDescription("Regions failed over to their DR site or failed back by an operator, by region and action."),
		metric.WithUnit("{event}")); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	gauge, err := meter.Int64ObservableGauge("geodns.upstream.up",
		metric.WithDescription("Address health as the DNS answers see it: 1 up, 0 down."),
		metric.WithUnit("1"))
	if err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	foGauge, err := meter.Int64ObservableGauge("geodns.region.failed_over",
		metric.WithDescription("1 while a region is failed over to its DR site (until an operator fails it back), else 0."),
		metric.WithUnit("1"))
	if err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	if c.gauge, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		snap := c.Snapshot()
		for _, t := range c.targets {
			o.ObserveInt64(gauge, b2i(snap.Up(t.up)), t.attrs)
		}
		for _, l := range c.latches {
			o.ObserveInt64(foGauge, b2i(snap.FailedOver(l.id)), l.attrs)
		}
		return nil
	}, gauge, foGauge); err != nil {
		return nil, fmt.Errorf("geodns: metric: %w", err)
	}
	return c, nil
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// newHealthClient returns an HTTP client that dials only dialAddr
// (address:port), whatever host the URL names, never uses a proxy and never
// follows redirects. The URL's host stays the Host header and TLS server
// name, so a certificate naming the site's host verifies.
func newHealthClient(dialAddr string, timeout time.Duration, tlsConf *tls.Config) *http.Client {
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, dialAddr)
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

// Targets lists the checked addresses, in configuration order.
func (c *Checker) Targets() []Target {
	out := make([]Target, len(c.targets))
	for i, t := range c.targets {
		out[i] = t.up
	}
	return out
}

// build returns a snapshot of the targets' states and the latch; c.mu held
// (or construction).
func (c *Checker) build() *Snapshot {
	s := &Snapshot{down: map[Target]bool{}, failedOver: maps.Clone(c.failedOver), changed: make(chan struct{})}
	for _, t := range c.targets {
		if !t.isUp {
			s.down[t.up] = true
		}
	}
	// A site with every address down is down as a whole too, so Up(site)
	// answers "is any address of it up".
	for _, t := range c.targets {
		if site := t.up.Site(); !s.down[site] && !c.siteUp(site) {
			s.down[site] = true
		}
	}
	return s
}

// publish replaces the current snapshot; c.mu held.
func (c *Checker) publish() *Snapshot {
	next := c.build()
	old := c.snap.Swap(next)
	close(old.changed)
	return next
}

// siteUp reports whether some address of the site is up, or the site is not
// checked at all; c.mu held.
func (c *Checker) siteUp(site Target) bool {
	checked := false
	for _, t := range c.targets {
		if t.up.Site() == site {
			checked = true
			if t.isUp {
				return true
			}
		}
	}
	return !checked
}

// CheckOnce runs one round of checks, all addresses in parallel, applies the
// results (and the failover latch) and returns the snapshot in force
// afterwards. Rounds never overlap: a call waits for one in progress. A
// round cut short by ctx is discarded.
func (c *Checker) CheckOnce(ctx context.Context) *Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	errs := make([]error, len(c.targets))
	var wg sync.WaitGroup
	for i, t := range c.targets {
		wg.Go(func() { errs[i] = c.probe(ctx, t) })
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
	for _, l := range c.latches {
		if !l.checked || c.failedOver[l.id] {
			continue
		}
		if c.siteUp(Target{Region: l.id}) || !c.siteUp(Target{Region: l.id, DR: true}) {
			continue
		}
		c.failedOver[l.id], changed = true, true
		c.failovers.Add(ctx, 1, l.attrs, metric.WithAttributes(attribute.String("action", "failover")))
		c.log.LogAttrs(ctx, slog.LevelWarn, "geodns region failed over to its DR site; it stays there until an operator fails it back",
			slog.String("region", l.id))
		if err := c.saveLocked(); err != nil {
			// Still answer the DR site: it is the only healthy one. A
			// restart before the next successful save would fail back.
			c.log.LogAttrs(ctx, slog.LevelError, "geodns failover state not saved",
				slog.String("region", l.id), slog.String("error", err.Error()))
		}
	}
	if !changed {
		return c.snap.Load()
	}
	return c.publish()
}

// Errors of [Checker.Failback].
var (
	ErrUnknownRegion = errors.New("geodns: no such region with a DR site")
	ErrNotFailedOver = errors.New("geodns: region is not failed over")
	ErrPrimaryDown   = errors.New("geodns: no address of the region's primary is healthy")
)

// Failback ends a failover: the region host answers its primary again. It is
// the operator's step after the primary has been rebuilt from the DR site;
// GeoDNS never takes it on its own. It fails with [ErrUnknownRegion],
// [ErrNotFailedOver], [ErrPrimaryDown] (failing back would fail over again
// at the next round) or an error saving the state file (the region then
// stays failed over).
func (c *Checker) Failback(ctx context.Context, region string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var l *latchRegion
	for i := range c.latches {
		if c.latches[i].id == region {
			l = &c.latches[i]
		}
	}
	switch {
	case l == nil:
		return fmt.Errorf("%w: %q", ErrUnknownRegion, region)
	case !c.failedOver[region]:
		return fmt.Errorf("%w: %q", ErrNotFailedOver, region)
	case !c.siteUp(Target{Region: region}):
		return fmt.Errorf("%w: %q", ErrPrimaryDown, region)
	}
	delete(c.failedOver, region)
	if err := c.saveLocked(); err != nil {
		c.failedOver[region] = true
		return err
	}
	c.failovers.Add(ctx, 1, l.attrs, metric.WithAttributes(attribute.String("action", "failback")))
	c.log.LogAttrs(ctx, slog.LevelInfo, "geodns region failed back to its primary by an operator", slog.String("region", region))
	c.publish()
	return nil
}

// saveLocked writes the failover latch to the state file; c.mu held.
func (c *Checker) saveLocked() error {
	if c.stateFile == "" {
		return nil
	}
	ids := slices.Sorted(maps.Keys(c.failedOver))
	return saveState(c.stateFile, state{FailedOver: ids})
}

// probe GETs the target's URL from its address; nil means healthy.
func (c *Checker) probe(ctx context.Context, t *target) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "meridian-geodns-health/1")
	resp, err := t.client.Do(req)
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
// round runs one Interval after the start (every address starts up). Only
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
	for _, t := range c.targets {
		t.client.CloseIdleConnections()
	}
	if c.gauge != nil {
		return c.gauge.Unregister()
	}
	return nil
}
