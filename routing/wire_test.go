package routing

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// rawUpstream is region eu as a raw TCP server on loopback: it reads each
// request (head and Content-Length body) and writes the canned answer,
// keeping the connection open unless the answer is close-delimited. It
// records the requests and counts connections.
type rawUpstream struct {
	ln     net.Listener
	answer string
	close  bool // close the connection after each answer
	mu     sync.Mutex
	conns  int
	reqs   []*http.Request
	bodies []string
}

func newRawUpstream(t *testing.T, answer string, closeAfter bool) *rawUpstream {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, answer: answer, close: closeAfter}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns++
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	return u
}

func (u *rawUpstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		b, _ := io.ReadAll(req.Body)
		u.mu.Lock()
		u.reqs = append(u.reqs, req)
		u.bodies = append(u.bodies, string(b))
		u.mu.Unlock()
		if _, err := io.WriteString(c, u.answer); err != nil || u.close {
			return
		}
	}
}

// TestHopWire: the router's own HTTP/1.1 framing to other regions. The
// request reaches the upstream as net/http would write it (Host, body,
// Content-Length, the signed hop header, no client forwarding headers, no
// hop-by-hop ones); each framing of an answer reaches the client intact,
// and a connection is reused only after a Content-Length answer without
// Connection: close; a malformed answer gets the client a 503, never a
// broken or hung call.
func TestHopWire(t *testing.T) {
	tests := []struct {
		name       string
		answer     string
		closeAfter bool
		status     int
		body       string
		conns      int // connections for 3 calls
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"active\":true}", false, 200, `{"active":true}`, 1},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"act\r\na\r\nive\":true}\r\n0\r\n\r\n", true, 200, `{"active":true}`, 3},
		{"connection close", "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", true, 400, "no", 3},
		{"close-delimited", "HTTP/1.0 200 OK\r\n\r\nuntil close", true, 200, "until close", 3},
		{"no content", "HTTP/1.1 204 No Content\r\n\r\n", false, 204, "", 1},
		{"interim then final", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, 200, "ok", 1},
		{"malformed status", "HTTP/1.1 2x0 OK\r\n\r\n", true, 503, "", 3},
		{"conflicting lengths", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true, 503, "", 3},
		{"folded header", "HTTP/1.1 200 OK\r\nX-A: 1\r\n  2\r\nContent-Length: 2\r\n\r\nok", true, 503, "", 3},
		{"bad transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok", true, 503, "", 3},
		{"short body", "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort", true, 200, "short", 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			up := newRawUpstream(t, tc.answer, tc.closeAfter)
			f := newFixture(t, func(c *RouterConfig) {
				c.Peers[0].Addr = up.ln.Addr().String()
				c.BreakerThreshold = 100
			})
			srv, _ := routerServer(t, f.router)
			tok := f.mint(t, KindAccess, "eu")
			for range 3 {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/oauth/introspect",
					strings.NewReader("token="+tok))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.Header.Set("X-Forwarded-For", "6.6.6.6")
				req.Header.Set("Connection", "X-Secret")
				req.Header.Set("X-Secret", "hop-by-hop")
				req.Header.Set("User-Agent", "wire-test")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tc.status, b)
				}
				if tc.status != 503 && string(b) != tc.body {
					t.Fatalf("body %q, want %q", b, tc.body)
				}
			}
			up.mu.Lock()
			defer up.mu.Unlock()
			if up.conns != tc.conns {
				t.Errorf("%d connections for 3 calls, want %d", up.conns, tc.conns)
			}
			if len(up.reqs) == 0 {
				t.Fatal("no request reached the upstream")
			}
			got := up.reqs[0]
			if got.Host != "example.com" && !strings.HasPrefix(got.Host, "127.0.0.1") {
				t.Errorf("Host %q, want the client's", got.Host)
			}
			if up.bodies[0] != "token="+tok || got.ContentLength != int64(len("token="+tok)) {
				t.Errorf("body %q (length %d)", up.bodies[0], got.ContentLength)
			}
			if got.Header.Get(HopHeader) == "" || got.Header.Get("X-Secret") != "" || got.Header.Get("Connection") != "" ||
				strings.Contains(got.Header.Get("X-Forwarded-For"), "6.6.6.6") || got.UserAgent() != "wire-test" {
				t.Errorf("upstream headers: %v", got.Header)
			}
		})
	}
}
