package routing

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meridian-id/meridian/internal/serve"
)

// callBuf is the connection buffer of serve's call listener: the lean
// path takes only calls whose head and body fit in it.
const callBuf = 16 << 10

// rawCall is a routed form call as a client writes it: head lines (CRLF
// added) and then the body, with a Content-Length for it unless the
// lines name one.
func rawCall(target string, lines []string, body string) string {
	var b strings.Builder
	b.WriteString("POST " + target + " HTTP/1.1\r\n")
	cl := false
	for _, l := range lines {
		b.WriteString(l + "\r\n")
		cl = cl || strings.HasPrefix(strings.ToLower(l), "content-length")
	}
	if !cl {
		b.WriteString("Content-Length: " + strconv.Itoa(len(body)) + "\r\n")
	}
	b.WriteString("\r\n" + body)
	return b.String()
}

// formLines are the head lines of an ordinary routed form call.
var formLines = []string{"Host: id.test", "Content-Type: application/x-www-form-urlencoded"}

func withLines(extra ...string) []string { return append(append([]string{}, formLines...), extra...) }

// serveCallOn runs the CallServer on raw as if a client had sent it (and
// then closed the connection) and returns its verdict, the bytes it left
// unread and what it wrote.
func serveCallOn(t *testing.T, cs serve.CallServer, raw string) (served, keep bool, left, wrote string) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	var out bytes.Buffer
	c := &serve.Call{Conn: a, R: bufio.NewReaderSize(strings.NewReader(raw), callBuf), W: bufio.NewWriter(&out)}
	served, keep = cs.ServeCall(t.Context(), c)
	rest, _ := io.ReadAll(c.R)
	_ = c.W.Flush()
	return served, keep, string(rest), out.String()
}

