package serve_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/internal/testenv"
)

// testCalls is a CallServer for the listener's tests: it serves
// "POST /lean" (no body) with "lean", panics on "POST /panic", blocks on
// "POST /block" until release is closed and then declines, and declines
// every other call.
type testCalls struct {
	entered chan struct{}
	release chan struct{}
	seen    atomic.Int64 // calls looked at
}

func (tc *testCalls) count() int64 { return tc.seen.Load() }

func (tc *testCalls) ServeCall(_ context.Context, c *serve.Call) (served, keep bool) {
	tc.seen.Add(1)
	line, err := c.R.Peek(len("POST /block "))
	if err != nil {
		return false, false
	}
	switch string(line) {
	case "POST /panic ":
		panic("test: a CallServer bug")
	case "POST /block ":
		tc.entered <- struct{}{}
		<-tc.release
		return false, false
	case "POST /hold H": // held like /block, then answered off the connection
		tc.entered <- struct{}{}
		<-tc.release
	case "POST /lean H":
	default:
		return false, false
	}
	buf, _ := c.R.Peek(c.R.Buffered())
	end := bytes.Index(buf, []byte("\r\n\r\n"))
	if end < 0 {
		return false, false
	}
	close := bytes.Contains(bytes.ToLower(buf[:end]), []byte("connection: close"))
	_, _ = c.R.Discard(end + 4)
	_, _ = c.W.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlean")
	return true, c.W.Flush() == nil && !close
}

// netHandler answers as net/http: the protocol and whether r.TLS was set.
func netHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "net %s tls=%v", r.Proto, r.TLS != nil)
	})
}

type callsServer struct {
	addr   string
	calls  *testCalls
	log    *fedtest.LogBuffer
	cancel context.CancelFunc
	done   chan error
}

// startCalls serves a public listener with testCalls in front of
// netHandler; mutate adjusts the listener (timeouts, TLS) before it runs.
func startCalls(t *testing.T, drain time.Duration, mutate func(*serve.Listener)) *callsServer {
	t.Helper()
	s := &callsServer{calls: &testCalls{entered: make(chan struct{}, 16), release: make(chan struct{})},
		log: &fedtest.LogBuffer{}, done: make(chan error, 1)}
	l := serve.Listener{Server: serve.Public(netHandler()), Listener: listen(t), Calls: s.calls,
		Log: slog.New(slog.NewTextHandler(s.log, nil))}
	if mutate != nil {
		mutate(&l)
	}
	s.addr = l.Listener.Addr().String()
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	go func() { s.done <- serve.RunDrain(ctx, drain, []serve.Listener{l}) }()
	t.Cleanup(func() {
		s.cancel()
		select {
		case <-s.calls.release:
		default:
			close(s.calls.release)
		}
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			t.Error("RunDrain did not return")
		}
	})
	return s
}

// stop cancels the server's context and waits for RunDrain.
func (s *callsServer) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("RunDrain = %v", err)
		}
		s.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("RunDrain did not return")
	}
}

// rawConn is a client connection that writes raw calls and reads answers.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// call writes raw and reads one answer (body included).
func (c *rawConn) call(t *testing.T, raw string) (*http.Response, string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	return c.answer(t)
}

// answer reads one answer (body included).
func (c *rawConn) answer(t *testing.T) (*http.Response, string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read answer body: %v", err)
	}
	return resp, string(b)
}

// closed reports whether the server closed the connection within d.
func (c *rawConn) closed(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.ReadByte()
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

const (
	leanCall = "POST /lean HTTP/1.1\r\nHost: a\r\n\r\n"
	netCall  = "GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
)

// selfSigned issues a server certificate for calls.test from a test CA
// (testenv.TestCA); clients trust pool and name calls.test.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := testenv.NewTestCA(t)
	certFile, keyFile = ca.Issue(t, "calls.test")
	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool = x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("test CA certificate not parsed")
	}
	return certFile, keyFile, pool
}

