package serve

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/meridian-id/meridian/internal/rawio"
)

// A CallServer answers some HTTP/1.1 calls on a public connection before
// net/http's server sees them: a regional node proxies calls owned by
// another region this way (routing.Router.ServeCall) without net/http's
// per-request work, which was a third of the proxying node's CPU.
//
// ServeCall looks at the call at the head of c.R (at least its first byte
// is buffered). It either leaves every byte where it is (served false: the
// connection then goes to the http.Server, which reads the call from c.R
// as if it had read it itself, and keeps the connection for good), or
// consumes exactly that call, writes the whole answer to c.W and flushes
// it (served true; keep false asks to close the connection after it). It
// must never answer a call it did not consume or consume one it did not
// answer: anything it is not sure to parse exactly as net/http would goes
// to net/http.
type CallServer interface {
	ServeCall(ctx context.Context, c *Call) (served, keep bool)
}

// Call is one accepted connection as a CallServer sees it.
type Call struct {
	Conn net.Conn
	R    *bufio.Reader
	W    *bufio.Writer
	// TLS is the connection's TLS state (nil on plain HTTP).
	TLS *tls.ConnectionState
}

// callBuffer is the read buffer of a connection served by a CallServer: a
// call it serves fits in it, head and body (larger calls go to net/http).
const callBuffer = 8 << 10

// callListener accepts the public listener's connections, does the TLS
// handshake itself when the listener serves TLS, and lets the CallServer
// answer calls on each HTTP/1.1 connection until it declines one; then
// (or at once for HTTP/2) the connection is handed to net/http through
// Accept. It enforces the server's idle, header, read and write timeouts
// on the calls it keeps, and on Close stops accepting and closes the
// connections waiting idle for their next call.
type callListener struct {
	net.Listener
	srv   *http.Server
	calls CallServer
	tls   *tls.Config // nil: plain HTTP
	log   *slog.Logger
	// draining: hand every call to net/http (which answers it with
	// Connection: close and DrainingHeader).
	draining func() bool

	ctx    context.Context
	cancel context.CancelFunc
	conns  chan net.Conn // handed to net/http
	done   chan struct{} // closed when the accept loop ends
	err    error         // why it ended (read after done)
	once   sync.Once

	mu     sync.Mutex
	idle   map[net.Conn]struct{} // kept connections waiting for a call
	closed bool
	active sync.WaitGroup // kept connections being served
}

func newCallListener(l net.Listener, srv *http.Server, calls CallServer, tlsConfig *tls.Config, draining func() bool, log *slog.Logger) *callListener {
	ctx, cancel := context.WithCancel(context.Background())
	cl := &callListener{Listener: l, srv: srv, calls: calls, tls: tlsConfig, draining: draining, log: log,
		ctx: ctx, cancel: cancel, conns: make(chan net.Conn), done: make(chan struct{}), idle: map[net.Conn]struct{}{}}
	if tlsConfig == nil {
		return cl // plain HTTP: no TLS state to carry over
	}
	// The handed connection is not a *tls.Conn: net/http cannot see its
	// TLS state, so the server takes it from the connection's context.
	prev := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if prev != nil {
			ctx = prev(ctx, c)
		}
		if hc, ok := c.(*handedConn); ok && hc.tls != nil {
			ctx = context.WithValue(ctx, tlsStateKey{}, hc.tls)
		}
		return ctx
	}
	h := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok {
				r.TLS = st
			}
		}
		h.ServeHTTP(w, r)
	})
	return cl
}

type tlsStateKey struct{}

// Accept returns the next connection for net/http: one a CallServer
// handed over, or an HTTP/2 one.
func (l *callListener) Accept() (net.Conn, error) {
	l.once.Do(func() { go l.acceptLoop() })
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, l.err
	}
}

func (l *callListener) acceptLoop() {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && l.ctx.Err() == nil {
				// As net/http does on EMFILE and similar: back off, go on.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			l.err = err
			close(l.done)
			return
		}
		delay = 0
		l.active.Add(1)
		go l.serve(c)
	}
}

// Close stops accepting; every kept connection waiting for its next call
// waits closeGrace more, refusing a call that comes (refuse), then closes.
// Calls being served finish (Wait).
func (l *callListener) Close() error {
	// Closed before the listener: once it no longer accepts, every call
	// that comes on a kept connection is refused.
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		end := time.Now().Add(closeGrace)
		for c := range l.idle {
			_ = c.SetReadDeadline(end)
		}
	}
	l.mu.Unlock()
	err := l.Listener.Close()
	l.cancel()
	return err
}

// closeGrace is how long a kept connection stays open once the listener
// closed: a call a client (a router in another region) sent on it before
// it could know gets a refusal it may retry elsewhere instead of a reset.
// Closing an idle keep-alive connection races with a call being sent on
// it, and a call lost that way (a POST) cannot be repeated safely (a CI
// run lost two routed sign-ins across a node's restart so).
const closeGrace = 500 * time.Millisecond

// RefusedHeader marks an answer (503) to a call the node did not process
// because it was shutting down: nothing of it ran, so a router sends it
// to another address of the region, whatever its method.
const RefusedHeader = "Meridian-Refused"

// refusalBody is the body of the answer to a call that came on a kept
// connection after the listener closed.
const refusalBody = `{"error":"temporarily_unavailable","error_description":"this node is shutting down and did not process the call; retry"}` + "\n"

