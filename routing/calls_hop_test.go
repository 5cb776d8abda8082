package routing

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-id/meridian/internal/serve"
)

// TestCallsServeHop sends calls to us's public listener as eu's router
// would (signed hop header, on a kept connection) and checks the calls
// served off the connection: a hop that verifies, without trace context,
// is answered by the local handler as net/http would answer it (length,
// sniffed type, header as at WriteHeader, no body on 204, a long answer
// streamed and the connection closed); every other hop goes through the
// instrumented chain, where the router strips it; the local handler sees
// Meridian-Hop-From only for a verified hop.
func TestCallsServeHop(t *testing.T) {
	f := newFixture(t, nil)
	var hopFrom atomic.Value
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hopFrom.Store(r.Header.Get(HopFromHeader))
		_ = r.ParseForm()
		switch r.Form.Get("do") {
		case "204":
			w.WriteHeader(http.StatusNoContent)
		case "late":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			w.Header().Set("X-Late", "1") // after WriteHeader: not sent
			_, _ = io.WriteString(w, `{"ok":true}`)
		case "html":
			_, _ = io.WriteString(w, "<html><body>hi</body></html>")
		case "big":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, strings.Repeat("x", 2*maxBuffered))
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"method":"`+r.Method+`","token":"`+r.Form.Get("token")+`"}`)
		}
	})
	rt, err := NewRouter(keyed(RouterConfig{Local: "us", Peers: []Peer{{Region: "eu", URL: "http://eu.id.test:8080", Addr: f.euSrv.Listener.Addr().String()}}}),
		f.codec, local, quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var chain atomic.Int64
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { chain.Add(1); rt.ServeHTTP(w, r) })
	lean := func(*http.Request) bool { return true }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []serve.Listener{{Server: serve.Public(rt.Front(next, lean)), Listener: ln, Calls: rt.Calls(lean)}})
	}()
	t.Cleanup(func() { cancel(); <-done })

	toUS := f.euRoute.ups["us"]
	sign := func(method, path string) string { return f.euRoute.hopValue(toUS, method, path) }
	usAT := f.mint(t, KindAccess, "us")
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	br := bufio.NewReader(conn)
	send := func(t *testing.T, method, path, body string, hdr []string) *http.Response {
		t.Helper()
		var b strings.Builder
		b.WriteString(method + " " + path + " HTTP/1.1\r\nHost: us.id.test\r\n")
		if method == http.MethodPost {
			b.WriteString("Content-Type: application/x-www-form-urlencoded\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n")
		}
		for _, h := range hdr {
			b.WriteString(h + "\r\n")
		}
		b.WriteString("\r\n" + body)
		if _, err := io.WriteString(conn, b.String()); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	form := func(do string) string { return url.Values{"token": {usAT}, "do": {do}}.Encode() }
	tests := []struct {
		name     string
		method   string
		path     string
		do       string
		hdr      []string
		viaChain bool
		hopFrom  string
		status   int
		check    func(t *testing.T, resp *http.Response, body string)
	}{
		{name: "verified hop", method: "POST", path: "/oauth/introspect", hdr: []string{HopHeader + ": " + sign("POST", "/oauth/introspect"), HopFromHeader + ": ap"},
			hopFrom: "eu", status: 200, check: func(t *testing.T, resp *http.Response, body string) {
				if body != `{"method":"POST","token":"`+usAT+`"}` || resp.ContentLength != int64(len(body)) || resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("answer %q length %d type %q", body, resp.ContentLength, resp.Header.Get("Content-Type"))
				}
				if resp.Header.Get("X-Meridian-Entry") != "us" || resp.Header.Get("Date") == "" {
					t.Errorf("entry %q date %q", resp.Header.Get("X-Meridian-Entry"), resp.Header.Get("Date"))
				}
			}},
		{name: "verified hop, GET", method: "GET", path: "/userinfo", hdr: []string{HopHeader + ": " + sign("GET", "/userinfo")}, hopFrom: "eu", status: 200},
		{name: "answer without body", method: "POST", path: "/revoke", do: "204", hdr: []string{HopHeader + ": " + sign("POST", "/revoke")}, hopFrom: "eu", status: 204,
			check: func(t *testing.T, resp *http.Response, body string) {
				if _, ok := resp.Header["Content-Length"]; ok || body != "" {
					t.Errorf("204 with Content-Length %q body %q", resp.Header.Get("Content-Length"), body)
				}
			}},
		{name: "header changed after WriteHeader", method: "POST", path: "/oauth/introspect", do: "late", hdr: []string{HopHeader + ": " + sign("POST", "/oauth/introspect")}, hopFrom: "eu", status: 201,
			check: func(t *testing.T, resp *http.Response, body string) {
				if resp.Header.Get("X-Late") != "" || body != `{"ok":true}` {
					t.Errorf("X-Late %q body %q", resp.Header.Get("X-Late"), body)
				}
			}},
		{name: "type sniffed", method: "POST", path: "/oauth/introspect", do: "html", hdr: []string{HopHeader + ": " + sign("POST", "/oauth/introspect")}, hopFrom: "eu", status: 200,
			check: func(t *testing.T, resp *http.Response, _ string) {
				if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
					t.Errorf("Content-Type %q", ct)
				}
			}},
		{name: "traced hop", method: "POST", path: "/oauth/introspect", hdr: []string{HopHeader + ": " + sign("POST", "/oauth/introspect"), "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
			viaChain: true, hopFrom: "eu", status: 200},
		{name: "hop signed for another path", method: "POST", path: "/oauth/introspect", hdr: []string{HopHeader + ": " + sign("POST", "/revoke"), HopFromHeader + ": eu"},
			viaChain: true, status: 200},
		{name: "hop signed for another method", method: "GET", path: "/userinfo", hdr: []string{HopHeader + ": " + sign("POST", "/userinfo")}, viaChain: true, status: 200},
		{name: "forged hop", method: "POST", path: "/oauth/introspect", hdr: []string{HopHeader + ": v2;eu;us;1;forged"}, viaChain: true, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c0 := chain.Load()
			hopFrom.Store("unset")
			body := ""
			if tc.method == http.MethodPost {
				body = form(tc.do)
			}
			resp := send(t, tc.method, tc.path, body, tc.hdr)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status {
				t.Fatalf("status %d (%v), want %d", resp.StatusCode, err, tc.status)
			}
			if got := chain.Load() - c0; (got == 1) != tc.viaChain || got > 1 {
				t.Errorf("instrumented chain ran %d times, want via chain %v", got, tc.viaChain)
			}
			if h := hopFrom.Load(); h != tc.hopFrom {
				t.Errorf("local handler saw Meridian-Hop-From %q, want %q", h, tc.hopFrom)
			}
			if tc.check != nil {
				tc.check(t, resp, string(b))
			}
			if tc.viaChain {
				// The connection is net/http's now: a new one for the next case.
				conn.Close()
				if conn, err = net.Dial("tcp", ln.Addr().String()); err != nil {
					t.Fatal(err)
				}
				br = bufio.NewReader(conn)
			}
		})
	}
	// A long answer is streamed and ends with the connection.
	resp := send(t, "POST", "/oauth/introspect", form("big"), []string{HopHeader + ": " + sign("POST", "/oauth/introspect")})
	b, err := io.ReadAll(resp.Body)
	if err != nil || len(b) != 2*maxBuffered || !resp.Close || resp.ContentLength != -1 {
		t.Fatalf("long answer: %d bytes (%v), close %v, length %d", len(b), err, resp.Close, resp.ContentLength)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection after a streamed answer: %v, want EOF", err)
	}
}
