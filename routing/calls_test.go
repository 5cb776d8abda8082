package routing

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"testing"

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

	tests := []struct{ name, raw string }{
		{"TE and CL", rawCall(path, withLines("Transfer-Encoding: chunked", cl), "0\r\n\r\n")},
		{"TE only", "POST " + path + " HTTP/1.1\r\nHost: id.test\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)},
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