// refuse answers the call at the head of br with a 503 carrying
// RefusedHeader, without reading the call, and ends c: its write side first, then, once the client closed or
// after rstAvoidance, the connection (closing with the call unread would
// reset it and could destroy the answer).
func (l *callListener) refuse(c net.Conn, br *bufio.Reader) {
	_ = c.SetWriteDeadline(time.Now().Add(rstAvoidance))
	answer := "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: application/json\r\n" +
		"Cache-Control: no-store\r\nRetry-After: 1\r\n" + DrainingHeader + ": 1\r\n" + RefusedHeader + ": 1\r\n" +
		"Content-Length: " + strconv.Itoa(len(refusalBody)) + "\r\n\r\n" + refusalBody
	if _, err := io.WriteString(c, answer); err == nil {
		if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			_ = c.SetReadDeadline(time.Now().Add(rstAvoidance))
			_, _ = io.Copy(io.Discard, br)
		}
	}
	c.Close()
}

// Wait waits until no kept connection is being served, or ctx ends.
func (l *callListener) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { l.active.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// waitIdle marks c as waiting for its next call, until deadline (none
// when zero); once the listener is closed, for closeGrace (a call answered
// after the close left the client free to send its next one).
func (l *callListener) waitIdle(c net.Conn, deadline time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idle[c] = struct{}{}
	if l.closed {
		deadline = time.Now().Add(closeGrace)
	}
	if !deadline.IsZero() {
		_ = c.SetReadDeadline(deadline)
	}
}

// busy marks c as being served; false when the listener is closed.
func (l *callListener) busy(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.idle, c)
	return !l.closed
}

func (l *callListener) serve(c net.Conn) {
	defer l.active.Done()
	c = rawio.Wrap(c) // beneath TLS too
	var state *tls.ConnectionState
	if l.tls != nil {
		tc := tls.Server(c, l.tls)
		hs := l.srv.ReadHeaderTimeout
		if hs <= 0 {
			hs = 10 * time.Second
		}
		ctx, cancel := context.WithTimeout(l.ctx, hs)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			c.Close()
			return
		}
		st := tc.ConnectionState()
		if st.NegotiatedProtocol != "" && st.NegotiatedProtocol != "http/1.1" {
			l.hand(tc, nil, nil) // HTTP/2: net/http's own, nothing read
			return
		}
		c, state = tc, &st
	}
	br := bufio.NewReaderSize(c, callBuffer)
	bw := bufio.NewWriterSize(c, 4<<10)
	call := &Call{Conn: c, R: br, W: bw, TLS: state}
	defer func() {
		if p := recover(); p != nil {
			l.log.Error("panic serving a call; connection closed", "panic", p)
			c.Close()
		}
	}()
	first := true
	for {
		idle := l.srv.IdleTimeout
		if first || idle <= 0 {
			idle = l.srv.ReadHeaderTimeout
		}
		var deadline time.Time
		if idle > 0 {
			deadline = time.Now().Add(idle)
		}
		l.waitIdle(c, deadline)
		_, err := br.Peek(1)
		open := l.busy(c)
		if err != nil {
			c.Close()
			return
		}
		if !open {
			l.refuse(c, br) // net/http no longer takes calls
			return
		}
		first = false
		if l.draining() {
			l.hand(c, br, state)
			return
		}
		now := time.Now()
		if t := l.srv.ReadHeaderTimeout; t > 0 {
			_ = c.SetReadDeadline(now.Add(t))
		}
		if t := l.srv.WriteTimeout; t > 0 {
			_ = c.SetWriteDeadline(now.Add(t))
		}
		// Calls being served finish when the listener closes (Wait).
		served, keep := l.calls.ServeCall(context.Background(), call)
		if !served {
			l.hand(c, br, state)
			return
		}
		if !keep {
			l.closeGracefully(c)
			return
		}
	}
}

// rstAvoidance is how long a connection the server ends stays half
// closed, as net/http keeps it: a client that sent more than the server
// read would otherwise get a reset that can destroy the last answer.
const rstAvoidance = 500 * time.Millisecond

// closeGracefully ends c after an answer: the write side first, then,
// after rstAvoidance or when the listener closes, the connection.
func (l *callListener) closeGracefully(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		t := time.NewTimer(rstAvoidance)
		select {
		case <-t.C:
		case <-l.ctx.Done():
			t.Stop()
		}
	}
	c.Close()
}

// hand gives c to net/http, with what br buffered read first.
func (l *callListener) hand(c net.Conn, br *bufio.Reader, state *tls.ConnectionState) {
	_ = c.SetDeadline(time.Time{})
	var hc net.Conn = c
	if br != nil {
		hc = &handedConn{Conn: c, br: br, tls: state}
	}
	select {
	case l.conns <- hc:
	case <-l.done:
		if br != nil {
			l.refuse(c, br) // a call net/http can no longer take
			return
		}
		c.Close()
	}
}

// handedConn is a connection handed to net/http after a CallServer
// looked at it: reads come from its buffered reader until that is empty,
// then from the connection (the buffer is let go).
type handedConn struct {
	net.Conn
	br  *bufio.Reader
	tls *tls.ConnectionState
}

func (c *handedConn) Read(b []byte) (int, error) {
	if c.br != nil {
		if c.br.Buffered() > 0 {
			return c.br.Read(b)
		}
		c.br = nil
	}
	return c.Conn.Read(b)
}

// CloseWrite lets net/http end a connection gracefully, as on the
// connection itself.
func (c *handedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