// TestCallListenerTLS: with a CallServer the listener does the TLS
// handshakes itself; an HTTP/2 client still gets HTTP/2 from net/http, and
// HTTP/1.1 calls the CallServer declines reach the handler with r.TLS set,
// first on the connection or after a call it served.
func TestCallListenerTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	s := startCalls(t, 0, func(l *serve.Listener) { l.CertFile, l.KeyFile = certFile, keyFile })
	get := func(t *testing.T, tr *http.Transport) (*http.Response, string) {
		t.Helper()
		t.Cleanup(tr.CloseIdleConnections)
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + s.addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	t.Run("HTTP/2 client", func(t *testing.T) {
		resp, body := get(t, &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "calls.test"}, ForceAttemptHTTP2: true})
		if resp.ProtoMajor != 2 || body != "net HTTP/2.0 tls=true" {
			t.Fatalf("proto %s body %q, want HTTP/2 from net/http with r.TLS", resp.Proto, body)
		}
	})
	t.Run("HTTP/1.1 client, declined", func(t *testing.T) {
		resp, body := get(t, &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "calls.test", NextProtos: []string{"http/1.1"}}})
		if resp.ProtoMajor != 1 || body != "net HTTP/1.1 tls=true" {
			t.Fatalf("proto %s body %q, want HTTP/1.1 from net/http with r.TLS", resp.Proto, body)
		}
	})
	for _, alpn := range [][]string{{"http/1.1"}, nil} {
		t.Run(fmt.Sprintf("served then declined, ALPN %v", alpn), func(t *testing.T) {
			tc, err := tls.Dial("tcp", s.addr, &tls.Config{RootCAs: pool, ServerName: "calls.test", NextProtos: alpn})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { tc.Close() })
			c := &rawConn{Conn: tc, br: bufio.NewReader(tc)}
			if _, body := c.call(t, leanCall); body != "lean" {
				t.Fatalf("lean call answered %q", body)
			}
			if _, body := c.call(t, netCall); body != "net HTTP/1.1 tls=true" {
				t.Fatalf("declined call answered %q, want net/http with r.TLS", body)
			}
			if _, body := c.call(t, leanCall); body != "net HTTP/1.1 tls=true" {
				t.Fatalf("call after the hand-over answered %q, want net/http's (the connection is its own)", body)
			}
		})
	}
}

// TestCallListenerDrain: during the drain period a kept connection's next
// call goes to net/http, which answers it with Connection: close and
// Meridian-Draining, and the connection closes.
func TestCallListenerDrain(t *testing.T) {
	s := startCalls(t, time.Second, nil)
	c := dialRaw(t, s.addr)
	if _, body := c.call(t, leanCall); body != "lean" {
		t.Fatalf("before the drain: %q", body)
	}
	s.cancel()
	// Wait until the node drains (/readyz answers 503 on a new connection).
	for deadline := time.Now().Add(5 * time.Second); ; {
		resp, _ := dialRaw(t, s.addr).call(t, "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode == http.StatusServiceUnavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("never draining")
		}
		time.Sleep(5 * time.Millisecond)
	}
	resp, body := c.call(t, leanCall)
	if body != "net HTTP/1.1 tls=false" || !resp.Close || resp.Header.Get(serve.DrainingHeader) != "1" {
		t.Fatalf("draining: body %q close %v %s %q, want net/http's answer closing the connection",
			body, resp.Close, serve.DrainingHeader, resp.Header.Get(serve.DrainingHeader))
	}
	if !c.closed(2 * time.Second) {
		t.Fatal("connection kept open after a draining answer")
	}
}

// TestCallListenerShutdown: Shutdown closes a kept connection waiting for
// its next call and RunDrain returns; calls being served when it starts
// finish, and those the CallServer then declines are closed, not handed
// to a server that stopped (nor a panic).
// stopAccepting starts the server's shutdown and waits until its
// listener refuses connections.
func (s *callsServer) stopAccepting(t *testing.T) {
	t.Helper()
	s.cancel()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			return // the listener is closed
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still open after cancel")
		}
	}
}

// refused reads the refusal of a call the listener did not run
// (serve.RefusedHeader) and then the end of the connection.
func refused(t *testing.T, c *rawConn, i int) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		t.Errorf("connection %d: no refusal: %v", i, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get(serve.RefusedHeader) != "1" || !resp.Close ||
		resp.Header.Get(serve.DrainingHeader) != "1" || !strings.Contains(string(body), "temporarily_unavailable") {
		t.Errorf("connection %d: answer %d %v %q, want a 503 refusal closing the connection", i, resp.StatusCode, resp.Header, body)
	}
	if !c.closed(2 * time.Second) {
		t.Errorf("connection %d still open after the refusal", i)
	}
}

