package federation

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"time"

	"github.com/meridian-id/meridian/internal/serve"
)

// Routes maps the federation's host names (lower case, without port) to
// the addresses to dial for them, one per node of the site
// ("127.0.0.12:8080"). Back-channel clients dial only these: an issuer or
// endpoint URL naming any other host is refused before a connection is made.
type Routes map[string][]string

// ClientOptions tune NewHTTPClient.
type ClientOptions struct {
	// ConnectTimeout bounds dialing (default 2s).
	ConnectTimeout time.Duration
	// RequestTimeout bounds a whole call (default 10s).
	RequestTimeout time.Duration
	// Wrap, when set, wraps the transport (tracing: telemetry.Transport).
	Wrap func(http.RoundTripper) http.RoundTripper
	// TLSConfig verifies https federation hosts (nil: system roots). The
	// server name is always the federation host of the URL, never the
	// address dialled.
	TLSConfig *tls.Config
	// Fallback maps a federation host (a region's host) to its DR site's
	// addresses, dialled when none of the host's own addresses can be
	// connected to. Nothing was sent to those, so any call may go there;
	// the DR site's certificate must name the region's host (as GeoDNS
	// failover already requires).
	Fallback Routes
	// DownFor is how long an address that refused a connection (or timed
	// out connecting) is tried after its site's other addresses (default
	// 10s). It is still tried before the DR site.
	DownFor time.Duration
	// IdleFor is how long an idle connection is kept for reuse (default
	// 90s). Set it below the federation's drain period (IdleFor): a node
	// closes the connections still idle when its drain ends, and a call
	// sent on one just then is lost.
	IdleFor time.Duration
}

// IdleFor is how long a federation client (back channel or router) keeps
// an idle connection when nodes drain for drain before they stop: half of
// it, at most max (max when drain is 0). Every answer a node gives while
// it drains closes its connection, so the connections still open when
// the drain ends were idle all through it: a client that lets go of them
// sooner never has one closed under a call it is sending.
func IdleFor(drain, max time.Duration) time.Duration {
	if drain <= 0 || drain/2 >= max {
		return max
	}
	return drain / 2
}

// NewHTTPClient returns the back-channel client of a federation node: it
// dials the configured address of each federation host and nothing else,
// and never follows redirects (an OP answering a token or discovery call
// with a redirect is misbehaving).
func NewHTTPClient(routes Routes, opts ClientOptions) *http.Client {
	if opts.ConnectTimeout <= 0 {
		opts.ConnectTimeout = 2 * time.Second
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.DownFor <= 0 {
		opts.DownFor = 10 * time.Second
	}
	if opts.IdleFor <= 0 {
		opts.IdleFor = 90 * time.Second
	}
	table := make(map[string][]string, len(routes))
	for h, a := range routes {
		table[strings.ToLower(h)] = a
	}
	fallback := make(map[string][]string, len(opts.Fallback))
	for h, a := range opts.Fallback {
		fallback[strings.ToLower(h)] = a
	}
	d := &addrDialer{d: &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}, downFor: opts.DownFor,
		down: map[string]time.Time{}}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			to, ok := table[strings.ToLower(host)]
			if !ok {
				return nil, fmt.Errorf("federation: %q is not a federation host", host)
			}
			c, err := d.dialSite(ctx, network, to)
			if err == nil || ctx.Err() != nil {
				return c, err
			}
			dr, ok := fallback[strings.ToLower(host)]
			if !ok || len(dr) == 0 {
				return nil, fmt.Errorf("federation: %s: %w", host, err)
			}
			c, drErr := d.dialSite(ctx, network, dr)
			if drErr != nil {
				return nil, fmt.Errorf("federation: %s: %w; DR site: %w", host, err, drErr)
			}
			return c, nil
		},
		TLSClientConfig:       opts.TLSConfig,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       opts.IdleFor,
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		ResponseHeaderTimeout: opts.RequestTimeout,
		ForceAttemptHTTP2:     true,
	}
	var rt http.RoundTripper = drainAware{tr: tr, d: d}
	if opts.Wrap != nil {
		rt = opts.Wrap(rt)
	}
	return &http.Client{Transport: rt, Timeout: opts.RequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// drainAware moves the back channel off a node that answers that it
// drains (serve.DrainingHeader): its address is tried after its site's
// others, as one that failed, and the idle connections (which may lead
// to it) are closed, so calls have left the node before it stops
// accepting. A call the node refused as it stopped (serve.RefusedHeader:
// nothing of it ran) is sent once more, whatever its method.
type drainAware struct {
	tr *http.Transport
	d  *addrDialer
}

func (w drainAware) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := w.roundTrip(r)
	if err == nil && resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(serve.RefusedHeader) != "" &&
		(r.Body == nil || r.Body == http.NoBody || r.GetBody != nil) {
		// The node was shutting down and ran nothing of the call (it came
		// on a kept connection as the node stopped taking calls): send it
		// once more, now to the site's other addresses first.
		resp.Body.Close()
		again := r.Clone(r.Context())
		if r.GetBody != nil {
			if again.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		return w.roundTrip(again)
	}
	return resp, err
}

func (w drainAware) roundTrip(r *http.Request) (*http.Response, error) {
	var remote string
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		remote = i.Conn.RemoteAddr().String()
	}}))
	resp, err := w.tr.RoundTrip(r)
	if err == nil && resp.Header.Get(serve.DrainingHeader) != "" && remote != "" {
		w.d.mu.Lock()
		t, marked := w.d.down[remote]
		fresh := marked && time.Since(t) < w.d.downFor
		w.d.down[remote] = time.Now()
		w.d.mu.Unlock()
		if !fresh {
			w.tr.CloseIdleConnections()
		}
	}
	return resp, err
}

// addrDialer dials one of a site's addresses: each in turn until one
// connects, those that failed within downFor after the others.
type addrDialer struct {
	d       *net.Dialer
	downFor time.Duration
	mu      sync.Mutex
	down    map[string]time.Time // address → when its last dial failed
}

// dialSite connects to the first of addrs that accepts, trying addresses
// that failed recently last; the error names every address tried.
func (a *addrDialer) dialSite(ctx context.Context, network string, addrs []string) (net.Conn, error) {
	now := time.Now()
	order := make([]string, 0, len(addrs))
	var later []string
	a.mu.Lock()
	for _, addr := range addrs {
		if t, ok := a.down[addr]; ok && now.Sub(t) < a.downFor {
			later = append(later, addr)
		} else {
			order = append(order, addr)
		}
	}
	a.mu.Unlock()
	order = append(order, later...)
	var errs []error
	for _, addr := range order {
		c, err := a.d.DialContext(ctx, network, addr)
		a.mu.Lock()
		if err == nil {
			delete(a.down, addr)
		} else if ctx.Err() == nil {
			a.down[addr] = time.Now()
		}
		a.mu.Unlock()
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, errors.New("no address")
	}
	return nil, errors.Join(errs...)
}
