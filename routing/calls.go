package routing

import (
	"bufio"
	"bytes"
	"context"
	"io"
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
		Method: p.method, URL: &url.URL{Path: p.path, RawQuery: p.query},
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: p.header, Host: p.host, ContentLength: p.length, Body: http.NoBody,
		RemoteAddr: c.Conn.RemoteAddr().String(), RequestURI: p.uri, TLS: c.TLS,
	}
	r = r.WithContext(ctx)
	if !cs.lean(r) {
		return false, false
	}
	if _, hop := r.Header[HopHeader]; hop {
		return cs.serveHop(c, r, n, all[n:], p.close)
	}
	if p.method != http.MethodPost || !isForm(r) {
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
	w := &callWriter{w: c.W, h: http.Header{"X-Meridian-Entry": {cs.rt.cfg.Local}}, close: p.close}
	cs.rt.count(ctx, d.Action, d.Region, "")
	cs.rt.forward(w, r, &callInfo{up: cs.rt.ups[d.Region], safe: d.Safe, body: body})
	ok = w.finish()
	return true, ok && !p.close
}

// serveHop serves a call another region's router sent here, as Front
// serves it: when its one hop header verifies for it and it carries no
// trace context, the local handler answers it (buffered, then written
// with its length); anything else goes to net/http, where the router
// strips the header and decides the call.
func (cs callServer) serveHop(c *serve.Call, r *http.Request, n int, body []byte, closing bool) (served, keep bool) {
	from, ok := cs.rt.leanHop(r)
	if !ok {
		return false, false
	}
	if len(body) > 0 {
		r.Body = io.NopCloser(bytes.NewReader(bytes.Clone(body)))
	}
	if _, err := c.R.Discard(n + len(body)); err != nil {
		return true, false
	}
	w := &callWriter{w: c.W, h: http.Header{"X-Meridian-Entry": {cs.rt.cfg.Local}}, close: closing, buffer: true}
	cs.rt.serveHopped(w, r, from)
	ok = w.finish()
	return true, ok && !closing
}

// formOf is the form the router decides a call by: its query's
// parameters, then its form body's (decideBody, Calls); a body that does
// not parse adds nothing.
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
	method, uri, path, query, host string
	header                         http.Header
	length                         int64
	close                          bool
}

