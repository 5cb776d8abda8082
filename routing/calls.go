package routing

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-id/meridian/internal/serve"
)

// Calls returns the serve.CallServer of a public listener: it proxies the
// calls Front would proxy on its lean path (a routed form call without a
// hop header, owned by another region, for which lean holds) straight off
// the connection, without net/http's server, and hands the connection to
// net/http at the first call it does not proxy. It takes only calls it
// parses exactly as net/http would: HTTP/1.1, POST to a routed path
// without escapes, one Host, one Content-Length of digits and no
// Transfer-Encoding or Expect, CRLF line ends, header names that are
// tokens and values without control characters, head and body within the
// connection's buffer; anything else, valid or not, is net/http's to
// answer. Answers are those forward gives behind net/http (same headers,
// same errors), each with a Content-Length.
func (rt *Router) Calls(lean func(*http.Request) bool) serve.CallServer {
	return callServer{rt: rt, lean: lean}
}

type callServer struct {
	rt   *Router
	lean func(*http.Request) bool
}

// maxCallHeaders bounds the header lines of a call served off the
// connection (more go to net/http).
const maxCallHeaders = 64

func (cs callServer) ServeCall(ctx context.Context, c *serve.Call) (served, keep bool) {
	n, ok := peekHead(c.R)
	if !ok {
		return false, false
	}
	head, _ := c.R.Peek(n)
	p, ok := parseCall(head)
	if !ok || p.length > int64(c.R.Size()-n) {
		return false, false
	}
	all, err := c.R.Peek(n + int(p.length))
	if err != nil {
		return false, false // net/http reads on, on its own deadlines
	}
	r := &http.Request{
		Method: http.MethodPost, URL: &url.URL{Path: p.path, RawQuery: p.query},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: p.header, Host: p.host, ContentLength: p.length, Body: http.NoBody,
		RemoteAddr: c.Conn.RemoteAddr().String(), RequestURI: p.uri, TLS: c.TLS,
	}
	r = r.WithContext(ctx)
	if _, hop := r.Header[HopHeader]; hop || !isForm(r) || !cs.lean(r) {
		return false, false
	}
	body := bytes.Clone(all[n:])
	d := cs.rt.Decide(r, formOf(p.query, body))
	if d.Action != Proxy {
		return false, false
	}
	if _, err := c.R.Discard(n + int(p.length)); err != nil {
		return true, false // cannot happen: the bytes were buffered
	}
	delete(r.Header, HopFromHeader)
	w := &callWriter{w: c.W, h: make(http.Header, 16), close: p.close}
	w.h.Set("X-Meridian-Entry", cs.rt.cfg.Local)
	cs.rt.count(ctx, d.Action, d.Region, "")
	cs.rt.forward(w, r, &callInfo{up: cs.rt.ups[d.Region], safe: d.Safe, body: body})
	ok = w.finish()
	return true, ok && !p.close
}

// formOf is the form the router decides a call by: its query's
// parameters and then its form body's (as decideBody reads them).
func formOf(query string, body []byte) url.Values {
	var form url.Values
	if query != "" {
		form, _ = url.ParseQuery(query)
	}
	pf, err := url.ParseQuery(string(body))
	if err != nil {
		return form
	}
	if form == nil {
		return pf
	}
	for k, v := range pf {
		form[k] = append(form[k], v...)
	}
	return form
}

// peekHead reads (without consuming) until br holds a whole request head
// and returns its length, ending blank line included; false when the head
// does not fit in br's buffer or the connection fails first.
func peekHead(br *bufio.Reader) (int, bool) {
	from := 0
	for {
		buf, _ := br.Peek(br.Buffered())
		if i := bytes.Index(buf[max(from-3, 0):], crlfcrlf); i >= 0 {
			return max(from-3, 0) + i + len(crlfcrlf), true
		}
		if len(buf) >= br.Size() {
			return 0, false
		}
		from = len(buf)
		if _, err := br.Peek(len(buf) + 1); err != nil {
			return 0, false
		}
	}
}

var crlfcrlf = []byte("\r\n\r\n")

// parsedCall is the part of a call's head the router reads.
type parsedCall struct {
	uri, path, query, host string
	header                 http.Header
	length                 int64
	close                  bool
}