// TestServeCallDeclines: the CallServer takes a routed call owned by
// another region in the strict form only; every other request, however
// close to it (smuggling shapes, encodings net/http decodes, framing it
// reads differently or rejects, heads and bodies larger than the
// connection buffer, calls not owned elsewhere), is declined with every
// byte left for net/http.
func TestServeCallDeclines(t *testing.T) {
	f := newFixture(t, nil)
	cs := f.router.Calls(func(*http.Request) bool { return true })
	euAT, usAT := f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "us")
	body := "token=" + euAT
	cl := "Content-Length: " + strconv.Itoa(len(body))
	const path = "/oauth/introspect"
	headers := func(n int) []string {
		l := withLines()
		for i := len(l); i < n; i++ {
			l = append(l, fmt.Sprintf("X-H%d: v", i))
		}
		return l
	}

	// The positive control: the same call in the strict form is served,
	// and exactly its bytes are consumed.
	eu0 := f.eu.count()
	served, keep, left, wrote := serveCallOn(t, cs, rawCall(path, withLines("Connection: keep-alive"), body)+"NEXT")
	if !served || !keep || left != "NEXT" || !strings.HasPrefix(wrote, "HTTP/1.1 200 OK\r\n") || f.eu.count() != eu0+1 {
		t.Fatalf("control call: served %v keep %v left %q wrote %q, eu calls %d", served, keep, left, wrote, f.eu.count()-eu0)
	}

	// At the limits: 64 header lines, head and body filling the buffer.
	fill := rawCall(path, withLines("X-Pad: "), body)
	for _, raw := range []string{
		rawCall(path, headers(63), body),
		rawCall(path, withLines("X-Pad: "+strings.Repeat("a", callBuf-len(fill))), body),
	} {
		eu0 := f.eu.count()
		if served, _, left, _ := serveCallOn(t, cs, raw); !served || left != "" || f.eu.count() != eu0+1 {
			t.Fatalf("call at the limits (%d bytes): served %v, left %d bytes", len(raw), served, len(left))
		}
	}

	tests := []struct{ name, raw string }{
		{"TE and CL", rawCall(path+"?token="+euAT, withLines("Transfer-Encoding: chunked", "Content-Length: 5"), "0\r\n\r\n")},
		{"TE only", "POST " + path + "?token=" + euAT + " HTTP/1.1\r\nHost: id.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)},
		{"TE identity", rawCall(path, withLines("Transfer-Encoding: identity"), body)},
		{"duplicate CL, same value", rawCall(path, withLines(cl, cl), body)},
		{"duplicate CL, two values", rawCall(path, withLines(cl, "Content-Length: 0"), body)},
		{"CL list", rawCall(path, withLines(cl+", "+strconv.Itoa(len(body))), body)},
		{"CL plus sign", rawCall(path, withLines("Content-Length: +"+strconv.Itoa(len(body))), body)},
		{"CL minus sign", rawCall(path, withLines("Content-Length: -1"), body)},
		{"CL space inside", rawCall(path, withLines("Content-Length: 1 0"), body)},
		{"CL empty", rawCall(path, withLines("Content-Length: "), body)},
		{"CL hex", rawCall(path, withLines("Content-Length: 0x10"), body)},
		{"CL underscore", rawCall(path, withLines("Content-Length: 1_0"), body)},
		{"CL huge", rawCall(path, withLines("Content-Length: 99999999999999999999"), body)},
		{"no CL", "POST " + path + " HTTP/1.1\r\nHost: id.test\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\n" + body},
		{"bare LF ends a header", strings.Replace(rawCall(path, withLines(), body), "Host: id.test\r\n", "Host: id.test\n", 1)},
		{"bare LF everywhere", strings.ReplaceAll(rawCall(path, withLines(), body), "\r\n", "\n")},
		{"bare LF ends the head", strings.Replace(rawCall(path, withLines(), body), "\r\n\r\n", "\r\n\n", 1) + "\r\n\r\n"},
		{"bare CR in a value", rawCall(path, withLines("X-A: a\rb"), body)},
		{"obs-fold", rawCall(path, withLines("X-A: a", " b"), body)},
		{"obs-fold with tab", rawCall(path, withLines("X-A: a", "\tContent-Length: 0"), body)},
		{"space before colon", rawCall(path, withLines("Content-Length : "+strconv.Itoa(len(body))), body)},
		{"space in name", rawCall(path, withLines("X A: b"), body)},
		{"empty name", rawCall(path, withLines(": b"), body)},
		{"no colon", rawCall(path, withLines("X-A b"), body)},
		{"non-token name", rawCall(path, withLines("X@A: b"), body)},
		{"non-ASCII name", rawCall(path, withLines("X-\xc3\xa9: b"), body)},
		{"Expect 100-continue", rawCall(path, withLines("Expect: 100-continue"), body)},
		{"Upgrade", rawCall(path, withLines("Connection: Upgrade", "Upgrade: h2c"), body)},
		{"TE header", rawCall(path, withLines("TE: trailers"), body)},
		{"Trailer", rawCall(path, withLines("Trailer: X-A"), body)},
		{"HTTP/1.0", strings.Replace(rawCall(path, withLines(), body), "HTTP/1.1", "HTTP/1.0", 1)},
		{"HTTP/2.0 line", strings.Replace(rawCall(path, withLines(), body), "HTTP/1.1", "HTTP/2.0", 1)},
		{"lower-case version", strings.Replace(rawCall(path, withLines(), body), "HTTP/1.1", "http/1.1", 1)},
		{"lower-case method", strings.Replace(rawCall(path, withLines(), body), "POST", "post", 1)},
		{"PUT", strings.Replace(rawCall(path, withLines(), body), "POST", "PUT", 1)},
		{"two spaces after method", strings.Replace(rawCall(path, withLines(), body), "POST ", "POST  ", 1)},
		{"tab after method", strings.Replace(rawCall(path, withLines(), body), "POST ", "POST\t", 1)},
		{"trailing space in request line", strings.Replace(rawCall(path, withLines(), body), "HTTP/1.1\r\n", "HTTP/1.1 \r\n", 1)},
		{"no target", "POST HTTP/1.1\r\nHost: id.test\r\n\r\n"},
		{"empty target", strings.Replace(rawCall(path, withLines(), body), " "+path+" ", "  ", 1)},
		{"leading blank line", "\r\n" + rawCall(path, withLines(), body)},
		{"absolute-form target", rawCall("http://id.test"+path, withLines(), body)},
		{"authority-form target", rawCall("id.test:443", withLines(), body)},
		{"asterisk target", rawCall("*", withLines(), body)},
		{"escaped slash", rawCall("/oauth%2Fintrospect", withLines(), body)},
		{"escaped letter decoding to a routed path", rawCall("/oauth/%69ntrospect", withLines(), body)},
		{"escape in query", rawCall(path+"?a=%41", withLines(), body)},
		{"fragment", rawCall(path+"#x", withLines(), body)},
		{"non-ASCII target", rawCall(path+"?\xc3\xa9", withLines(), body)},
		{"dot segment", rawCall("/oauth/../oauth/introspect", withLines(), body)},
		{"trailing slash", rawCall(path+"/", withLines(), body)},
		{"two Host headers", rawCall(path, withLines("Host: other.test"), body)},
		{"two Host headers, same value", rawCall(path, withLines("Host: id.test"), body)},
		{"no Host", rawCall(path, []string{"Content-Type: application/x-www-form-urlencoded"}, body)},
		{"empty Host", rawCall(path, []string{"Host: ", "Content-Type: application/x-www-form-urlencoded"}, body)},
		{"Host with user info", rawCall(path, []string{"Host: u@id.test", "Content-Type: application/x-www-form-urlencoded"}, body)},
		{"Host with space", rawCall(path, []string{"Host: id .test", "Content-Type: application/x-www-form-urlencoded"}, body)},
		{"Host with escape", rawCall(path, []string{"Host: id%2etest", "Content-Type: application/x-www-form-urlencoded"}, body)},
		{"NUL in a value", rawCall(path, withLines("X-A: a\x00b"), body)},
		{"DEL in a value", rawCall(path, withLines("X-A: a\x7fb"), body)},
		{"control in a value", rawCall(path, withLines("X-A: a\x01b"), body)},
		{"Connection: foo", rawCall(path, withLines("Connection: foo"), body)},
		{"Connection naming a header", rawCall(path, withLines("Connection: close, Authorization"), body)},
		{"65 header lines", rawCall(path, headers(64), body)}, // and the Content-Length line
		{"head larger than the buffer", rawCall(path, withLines("X-Pad: "+strings.Repeat("a", callBuf)), body)},
		{"one byte more than the buffer", rawCall(path, withLines("X-Pad: "+strings.Repeat("a", callBuf-len(fill)+1)), body)},
		{"body larger than the buffer", rawCall(path, withLines(), body+"&pad="+strings.Repeat("a", callBuf))},
		{"body shorter than its length (client gone)", rawCall(path, withLines("Content-Length: "+strconv.Itoa(len(body)+10)), body)},
		{"head cut off", strings.TrimSuffix(rawCall(path, withLines(), ""), "\r\n")},
		{"hop header", rawCall(path, withLines(HopHeader+": v2;eu;us;1;forged"), body)},
		{"JSON body", rawCall(path, []string{"Host: id.test", "Content-Type: application/json"}, body)},
		{"no Content-Type", rawCall(path, []string{"Host: id.test"}, body)},
		{"not a routed path", rawCall("/oauth/other", withLines(), body)},
		{"local token", rawCall(path, withLines(), "token="+usAT)},
		{"forged token", rawCall(path, withLines(), "token="+flipChar(euAT))},
		{"GET userinfo", "GET /userinfo HTTP/1.1\r\nHost: id.test\r\nAuthorization: Bearer " + euAT + "\r\n\r\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eu0 := f.eu.count()
			served, _, left, wrote := serveCallOn(t, cs, tc.raw)
			if served || wrote != "" {
				t.Fatalf("served (wrote %q), want declined", wrote)
			}
			if left != tc.raw {
				t.Fatalf("declined after consuming %d bytes", len(tc.raw)-len(left))
			}
			if f.eu.count() != eu0 {
				t.Fatal("a declined call reached eu")
			}
		})
	}
	// lean not holding: declined too.
	served, _, left, _ = serveCallOn(t, f.router.Calls(func(*http.Request) bool { return false }), rawCall(path, withLines(), body))
	if served || left != rawCall(path, withLines(), body) {
		t.Fatalf("lean false: served %v", served)
	}
}