// parseCall parses a request head (ending in CRLF CRLF) when it is in the
// strict form Calls takes; false for anything else.
func parseCall(head []byte) (p parsedCall, ok bool) {
	line, rest, _ := bytes.Cut(head, crlf)
	method, target, _ := bytes.Cut(line, []byte(" "))
	switch string(method) {
	case http.MethodPost:
		p.method = http.MethodPost
	case http.MethodGet:
		p.method = http.MethodGet // a hopped call only (no body)
	default:
		return p, false
	}
	if !bytes.HasSuffix(target, []byte(" HTTP/1.1")) {
		return p, false
	}
	uri := target[:len(target)-len(" HTTP/1.1")]
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
	p.header = make(http.Header, 8) // a small map: up to 8 without a table
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
				if t = trimOWS(t); len(t) > 0 && !tokens(t) {
					return p, false // ASCII only: no Unicode case folding below
				}
				switch string(bytes.ToLower(t)) {
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
	if len(rest) != 0 || hosts != 1 {
		return p, false
	}
	if p.length < 0 {
		if p.method != http.MethodGet {
			return p, false
		}
		p.length = 0 // a GET without a body
	} else if p.method == http.MethodGet && p.length != 0 {
		return p, false
	}
	return p, true
}

var crlf = []byte("\r\n")

// tokens reports whether b is an HTTP token: one or more tchars (RFC
// 9110), so no space, colon, CR or LF (a line split at a lone LF would
// hold one).
func tokens[T string | []byte](b T) bool {
	if len(b) == 0 {
		return false
	}
	for i := 0; i < len(b); i++ {
		if !isTchar(b[i]) {
			return false
		}
	}
	return true
}

// isTchar reports whether c may appear in a token (RFC 9110 tchar).
func isTchar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

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
// connection: an HTTP/1.1 answer with a Content-Length, taken from the
// header when set (a proxied answer's, written as it streams), else from
// the buffered body (always so for a local handler's answer: buffer).
// As with net/http, the header is what it was at WriteHeader, a missing
// Content-Type is sniffed, and 204 and 304 answers have neither body nor
// length. A buffered body beyond maxBuffered is streamed instead, ended by
// closing the connection.
type callWriter struct {
	w      *bufio.Writer
	h      http.Header
	sent   http.Header // h as it was at WriteHeader (buffered answers)
	status int
	length int64 // -1: buffered; -2: streamed, close-delimited
	n      int64
	buf    []byte
	close  bool
	buffer bool
	err    error
}

// maxBuffered bounds the answer a callWriter buffers to learn its length.
const maxBuffered = 1 << 20

func (w *callWriter) Header() http.Header { return w.h }

func (w *callWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 || code > 999 {
		return // interim answers are not sent
	}
	w.status = code
	w.length = -1
	if v := w.h["Content-Length"]; !w.buffer && len(v) == 1 && len(v[0]) > 0 && len(v[0]) <= 18 && digits(v[0]) {
		w.length, _ = strconv.ParseInt(v[0], 10, 64)
		w.writeHead(nil)
		return
	}
	w.sent = w.h.Clone()
	delete(w.sent, "Content-Length")
}

func (w *callWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	switch {
	case w.length == -1 && len(w.buf)+len(b) <= maxBuffered:
		w.buf = append(w.buf, b...)
		return len(b), nil
	case w.length == -1:
		w.close, w.length = true, -2
		w.writeBuffered(false)
	case w.length >= 0 && w.n+int64(len(b)) > w.length:
		return 0, http.ErrContentLength
	}
	n, err := w.w.Write(b)
	w.n += int64(n)
	if err != nil && w.err == nil {
		w.err = err
	}
	return n, err
}

func bodyAllowed(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// writeBuffered writes the head of a buffered answer (with its length
// when known) and what was buffered.
func (w *callWriter) writeBuffered(known bool) {
	h := w.sent
	if known && bodyAllowed(w.status) {
		h["Content-Length"] = []string{strconv.Itoa(len(w.buf))}
	}
	if _, ok := h["Content-Type"]; !ok && len(w.buf) > 0 {
		h["Content-Type"] = []string{http.DetectContentType(w.buf)}
	}
	w.h = h
	w.writeHead(nil)
	_, _ = w.w.Write(w.buf)
	w.n = int64(len(w.buf))
}

// finish writes what is left and flushes; false when the connection must
// not carry another call (a short body, a failed write, a streamed body).
func (w *callWriter) finish() bool {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.length == -1 {
		w.writeBuffered(true)
		w.length = w.n
	}
	if err := w.w.Flush(); err != nil || w.err != nil {
		return false
	}
	return w.length >= 0 && w.n == w.length
}

// writeAnswer writes the head of an upstream answer of a known length:
// the writer's own header, then the answer's (forward).
func (w *callWriter) writeAnswer(code int, h http.Header, length int64) {
	if w.status != 0 {
		return
	}
	w.status, w.length = code, length
	w.writeHead(h)
}

// writeHead writes the status line, a Date unless a header has one,
// Connection: close when the connection ends after this answer, the
// writer's header lines, extra's (when not nil) and the blank line.
func (w *callWriter) writeHead(extra http.Header) {
	bw := w.w
	var num [20]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(num[:0], int64(w.status), 10))
	bw.WriteByte(' ')
	bw.WriteString(http.StatusText(w.status))
	bw.WriteString("\r\n")
	_, dated := w.h["Date"]
	if _, ok := extra["Date"]; ok {
		dated = true
	}
	if !dated {
		bw.WriteString("Date: ")
		bw.WriteString(time.Now().UTC().Format(http.TimeFormat))
		bw.WriteString("\r\n")
	}
	if w.close {
		bw.WriteString("Connection: close\r\n")
	}
	writeLines(bw, w.h)
	writeLines(bw, extra)
	bw.WriteString("\r\n")
}

// writeLines writes h's header lines but Connection (the writer decides)
// and any whose name is not a token; CR and LF in a value become spaces,
// as net/http writes them.
func writeLines(bw *bufio.Writer, h http.Header) {
	for k, vs := range h {
		if !tokens(k) || k == "Connection" {
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			if strings.ContainsAny(v, "\r\n") {
				v = newlineToSpace.Replace(v)
			}
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

var newlineToSpace = strings.NewReplacer("\r", " ", "\n", " ")