// parseCall parses a request head (ending in CRLF CRLF) when it is in the
// strict form Calls takes; false for anything else.
func parseCall(head []byte) (p parsedCall, ok bool) {
	line, rest, _ := bytes.Cut(head, crlf)
	const method = "POST "
	// The length first: "POST HTTP/1.1" has both ends, overlapping.
	if len(line) <= len(method)+len(" HTTP/1.1") || !bytes.HasPrefix(line, []byte(method)) || !bytes.HasSuffix(line, []byte(" HTTP/1.1")) {
		return p, false
	}
	uri := line[len(method) : len(line)-len(" HTTP/1.1")]
	if len(uri) == 0 || uri[0] != '/' {
		return p, false
	}
	for _, c := range uri {
		// No escapes, spaces, controls, fragments or non-ASCII: the path
		// is then the same decoded or not.
		if c <= ' ' || c >= 0x7f || c == '%' || c == '#' {
			return p, false
		}
	}
	path, query, _ := bytes.Cut(uri, []byte("?"))
	p.path, p.query, p.uri = string(path), string(query), string(uri)
	if !routedPath(p.path) {
		return p, false
	}
	p.header = make(http.Header, 12)
	p.length = -1
	hosts, lines := 0, 0
	for {
		kv, r, found := bytes.Cut(rest, crlf)
		if !found {
			return p, false
		}
		rest = r
		if len(kv) == 0 {
			break
		}
		if lines++; lines > maxCallHeaders {
			return p, false
		}
		colon := bytes.IndexByte(kv, ':')
		if colon <= 0 || !tokens(kv[:colon]) {
			return p, false
		}
		v := trimOWS(kv[colon+1:])
		for _, c := range v {
			if (c < ' ' && c != '\t') || c == 0x7f {
				return p, false
			}
		}
		key, val := callHeaderKey(kv[:colon]), string(v)
		switch key {
		case "Host":
			if hosts++; hosts > 1 || !hostChars(v) {
				return p, false
			}
			p.host = val
			continue // net/http keeps Host out of the header map
		case "Content-Length":
			if p.length >= 0 || len(v) == 0 || len(v) > 18 || !digits(v) {
				return p, false
			}
			p.length, _ = strconv.ParseInt(val, 10, 64)
		case "Transfer-Encoding", "Expect", "Upgrade", "Te", "Trailer":
			return p, false
		case "Connection":
			for _, t := range bytes.Split(v, []byte(",")) {
				switch string(bytes.ToLower(trimOWS(t))) {
				case "close":
					p.close = true
				case "keep-alive", "":
				default:
					return p, false // hop-by-hop headers named by the client: net/http's
				}
			}
		}
		p.header[key] = append(p.header[key], val)
	}
	if len(rest) != 0 || hosts != 1 || p.length < 0 {
		return p, false
	}
	return p, true
}

var crlf = []byte("\r\n")

// tokens reports whether b is an HTTP token (RFC 9110 tchar) and has no
// bare CR or LF around it (a line split at a lone LF would hold one).
func tokens[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if c := b[i]; c >= 0x80 || !isTchar[c] {
			return false
		}
	}
	return true
}

var isTchar = func() (t [128]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// trimOWS removes the optional whitespace (SP, HTAB) around a value.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func digits[T string | []byte](b T) bool {
	for i := 0; i < len(b); i++ {
		if c := b[i]; c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// hostChars admits a host name or address with an optional port (no
// user info, no escapes).
func hostChars(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_':
		default:
			return false
		}
	}
	return true
}

// callHeaderKey canonicalizes a request header name, without allocating
// for the ones clients usually send.
func callHeaderKey(b []byte) string {
	switch string(b) {
	case "Host", "host":
		return "Host"
	case "Content-Type", "content-type":
		return "Content-Type"
	case "Content-Length", "content-length":
		return "Content-Length"
	case "Authorization", "authorization":
		return "Authorization"
	case "User-Agent", "user-agent":
		return "User-Agent"
	case "Accept", "accept":
		return "Accept"
	case "Connection", "connection":
		return "Connection"
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
}

// callWriter is the http.ResponseWriter of a call served off the
// connection: an HTTP/1.1 answer with a Content-Length (taken from the
// header when set, else the buffered body's).
type callWriter struct {
	w      *bufio.Writer
	h      http.Header
	status int
	length int64 // -1: not in the header; the body is buffered
	n      int64
	buf    []byte
	close  bool
	err    error
}

func (w *callWriter) Header() http.Header { return w.h }

func (w *callWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 || code > 999 {
		return
	}
	w.status = code
	w.length = -1
	if v := w.h["Content-Length"]; len(v) == 1 && len(v[0]) > 0 && len(v[0]) <= 18 && digits(v[0]) {
		w.length, _ = strconv.ParseInt(v[0], 10, 64)
		w.writeHead()
	} else {
		delete(w.h, "Content-Length")
	}
}

func (w *callWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.length < 0 {
		w.buf = append(w.buf, b...)
		return len(b), nil
	}
	if w.n+int64(len(b)) > w.length {
		return 0, http.ErrContentLength
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

// finish writes what is left and flushes; false when the connection must
// not carry another call (a short body, a failed write).
func (w *callWriter) finish() bool {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.length < 0 {
		w.length = int64(len(w.buf))
		w.h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
		w.writeHead()
		_, _ = w.w.Write(w.buf)
		w.n = w.length
	}
	if err := w.w.Flush(); err != nil || w.err != nil {
		return false
	}
	return w.n == w.length
}

func (w *callWriter) writeHead() {
	bw := w.w
	var num [20]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\n")
	if _, ok := w.h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.WriteString(time.Now().UTC().Format(http.TimeFormat))
		bw.WriteString("\r\n")
	}
	if w.close {
		bw.WriteString("Connection: close\r\n")
	}
	for k, vs := range w.h {
		if !tokens(k) || k == "Connection" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = newlineToSpace.Replace(v) // as net/http writes them
			}
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
	bw.WriteString("\r\n")
}

var newlineToSpace = strings.NewReplacer("\r", " ", "\n", " ")