// FuzzParseCall is the lean path's parser against net/http's: whenever
// parseCall accepts a head, http.ReadRequest (and the checks net/http's
// server adds: one Host, valid host, valid header names and values) reads
// the same bytes as the same call — method, path, query, Host, every
// header value, Content-Length, Connection — and consumes exactly the
// same bytes, head and body, leaving the next call where it starts.
//
//	go test -run '^$' -fuzz FuzzParseCall -fuzztime 60s ./routing/
func FuzzParseCall(f *testing.F) {
	const path = "/oauth/token"
	body := "grant_type=refresh_token&refresh_token=x"
	seeds := []string{
		rawCall(path, withLines(), body),
		rawCall(path+"?a=b&c=d;e", withLines(), body),
		rawCall(path+"?", withLines(), body),
		rawCall(path+"??a", withLines(), body),
		rawCall(path, withLines("Content-Length: 0040"), body),
		rawCall(path, withLines("Content-Length:40"), body),
		rawCall(path, withLines("Content-Length: \t40\t "), body),
		rawCall(path, []string{"host: ID.test:8080", "content-type: application/x-www-form-urlencoded; charset=utf-8", "content-length: 40"}, body),
		rawCall(path, []string{"HOST: [::1]:443", "CONTENT-TYPE: application/x-www-form-urlencoded", "cOnTeNt-LeNgTh: 40"}, body),
		rawCall(path, withLines("Connection: close"), body),
		rawCall(path, withLines("Connection: Keep-Alive, ,CLOSE"), body),
		rawCall(path, withLines("Authorization: Basic Zm9vOmJhcg==", "authorization: second"), body),
		rawCall(path, withLines("X-A:", "X-B: \t ", "x_c: d", "X-D: caf\xc3\xa9", "X-E: a\tb"), body),
		rawCall(path, withLines("Pragma: no-cache"), body),
		rawCall(path, withLines("Pragma: no-cache", "Cache-Control: max-age=0"), body),
		rawCall(path, withLines("Meridian-Hop-From: ap", "X-Forwarded-For: 1.2.3.4"), body),
		rawCall(path, withLines(), ""),
		rawCall(path, withLines(), body) + rawCall(path, withLines(), body),
		// Nasty ones: each must be declined or read alike.
		rawCall(path, withLines("Transfer-Encoding: chunked"), "0\r\n\r\n"),
		rawCall(path, withLines("Transfer-Encoding : chunked"), "0\r\n\r\n"),
		rawCall(path, withLines("Transfer-Encoding: chunked", "Content-Length: 5"), "0\r\n\r\n"),
		rawCall(path, withLines("Content-Length: 5", "Content-Length: 5"), "01234"),
		rawCall(path, withLines("Content-Length: +5"), "01234"),
		rawCall(path, withLines("Content-Length: 5 "), "01234"),
		rawCall(path, withLines("Content-Length: 0\x0b"), ""),
		rawCall(path, withLines("X-A: a", " Content-Length: 0"), body),
		strings.ReplaceAll(rawCall(path, withLines(), body), "\r\n", "\n"),
		strings.Replace(rawCall(path, withLines(), body), "Host: id.test\r\n", "Host: id.test\n", 1),
		strings.Replace(rawCall(path, withLines(), body), "Host: id.test\r\n", "Host: id.test\rContent-Length: 0\r\n", 1),
		rawCall(path, withLines("Expect: 100-continue"), body),
		rawCall(path, withLines("Upgrade: h2c", "Connection: Upgrade"), body),
		rawCall("http://id.test"+path, withLines(), body),
		rawCall("/oauth%2Ftoken", withLines(), body),
		rawCall(path+"#f", withLines(), body),
		rawCall(path, withLines("Host: other"), body),
		rawCall(path, withLines("X-A: \x00"), body),
		rawCall(path, withLines("Connection: foo"), body),
		strings.Replace(rawCall(path, withLines(), body), "HTTP/1.1", "HTTP/1.0", 1),
		"POST " + path + " HTTP/1.1\r\nHost: id.test\r\nContent-Length: 5\r\n\r\n01234POST " + path + " HTTP/1.1\r\nHost: id.test\r\nContent-Length: 0\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		end := bytes.Index(in, crlfcrlf)
		if end < 0 {
			return
		}
		n := end + len(crlfcrlf)
		head := in[:n]
		p, ok := parseCall(head)
		if !ok {
			return
		}
		if p.length > int64(callBuf-n) {
			return // declined by ServeCall
		}
		// What follows the head: its body (the fuzzer's bytes, padded) and
		// then the next call.
		rest := append([]byte{}, in[n:]...)
		for int64(len(rest)) < p.length {
			rest = append(rest, 'b')
		}
		wantBody, next := rest[:p.length], rest[p.length:]
		br := bufio.NewReader(bytes.NewReader(append(append([]byte{}, head...), rest...)))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("parseCall accepted %q, net/http rejects it: %v", head, err)
		}
		// What net/http's server checks on top of ReadRequest.
		if !httpguts.ValidHostHeader(req.Host) {
			t.Fatalf("parseCall accepted Host %q, net/http's server rejects it", req.Host)
		}
		for k, vs := range req.Header {
			if !httpguts.ValidHeaderFieldName(k) {
				t.Fatalf("parseCall accepted header name %q, net/http's server rejects it", k)
			}
			for _, v := range vs {
				if !httpguts.ValidHeaderFieldValue(v) {
					t.Fatalf("parseCall accepted %s value %q, net/http's server rejects it", k, v)
				}
			}
		}
		if req.Method != http.MethodPost || req.Proto != "HTTP/1.1" || req.URL.Path != p.path || req.URL.RawPath != "" ||
			req.URL.RawQuery != p.query || req.RequestURI != p.uri || req.Host != p.host || req.URL.Host != "" {
			t.Fatalf("net/http reads %s %q (raw path %q) query %q uri %q host %q, parseCall %q %q %q %q",
				req.Method, req.URL.Path, req.URL.RawPath, req.URL.RawQuery, req.RequestURI, req.Host, p.path, p.query, p.uri, p.host)
		}
		want := p.header.Clone()
		if want == nil {
			want = http.Header{}
		}
		// net/http reads Pragma: no-cache alone as Cache-Control: no-cache
		// too; the upstream's net/http does the same with what is forwarded.
		if pragma, ok := want["Pragma"]; ok && len(pragma) > 0 && pragma[0] == "no-cache" {
			if _, ok := want["Cache-Control"]; !ok {
				want["Cache-Control"] = []string{"no-cache"}
			}
		}
		got := req.Header.Clone()
		delete(got, "Host") // the server keeps Host out of the map
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("headers differ:\nnet/http  %q\nparseCall %q", got, want)
		}
		if req.ContentLength != p.length || len(req.TransferEncoding) != 0 || req.Close != p.close {
			t.Fatalf("net/http: length %d TE %v close %v; parseCall: length %d close %v",
				req.ContentLength, req.TransferEncoding, req.Close, p.length, p.close)
		}
		gotBody, err := io.ReadAll(req.Body)
		if err != nil || !bytes.Equal(gotBody, wantBody) {
			t.Fatalf("net/http body %q (%v), parseCall's %q", gotBody, err, wantBody)
		}
		left, _ := io.ReadAll(br)
		if !bytes.Equal(left, next) {
			t.Fatalf("net/http leaves %q for the next call, parseCall %q", left, next)
		}
	})
}

