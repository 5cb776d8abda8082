package routing

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-id/meridian/internal/rawio"
)

// connTransport is the router's HTTP/1.1 client to other regions: one
// pool of persistent connections per address, and each call written and
// its answer read by the goroutine that makes it. net/http's Transport
// hands every call to a writer and a reader goroutine per connection; on a
// busy machine those hand-offs, not the bytes, were most of the hop's
// latency and CPU.
//
// A pooled connection is reused only when its previous answer was read to
// the end without error and the upstream did not ask to close; before reuse
// a non-blocking read checks the upstream has not closed it while idle.
// Deadlines come from the call's context; cancelling the context aborts the
// connection at once.
type connTransport struct {
	dialer    *net.Dialer
	tlsConfig *tls.Config
	maxIdle   int           // per address
	idleFor   time.Duration // an idle connection older than this is closed

	mu   sync.Mutex
	idle map[string][]*pconn

	// poll bounds pollAnswer; inflight counts calls between sending and
	// reading their answer's head; waits keeps each address's recent
	// answer time (*atomic.Int64, nanoseconds, moving average).
	poll     time.Duration
	inflight atomic.Int64
	waits    sync.Map
	polled   atomic.Int64 // calls that polled (tests)
}

type pconn struct {
	conn   net.Conn
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
}

func newConnTransport(connectTimeout time.Duration, tlsConfig *tls.Config) *connTransport {
	return &connTransport{
		dialer:    &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second},
		tlsConfig: tlsConfig,
		maxIdle:   256,
		idleFor:   60 * time.Second,
		idle:      map[string][]*pconn{},
	}
}

