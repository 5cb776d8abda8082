// Package serve is the listener and shutdown loop of every Meridian
// server process (regional node and hub): the public HTTP server with the
// same timeouts everywhere, the admin server (/metrics, /healthz, /readyz),
// and one rule for stopping: when the context ends, drain in-flight
// requests for up to DrainTimeout; when any server or background task fails,
// close every server at once and return that error, so that a process never
// keeps half its listeners open.
package serve

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// DrainTimeout bounds the graceful shutdown of in-flight requests.
const DrainTimeout = 15 * time.Second

// Listener is one HTTP server on its listener; CertFile and KeyFile, when
// set, serve TLS 1.2+. Calls, when set, answers the HTTP/1.1 calls it
// takes before Server sees them (see CallServer); Log then records a
// panic in it.
type Listener struct {
	Server            *http.Server
	Listener          net.Listener
	CertFile, KeyFile string
	Calls             CallServer
	Log               *slog.Logger
}

// Task is a background job that lives as long as the servers (the hub's
// DNS server). It must return when its context ends; a non-nil error
// before that stops the process.
type Task func(ctx context.Context) error

// Public returns the server of a public listener: bounded header, read,
// write and idle times and a 64 KiB header limit.
func Public(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
}

// Mount is an extra operator endpoint on an admin listener (for example
// GeoDNS's /dns/ failback endpoints on a hub that serves DNS).
type Mount struct {
	Pattern string
	Handler http.Handler
}

// NotReady is a readiness error whose text /readyz shows (a role such as
// "standby"), unlike other errors, whose details stay out of the answer.
type NotReady string

func (e NotReady) Error() string { return string(e) }