// callNode is us's public listener as a node serves it: serve.RunDrain
// with the router's CallServer in front of Front and the router, and the
// same handler behind a plain net/http server (ref) to compare with.
type callNode struct {
	addr, ref string
	// viaHTTP counts the requests net/http's server answered on the
	// listener with the CallServer (started, done).
	viaHTTP, httpDone atomic.Int64
}

func startCallNode(t *testing.T, f *fixture) *callNode {
	t.Helper()
	n := &callNode{}
	lean := func(*http.Request) bool { return true }
	front := f.router.Front(f.router, lean)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.addr = ln.Addr().String()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.viaHTTP.Add(1)
		defer n.httpDone.Add(1)
		front.ServeHTTP(w, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.RunDrain(ctx, 0, []serve.Listener{{Server: serve.Public(h), Listener: ln, Calls: f.router.Calls(lean)}})
	}()
	ref := httptest.NewServer(front)
	n.ref = ref.Listener.Addr().String()
	t.Cleanup(func() {
		ref.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("RunDrain = %v", err)
		}
	})
	return n
}

// answer is one answer read off a raw connection.
type answer struct {
	status          int
	servedBy, entry string
	body            string
	resp            *http.Response
}

// exchange writes each part of raw (pausing between parts), optionally
// closes, and reads answers until the connection closes or want answers
// arrived (0: until it closes).
func exchange(t *testing.T, addr string, want int, pause time.Duration, parts ...string) (answers []answer, conn net.Conn) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	for i, p := range parts {
		if i > 0 {
			time.Sleep(pause)
		}
		if _, err := io.WriteString(c, p); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	br := bufio.NewReader(c)
	for want == 0 || len(answers) < want {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			if want > 0 {
				t.Fatalf("answer %d: %v", len(answers)+1, err)
			}
			break
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("answer %d body: %v", len(answers)+1, err)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != int64(len(b)) {
			t.Fatalf("answer %d: Content-Length %d, body %d bytes", len(answers)+1, resp.ContentLength, len(b))
		}
		answers = append(answers, answer{resp.StatusCode, resp.Header.Get("X-Served-By"), resp.Header.Get("X-Meridian-Entry"), string(b), resp})
	}
	return answers, c
}

