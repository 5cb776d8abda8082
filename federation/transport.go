package federation

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// Routes maps the federation's host names (lower case, without port) to
// the address to dial for them ("127.0.0.12:8080"). Back-channel clients
// dial only these: an issuer or endpoint URL naming any other host is
// refused before a connection is made.
type Routes map[string]string

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
	// Fallback maps a federation host (a region's host) to a second
	// address (its DR site) dialled when the first cannot be connected to.
	// Nothing was sent to the first, so any call may go there; the DR
	// site's certificate must name the region's host (as GeoDNS failover
	// already requires).
	Fallback Routes
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
	table := make(map[string]string, len(routes))
	for h, a := range routes {
		table[strings.ToLower(h)] = a
	}
	fallback := make(map[string]string, len(opts.Fallback))
	for h, a := range opts.Fallback {
		fallback[strings.ToLower(h)] = a
	}
	d := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: 30 * time.Second}
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
			c, err := d.DialContext(ctx, network, to)
			if err == nil || ctx.Err() != nil {
				return c, err
			}
			dr, ok := fallback[strings.ToLower(host)]
			if !ok {
				return nil, err
			}
			c, drErr := d.DialContext(ctx, network, dr)
			if drErr != nil {
				return nil, fmt.Errorf("federation: %s: %w; DR site %s: %w", host, err, dr, drErr)
			}
			return c, nil
		},
		TLSClientConfig:       opts.TLSConfig,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   opts.ConnectTimeout,
		ResponseHeaderTimeout: opts.RequestTimeout,
		ForceAttemptHTTP2:     true,
	}
	var rt http.RoundTripper = tr
	if opts.Wrap != nil {
		rt = opts.Wrap(rt)
	}
	return &http.Client{Transport: rt, Timeout: opts.RequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