// Admin returns the server of an admin listener: GET /metrics, /healthz
// (the process is up) and /readyz (ready answers nil within two seconds;
// else 503 with notReady).
func Admin(metrics http.Handler, ready func(context.Context) error, notReady string, mounts ...Mount) *http.Server {
	mux := http.NewServeMux()
	for _, m := range mounts {
		mux.Handle(m.Pattern, m.Handler)
	}
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := ready(ctx); err != nil {
			var nr NotReady
			if errors.As(err, &nr) {
				http.Error(w, string(nr), http.StatusServiceUnavailable)
				return
			}
			http.Error(w, notReady, http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return AdminServer(mux)
}

// AdminServer is the admin listener's server: every phase of a request is
// bounded more tightly than on the public listener, so idle or slow
// connections (a port scanner, a stuck scraper) cannot pile up on the
// listener that carries health and metrics.
func AdminServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
}

// Run is RunDrain without a drain period: when ctx ends, in-flight
// requests drain for up to DrainTimeout and the listeners close.
func Run(ctx context.Context, ls []Listener, tasks ...Task) error {
	return RunDrain(ctx, 0, ls, tasks...)
}

// DrainingText is what /readyz answers (503) during the drain period.
const DrainingText = "draining"

// DrainingHeader marks every answer a node gives during its drain period
// (value "1"): routers and back channels, which dial a site's addresses
// themselves rather than through its load balancer, prefer the site's
// other addresses while one drains.
const DrainingHeader = "Meridian-Draining"

// RunDrain serves every listener and runs every task until ctx ends or a
// server or task fails (then it closes every server and returns the
// failure). When ctx ends, the node drains gracefully: /readyz on every
// listener (public and admin) answers 503 "draining" at once, so that
// GeoDNS and load balancers stop handing out the node, while every other
// request is still served, each answer closing its connection and
// carrying DrainingHeader, for the drain period
// (federation.drain_period); tasks (the hub's DNS server) keep running
// too. Then the listeners stop accepting, in-flight requests finish within
// DrainTimeout and tasks are cancelled and waited for before RunDrain
// returns.
func RunDrain(ctx context.Context, drain time.Duration, ls []Listener, tasks ...Task) error {
	var draining atomic.Bool
	for _, l := range ls {
		l.Server.Handler = drainGate(l.Server.Handler, &draining)
	}
	errc := make(chan error, len(ls)+len(tasks))
	var calls []*callListener
	for _, l := range ls {
		if l.Calls == nil {
			continue
		}
		var tc *tls.Config
		if l.CertFile != "" {
			var err error
			if tc, err = callTLS(l); err != nil {
				for _, l := range ls {
					_ = l.Listener.Close()
				}
				return err
			}
		}
		log := l.Log
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		cl := newCallListener(l.Listener, l.Server, l.Calls, tc, draining.Load, log)
		calls = append(calls, cl)
		go func() { errc <- l.Server.Serve(cl) }()
	}
	for _, l := range ls {
		if l.Calls != nil {
			continue
		}
		go func() {
			if l.CertFile != "" {
				if l.Server.TLSConfig == nil {
					l.Server.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
				}
				errc <- l.Server.ServeTLS(l.Listener, l.CertFile, l.KeyFile)
				return
			}
			errc <- l.Server.Serve(l.Listener)
		}()
	}
	// Tasks outlive ctx by the drain period: a hub keeps answering DNS
	// while it drains.
	taskCtx, stopTasks := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := t(taskCtx); err != nil && taskCtx.Err() == nil {
				errc <- err
			}
		}()
	}
	defer func() { stopTasks(); wg.Wait() }()

	fail := func(err error) error {
		for _, l := range ls {
			_ = l.Server.Close()
		}
		return err
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fail(err)
		}
	}
	if drain > 0 && ctx.Err() != nil {
		// Keep-alive ends answer by answer (Connection: close), not by
		// closing idle connections now: a connection closed as idle the
		// moment a client sends a call on it fails that call, and a code
		// redemption or refresh is never repeated. Connections still idle
		// when the drain ends are closed by Shutdown; callers that dial
		// addresses themselves have moved away by then (DrainingHeader),
		// and on a listener with Calls a call that still comes on a kept
		// connection is refused, not run (RefusedHeader), so a router
		// repeats it elsewhere.
		draining.Store(true)
		t := time.NewTimer(drain)
		select {
		case <-t.C:
		case err := <-errc:
			t.Stop()
			if !errors.Is(err, http.ErrServerClosed) {
				return fail(err)
			}
		}
	}
	stopTasks()
	shutCtx, cancel := context.WithTimeout(context.Background(), DrainTimeout)
	defer cancel()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Server.Shutdown(shutCtx))
	}
	for _, cl := range calls {
		errs = append(errs, cl.Wait(shutCtx))
	}
	return errors.Join(errs...)
}

// callTLS is the TLS configuration net/http's ServeTLS would use for l
// (TLS 1.2+, the certificate, HTTP/2 then HTTP/1.1 offered), for a
// listener whose handshakes its callListener does.
func callTLS(l Listener) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(l.CertFile, l.KeyFile)
	if err != nil {
		return nil, err
	}
	if l.Server.TLSConfig == nil {
		l.Server.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if l.Server.TLSConfig.NextProtos == nil {
		// Also what makes Serve answer HTTP/2 on the handed connections.
		l.Server.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	}
	c := l.Server.TLSConfig.Clone()
	c.Certificates = append([]tls.Certificate{cert}, c.Certificates...)
	return c, nil
}

// drainGate answers /readyz with 503 once draining is set and passes every
// other request (and /readyz before the drain) to h.
func drainGate(h http.Handler, draining *atomic.Bool) http.Handler {
	if h == nil {
		h = http.DefaultServeMux
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if draining.Load() {
			w.Header().Set("Connection", "close")
			w.Header().Set(DrainingHeader, "1")
			if r.URL.Path == "/readyz" {
				w.Header().Set("Retry-After", "5")
				http.Error(w, DrainingText, http.StatusServiceUnavailable)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}