// closedConn reports whether the server closed c within d.
func closedConn(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// bodiesSince returns the bodies s recorded after its first n calls.
func (s *seen) bodiesSince(n int) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string{}, s.body[n:]...)
}

// TestCallsOverSocket drives us's public listener with raw bytes: calls
// owned by eu are proxied off the connection (eu's answer, each call
// served once at eu), pipelined calls are answered in order, the
// connection goes to net/http at the first call the lean path does not
// take, and calls it does not take (too large, cut off, an unreachable
// region) get net/http's answers.
func TestCallsOverSocket(t *testing.T) {
	f := newFixture(t, nil)
	n := startCallNode(t, f)
	euAT, euAT2, usAT, apAT := f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "us"), f.mint(t, KindAccess, "ap")
	const path = "/oauth/introspect"
	call := func(body string, extra ...string) string { return rawCall(path, withLines(extra...), body) }
	tok := func(s string) string { return "token=" + s }
	ok := func(by string) answer { return answer{status: 200, servedBy: by, entry: "us", body: by} }

	tests := []struct {
		name     string
		parts    []string
		pause    time.Duration
		want     []answer
		euBodies []string // what eu served, in order
		viaHTTP  int64    // requests net/http answered
		closes   bool     // the server closes the connection after the answers
	}{
		{"lean-proxied call", []string{call(tok(euAT))}, 0, []answer{ok("eu")}, []string{tok(euAT)}, 0, false},
		{"two pipelined calls in one write", []string{call(tok(euAT)) + call(tok(euAT2))}, 0,
			[]answer{ok("eu"), ok("eu")}, []string{tok(euAT), tok(euAT2)}, 0, false},
		{"lean call then a local call", []string{call(tok(euAT)) + call(tok(usAT))}, 0,
			[]answer{ok("eu"), ok("us")}, []string{tok(euAT)}, 1, false},
		{"lean call then GET /userinfo", []string{call(tok(euAT)) + "GET /userinfo HTTP/1.1\r\nHost: id.test\r\nAuthorization: Bearer " + usAT + "\r\n\r\n"}, 0,
			[]answer{ok("eu"), ok("us")}, []string{tok(euAT)}, 1, false},
		{"net/http keeps the connection after the hand-over", []string{call(tok(usAT)) + call(tok(euAT))}, 0,
			[]answer{ok("us"), ok("eu")}, []string{tok(euAT)}, 2, false},
		{"body split over slow writes", func() []string {
			c := call(tok(euAT))
			i := strings.Index(c, "\r\n\r\n") + 4
			return []string{c[:i-2], c[i-2 : i+3], c[i+3 : i+10], c[i+10:]}
		}(), 20 * time.Millisecond, []answer{ok("eu")}, []string{tok(euAT)}, 0, false},
		{"Connection: close", []string{call(tok(euAT), "Connection: close") + call(tok(euAT2))}, 0,
			[]answer{ok("eu")}, []string{tok(euAT)}, 0, true},
		{"body larger than the buffer", []string{call(tok(euAT) + "&pad=" + strings.Repeat("a", callBuf))}, 0,
			[]answer{ok("eu")}, []string{tok(euAT) + "&pad=" + strings.Repeat("a", callBuf)}, 1, false},
		{"head larger than the buffer", []string{call(tok(euAT), "X-Pad: "+strings.Repeat("a", callBuf))}, 0,
			[]answer{ok("eu")}, []string{tok(euAT)}, 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eu0, h0 := f.eu.count(), n.viaHTTP.Load()
			got, c := exchange(t, n.addr, len(tc.want), tc.pause, tc.parts...)
			for i, a := range got {
				w := tc.want[i]
				if a.status != w.status || a.servedBy != w.servedBy || a.entry != w.entry || a.body != w.body {
					t.Errorf("answer %d: %d by %q entry %q body %q, want %d by %q entry %q body %q",
						i+1, a.status, a.servedBy, a.entry, a.body, w.status, w.servedBy, w.entry, w.body)
				}
				if a.resp.ContentLength != int64(len(a.body)) {
					t.Errorf("answer %d: Content-Length %d for %d bytes", i+1, a.resp.ContentLength, len(a.body))
				}
			}
			if b := f.eu.bodiesSince(eu0); !reflect.DeepEqual(b, tc.euBodies) {
				t.Errorf("eu served %d calls %.80q, want %.80q", len(b), b, tc.euBodies)
			}
			if h := n.viaHTTP.Load() - h0; h != tc.viaHTTP {
				t.Errorf("net/http answered %d requests, want %d", h, tc.viaHTTP)
			}
			if tc.closes {
				if !got[len(got)-1].resp.Close {
					t.Error("answer without Connection: close")
				}
				if !closedConn(c, 2*time.Second) {
					t.Error("connection kept open")
				}
			}
		})
	}

	t.Run("what eu sees and what the client gets, against net/http", func(t *testing.T) {
		// A client's forwarding and hop headers are replaced as behind
		// net/http; the answer carries the same headers.
		raw := call(tok(euAT), "Meridian-Hop-From: ap", "X-Forwarded-For: 6.6.6.6", "X-Forwarded-Host: evil.test", "X-Custom: a", "x-custom: b")
		var seenBy [2]*http.Request
		var answers [2]answer
		for i, addr := range []string{n.addr, n.ref} {
			eu0, h0 := f.eu.count(), n.viaHTTP.Load()
			got, _ := exchange(t, addr, 1, 0, raw)
			answers[i] = got[0]
			if f.eu.count() != eu0+1 || n.viaHTTP.Load() != h0 {
				t.Fatalf("%s: eu served %d calls, net/http %d", addr, f.eu.count()-eu0, n.viaHTTP.Load()-h0)
			}
			f.eu.mu.Lock()
			seenBy[i] = f.eu.reqs[len(f.eu.reqs)-1]
			f.eu.mu.Unlock()
		}
		l, r := seenBy[0], seenBy[1]
		if l.Host != "id.test" || l.Host != r.Host || l.URL.RequestURI() != r.URL.RequestURI() {
			t.Errorf("eu saw host %q %q, net/http's %q %q", l.Host, l.URL.RequestURI(), r.Host, r.URL.RequestURI())
		}
		for _, k := range []string{HopFromHeader, "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Custom", "Content-Type", "Content-Length", "User-Agent"} {
			if !reflect.DeepEqual(l.Header[k], r.Header[k]) {
				t.Errorf("eu saw %s %q from the lean path, %q via net/http", k, l.Header[k], r.Header[k])
			}
		}
		if l.Header.Get(HopFromHeader) != "us" || l.Header.Get("X-Forwarded-For") != "127.0.0.1" || l.Header.Get("X-Forwarded-Host") != "id.test" {
			t.Errorf("eu saw hop from %q, X-Forwarded-For %q, X-Forwarded-Host %q", l.Header.Get(HopFromHeader), l.Header.Get("X-Forwarded-For"), l.Header.Get("X-Forwarded-Host"))
		}
		la, ra := answers[0].resp.Header.Clone(), answers[1].resp.Header.Clone()
		la.Del("Date")
		ra.Del("Date")
		if !reflect.DeepEqual(la, ra) || answers[0].body != answers[1].body || answers[0].status != answers[1].status {
			t.Errorf("answer from the lean path %d %q %q, via net/http %d %q %q", answers[0].status, la, answers[0].body, answers[1].status, ra, answers[1].body)
		}
	})

	t.Run("client closes mid-body", func(t *testing.T) {
		eu0, d0 := f.eu.count(), n.httpDone.Load()
		c, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		raw := call(tok(euAT))
		if _, err := io.WriteString(c, raw[:len(raw)-10]); err != nil {
			t.Fatal(err)
		}
		c.Close()
		// The lean path declines the cut call; net/http reads it to its end
		// and fails it.
		for deadline := time.Now().Add(5 * time.Second); n.httpDone.Load() == d0; time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the cut call never reached net/http")
			}
		}
		if f.eu.count() != eu0 {
			t.Fatal("a call cut off mid-body reached eu")
		}
		got, _ := exchange(t, n.addr, 1, 0, call(tok(euAT2)))
		if got[0].status != 200 || got[0].servedBy != "eu" || f.eu.count() != eu0+1 {
			t.Fatalf("after a cut call: %d by %q, eu calls %d", got[0].status, got[0].servedBy, f.eu.count()-eu0)
		}
	})

	t.Run("region unreachable", func(t *testing.T) {
		// The same answer as net/http's path gives (compared with the
		// plain server), from the lean path.
		h0 := n.viaHTTP.Load()
		lean, _ := exchange(t, n.addr, 1, 0, call(tok(apAT)))
		ref, _ := exchange(t, n.ref, 1, 0, call(tok(apAT)))
		if n.viaHTTP.Load() != h0 {
			t.Error("the call went to net/http")
		}
		l, r := lean[0], ref[0]
		if l.status != http.StatusServiceUnavailable || l.body != r.body || r.status != l.status || !strings.Contains(l.body, `"temporarily_unavailable"`) {
			t.Fatalf("lean path: %d %q, net/http: %d %q", l.status, l.body, r.status, r.body)
		}
		for _, k := range []string{"Content-Type", "Retry-After", "Cache-Control", "X-Meridian-Entry", "Content-Length"} {
			if l.resp.Header.Get(k) != r.resp.Header.Get(k) {
				t.Errorf("%s: lean path %q, net/http %q", k, l.resp.Header.Get(k), r.resp.Header.Get(k))
			}
		}
	})
}