// RoundTrip implements http.RoundTripper.
func (t *connTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, err
	}
	addr := req.URL.Host
	pc := t.get(addr)
	if pc == nil {
		var err error
		if pc, err = t.dial(ctx, req.URL.Scheme, addr, serverName(req)); err != nil {
			closeBody(req)
			return nil, err
		}
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = pc.conn.SetDeadline(dl)
	} else {
		_ = pc.conn.SetDeadline(time.Time{})
	}
	// Cancelling the call's context breaks the connection's blocking
	// reads and writes at once (the connection is then discarded).
	stop := context.AfterFunc(ctx, func() { _ = pc.conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (*http.Response, error) {
		stop()
		pc.conn.Close()
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	if err := writeRequest(pc.bw, req); err != nil {
		return fail(err)
	}
	if err := pc.bw.Flush(); err != nil {
		return fail(err)
	}
	sent := time.Now()
	wait := t.wait(addr)
	if t.inflight.Add(1) == 1 && t.poll > 0 && time.Duration(wait.Load()) <= t.poll {
		t.polled.Add(1)
		pollAnswer(pc, sent.Add(t.poll))
	}
	resp, reuse, err := readResponse(pc.br, req)
	t.inflight.Add(-1)
	if err == nil {
		// Moving average over about eight answers.
		d := int64(time.Since(sent))
		old := wait.Load()
		wait.Store(old + (d-old)/8)
	}
	for err == nil && resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
		resp, reuse, err = readResponse(pc.br, req) // skip interim answers
	}
	if err != nil {
		return fail(err)
	}
	resp.Body = &pooledBody{ReadCloser: resp.Body, t: t, pc: pc, addr: addr, stop: stop, reuse: reuse && !req.Close}
	return resp, nil
}

// wait returns addr's recent answer time.
func (t *connTransport) wait(addr string) *atomic.Int64 {
	if w, ok := t.waits.Load(addr); ok {
		return w.(*atomic.Int64)
	}
	w, _ := t.waits.LoadOrStore(addr, new(atomic.Int64))
	return w.(*atomic.Int64)
}

// pollAnswer polls pc's socket until an answer's first bytes arrived or
// until, without sleeping, yielding the processor between polls. A
// goroutine that waits in the poller sleeps, and its thread with it: on a
// virtual machine the wake-up costs more than a hop to a nearby address
// takes (measured here: polling a loopback hop saves ~55 us of a 230 us
// routed call). RoundTrip polls only while this is the only call in
// flight (under load the processor has other work) and only for an
// address whose recent answers came within the bound: a hop to a distant
// region never polls.
func pollAnswer(pc *pconn, until time.Time) {
	if pc.br.Buffered() > 0 {
		return
	}
	rc, err := socket(pc)
	if rc == nil || err != nil {
		return
	}
	_ = rc.Read(func(fd uintptr) bool {
		for {
			n, err := rawio.PeekNow(fd)
			if n > 0 || !errors.Is(err, syscall.EAGAIN) || !time.Now().Before(until) {
				return true // data, EOF or an error (the read that follows sees it), or time's up
			}
			runtime.Gosched()
		}
	})
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// serverName is the name a TLS upstream's certificate is verified against:
// the request's Host (the site's host name; the dial address is an IP
// address), else the dial address's host.
func serverName(req *http.Request) string {
	h := req.Host
	if h == "" {
		h = req.URL.Host
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}

func (t *connTransport) dial(ctx context.Context, scheme, addr, name string) (*pconn, error) {
	c, err := t.dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c = rawio.Wrap(c) // beneath TLS too
	if scheme == "https" {
		cfg := t.tlsConfig.Clone()
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if cfg.ServerName == "" {
			cfg.ServerName = name
		}
		cfg.NextProtos = []string{"http/1.1"}
		tc := tls.Client(c, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			// A failed handshake sent no request: report it as a dial error
			// that names the TLS cause (unknown authority, wrong name).
			return nil, &net.OpError{Op: "dial", Net: "tcp", Addr: c.RemoteAddr(), Err: fmt.Errorf("tls handshake with %s as %q: %w", addr, name, err)}
		}
		c = tc
	}
	return &pconn{conn: c, br: bufio.NewReaderSize(c, 8<<10), bw: bufio.NewWriterSize(c, 8<<10)}, nil
}

// get returns a live idle connection to addr, or nil.
func (t *connTransport) get(addr string) *pconn {
	now := time.Now()
	for {
		t.mu.Lock()
		l := t.idle[addr]
		if len(l) == 0 {
			t.mu.Unlock()
			return nil
		}
		pc := l[len(l)-1]
		l[len(l)-1] = nil
		t.idle[addr] = l[:len(l)-1]
		t.mu.Unlock()
		if now.Sub(pc.idleAt) < t.idleFor && alive(pc) {
			return pc
		}
		pc.conn.Close()
	}
}

func (t *connTransport) put(addr string, pc *pconn) {
	// The deadline is left as it is: RoundTrip sets one on every call, and
	// alive's raw read does not see it.
	pc.idleAt = time.Now()
	t.mu.Lock()
	if len(t.idle[addr]) < t.maxIdle {
		t.idle[addr] = append(t.idle[addr], pc)
		pc = nil
	}
	t.mu.Unlock()
	if pc != nil {
		pc.conn.Close()
	}
}

// alive reports whether an idle connection is still open and silent: one
// non-blocking peek must find nothing to read (EOF or stray bytes mean the
// upstream closed it or broke the protocol).
func alive(pc *pconn) bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	rc, err := socket(pc)
	if err != nil {
		return false
	}
	if rc == nil {
		return true
	}
	ok := false
	err = rc.Read(func(fd uintptr) bool {
		_, perr := rawio.PeekNow(fd)
		ok = errors.Is(perr, syscall.EAGAIN) || errors.Is(perr, syscall.EWOULDBLOCK)
		return true // one attempt, never wait
	})
	return err == nil && ok
}

// socket is the socket beneath pc's connection (beneath TLS too); nil
// without an error when the connection is not a socket.
func socket(pc *pconn) (syscall.RawConn, error) {
	c := pc.conn
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil, nil
	}
	return sc.SyscallConn()
}

// pooledBody returns its connection to the pool once the answer was read
// to the end and closed.
type pooledBody struct {
	io.ReadCloser
	t     *connTransport
	pc    *pconn
	addr  string
	stop  func() bool
	reuse bool
	done  bool
}

func (b *pooledBody) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	err := b.ReadCloser.Close() // reads what is left of the body
	if b.stop() && err == nil && b.reuse {
		b.t.put(b.addr, b.pc)
		return nil
	}
	b.pc.conn.Close()
	return err
}

// CloseIdleConnections closes every pooled connection.
func (t *connTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = map[string][]*pconn{}
	t.mu.Unlock()
	for _, l := range idle {
		for _, pc := range l {
			pc.conn.Close()
		}
	}
}