func TestCallListenerShutdown(t *testing.T) {
	t.Run("call on an idle kept connection after the listener closed", func(t *testing.T) {
		// The call a client sends on a kept connection as the node shuts
		// down is refused, not lost to a reset (a router repeats it at
		// another address, whatever its method).
		s := startCalls(t, 0, nil)
		c := dialRaw(t, s.addr)
		if _, body := c.call(t, leanCall); body != "lean" {
			t.Fatalf("lean call answered %q", body)
		}
		s.stopAccepting(t)
		served := s.calls.count()
		if _, err := io.WriteString(c, leanCall); err != nil {
			t.Fatal(err)
		}
		refused(t, c, 0)
		if s.calls.count() != served {
			t.Fatal("the CallServer saw a call that came after the listener closed")
		}
	})
	t.Run("next call after one answered during shutdown", func(t *testing.T) {
		// The answer kept the connection open, so the client sends its
		// next call on it: refused, not cut.
		s := startCalls(t, 0, nil)
		c := dialRaw(t, s.addr)
		if _, err := io.WriteString(c, "POST /hold HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-s.calls.entered:
		case <-time.After(5 * time.Second):
			t.Fatal("the call never reached the CallServer")
		}
		s.stopAccepting(t)
		time.Sleep(2 * serve.CloseGrace) // the listener closed well before the answer
		close(s.calls.release)
		if _, body := c.answer(t); body != "lean" {
			t.Fatalf("held call answered %q", body)
		}
		if _, err := io.WriteString(c, leanCall); err != nil {
			t.Fatal(err)
		}
		refused(t, c, 0)
	})
	t.Run("idle kept connection", func(t *testing.T) {
		s := startCalls(t, 0, nil)
		c := dialRaw(t, s.addr)
		if _, body := c.call(t, leanCall); body != "lean" {
			t.Fatalf("lean call answered %q", body)
		}
		s.stop(t)
		if !c.closed(2 * time.Second) {
			t.Fatal("idle kept connection still open after shutdown")
		}
	})
	t.Run("declined after shutdown started", func(t *testing.T) {
		s := startCalls(t, 0, nil)
		const n = 8
		conns := make([]*rawConn, n)
		for i := range conns {
			conns[i] = dialRaw(t, s.addr)
			if _, err := io.WriteString(conns[i], "POST /block HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
		}
		for range n {
			select {
			case <-s.calls.entered:
			case <-time.After(5 * time.Second):
				t.Fatal("calls never reached the CallServer")
			}
		}
		s.stopAccepting(t)
		close(s.calls.release)
		select {
		case err := <-s.done:
			if err != nil {
				t.Fatalf("RunDrain = %v", err)
			}
			s.done <- nil
		case <-time.After(5 * time.Second):
			t.Fatal("RunDrain did not return")
		}
		// net/http no longer takes calls: each is refused (not run) and
		// its connection ends.
		for i, c := range conns {
			refused(t, c, i)
		}
		if strings.Contains(s.log.String(), "panic") {
			t.Fatalf("a connection declined during shutdown panicked: %s", s.log.String())
		}
	})
}

// TestCallListenerPanic: a panic in ServeCall closes that connection (and
// is logged); the server goes on serving other connections, kept or new.
func TestCallListenerPanic(t *testing.T) {
	s := startCalls(t, 0, nil)
	kept := dialRaw(t, s.addr)
	if _, body := kept.call(t, leanCall); body != "lean" {
		t.Fatalf("lean call answered %q", body)
	}
	bad := dialRaw(t, s.addr)
	if _, err := io.WriteString(bad, "POST /panic HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if !bad.closed(5 * time.Second) {
		t.Fatal("connection kept open after a panic")
	}
	if !strings.Contains(s.log.String(), "panic serving a call") {
		t.Errorf("panic not logged: %q", s.log.String())
	}
	if _, body := kept.call(t, leanCall); body != "lean" {
		t.Fatalf("kept connection after another's panic: %q", body)
	}
	if _, body := dialRaw(t, s.addr).call(t, netCall); body != "net HTTP/1.1 tls=false" {
		t.Fatalf("new connection after a panic: %q", body)
	}
}

// TestCallListenerIdleTimeout: a kept connection idle for the server's
// IdleTimeout is closed; one that sends its next call in time is served.
func TestCallListenerIdleTimeout(t *testing.T) {
	const idle = 100 * time.Millisecond
	s := startCalls(t, 0, func(l *serve.Listener) { l.Server.IdleTimeout = idle })
	c := dialRaw(t, s.addr)
	for range 2 {
		if _, body := c.call(t, leanCall); body != "lean" {
			t.Fatalf("lean call answered %q", body)
		}
	}
	start := time.Now()
	if !c.closed(5 * time.Second) {
		t.Fatal("idle kept connection never closed")
	}
	if d := time.Since(start); d < idle/2 {
		t.Fatalf("closed after %v, before the idle timeout %v", d, idle)
	}
}

// emfileListener fails its first Accept as accept(2) does when the
// process is out of file descriptors.
type emfileListener struct {
	net.Listener
	failed atomic.Bool
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if !l.failed.Swap(true) {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestCallListenerAcceptBackoff: running out of file descriptors (EMFILE
// on accept) is waited out, as net/http's server does, not a failure that
// stops the node.
func TestCallListenerAcceptBackoff(t *testing.T) {
	s := startCalls(t, 0, func(l *serve.Listener) { l.Listener = &emfileListener{Listener: l.Listener} })
	got := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(c, leanCall)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		got <- string(b)
	}()
	select {
	case err := <-s.done:
		s.done <- err
		t.Fatalf("RunDrain stopped on EMFILE: %v", err)
	case body := <-got:
		if body != "lean" {
			t.Fatalf("after EMFILE: %q", body)
		}
	}
}