// TestCallsSmuggling sends request smuggling shapes to us's listener with
// the lean path and to the same handler behind a plain net/http server:
// both answer alike (status, region, body) and eu serves the same calls
// with the same bodies; a call hidden in another's body reaches eu on its
// own only where net/http's own framing makes it a call (and then once). Each exchange ends with a sentinel call closing the
// connection, so that every answer is read.
func TestCallsSmuggling(t *testing.T) {
	f := newFixture(t, nil)
	n := startCallNode(t, f)
	euAT, euAT2 := f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "eu")
	const path = "/oauth/introspect"
	hidden := rawCall(path, withLines(), "token="+euAT2)
	const sentinel = "GET /sentinel HTTP/1.1\r\nHost: id.test\r\nConnection: close\r\n\r\n"
	head := func(target string, lines ...string) string {
		return "POST " + target + " HTTP/1.1\r\n" + strings.Join(append(withLines(), lines...), "\r\n") + "\r\n\r\n"
	}
	chunkedHidden := "0\r\n\r\n" + hidden
	tests := []struct {
		name string
		raw  string
		// asCall: net/http's framing makes the hidden call a call of its
		// own (a chunked body, a bare LF, a short body), served after the
		// first; else it is part of a body or the request is refused.
		asCall bool
	}{
		{"CL and TE chunked", head(path+"?token="+euAT, "Content-Length: "+strconv.Itoa(len(chunkedHidden)), "Transfer-Encoding: chunked") + chunkedHidden, true},
		{"TE chunked and CL", head(path+"?token="+euAT, "Transfer-Encoding: chunked", "Content-Length: 5") + chunkedHidden, true},
		{"TE with a space before the colon", head(path+"?token="+euAT, "Transfer-Encoding : chunked", "Content-Length: "+strconv.Itoa(len(chunkedHidden))) + chunkedHidden, false},
		{"two Content-Lengths", head(path+"?token="+euAT, "Content-Length: 0", "Content-Length: "+strconv.Itoa(len(hidden))) + hidden, false},
		{"Content-Length in an obs-fold", head(path+"?token="+euAT, "X-A: a", " Content-Length: 0", "Content-Length: "+strconv.Itoa(len(hidden))) + hidden, false},
		{"bare LF before Content-Length", strings.Replace(head(path+"?token="+euAT, "X-A: a", "Content-Length: 0"), "X-A: a\r\n", "X-A: a\n", 1) + hidden, true},
		{"a call in the body", head(path+"?token="+euAT, "Content-Length: "+strconv.Itoa(len(hidden))) + hidden, false},
		{"a call after a short body", head(path, "Content-Length: "+strconv.Itoa(len("token="+euAT))) + "token=" + euAT + hidden, true},
		{"Expect with a call in the body", head(path+"?token="+euAT, "Expect: 100-continue", "Content-Length: "+strconv.Itoa(len(hidden))) + hidden, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eu0 := f.eu.count()
			lean, _ := exchange(t, n.addr, 0, 0, tc.raw+sentinel)
			euLean := f.eu.bodiesSince(eu0)
			eu1 := f.eu.count()
			ref, _ := exchange(t, n.ref, 0, 0, tc.raw+sentinel)
			euRef := f.eu.bodiesSince(eu1)
			if len(lean) != len(ref) {
				t.Fatalf("%d answers with the lean path, %d from net/http alone", len(lean), len(ref))
			}
			for i := range lean {
				l, r := lean[i], ref[i]
				if l.status != r.status || l.servedBy != r.servedBy || l.body != r.body {
					t.Errorf("answer %d: lean path %d by %q %q, net/http %d by %q %q", i+1, l.status, l.servedBy, l.body, r.status, r.servedBy, r.body)
				}
				if l.status >= 500 {
					t.Errorf("answer %d: %d", i+1, l.status)
				}
			}
			if !reflect.DeepEqual(euLean, euRef) {
				t.Errorf("eu served %.100q with the lean path, %.100q from net/http alone", euLean, euRef)
			}
			alone := 0
			for _, b := range euLean {
				if b == "token="+euAT2 {
					alone++
				}
			}
			if want := map[bool]int{true: 1, false: 0}[tc.asCall]; alone != want {
				t.Errorf("the hidden call reached eu on its own %d times, want %d", alone, want)
			}
		})
	}
}

// FuzzServeCall runs the CallServer on arbitrary bytes (eu unreachable,
// so a call it takes gets its 503 at once): it never panics; a call it
// declines leaves every byte unread and nothing written; a call it takes
// is the call http.ReadRequest reads, consuming the same bytes, and gets
// one well-formed answer with a Content-Length.
//
//	go test -run '^$' -fuzz FuzzServeCall -fuzztime 60s ./routing/
func FuzzServeCall(f *testing.F) {
	codec := testCodec(f)
	rt, err := NewRouter(keyed(RouterConfig{Local: "us", Peers: []Peer{{Region: "eu", URL: "http://eu.id.test", Addr: "127.0.0.1:1"}},
		ConnectTimeout: time.Second}), codec, http.NotFoundHandler(), quiet(), nil)
	if err != nil {
		f.Fatal(err)
	}
	cs := rt.Calls(func(*http.Request) bool { return true })
	euAT, _ := codec.New(KindAccess, "eu")
	euRT, _ := codec.New(KindRefresh, "eu")
	body := "token=" + euAT
	for _, s := range []string{
		rawCall("/oauth/introspect", withLines(), body),
		rawCall("/oauth/introspect", withLines(), body) + "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		rawCall("/oauth/token?grant_type=refresh_token", withLines("Connection: close"), "refresh_token="+euRT),
		rawCall("/oauth/introspect?token="+euAT, withLines(), ""),
		rawCall("/oauth/introspect?token="+euAT, withLines("Transfer-Encoding: chunked"), "0\r\n\r\n"),
		rawCall("/oauth/introspect", withLines("Content-Length: 99"), body),
		rawCall("/oauth/introspect", withLines("Content-Length: 3"), body),
		"POST HTTP/1.1\r\n\r\n",
		"POST  HTTP/1.1\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		var out bytes.Buffer
		c := &serve.Call{Conn: a, R: bufio.NewReaderSize(bytes.NewReader(in), callBuf), W: bufio.NewWriter(&out)}
		served, _ := cs.ServeCall(context.Background(), c)
		left, _ := io.ReadAll(c.R)
		_ = c.W.Flush()
		if !served {
			if !bytes.Equal(left, in) || out.Len() != 0 {
				t.Fatalf("declined after consuming %d bytes and writing %q", len(in)-len(left), out.String())
			}
			return
		}
		br := bufio.NewReader(bytes.NewReader(in))
		req, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("served a call net/http rejects: %v", err)
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			t.Fatalf("served a call whose body net/http cannot read: %v", err)
		}
		if rest, _ := io.ReadAll(br); !bytes.Equal(rest, left) {
			t.Fatalf("consumed up to %q, net/http up to %q", left, rest)
		}
		resp, err := http.ReadResponse(bufio.NewReader(&out), nil)
		if err != nil {
			t.Fatalf("answer %q: %v", out.String(), err)
		}
		ab, err := io.ReadAll(resp.Body)
		if err != nil || resp.ContentLength != int64(len(ab)) {
			t.Fatalf("answer body %d bytes (%v), Content-Length %d", len(ab), err, resp.ContentLength)
		}
	})
}
