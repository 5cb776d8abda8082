package routing

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"strconv"
	"strings"
)

// The router's HTTP/1.1 framing to other regions, leaner than
// Request.Write and http.ReadResponse for the calls it makes: a request
// with a known length (or none), answered with a Content-Length. Anything
// else falls back to net/http's own code (requests) or is read but the
// connection not reused (chunked or close-delimited answers).

// writeRequest writes req's head and body to bw as net/http would (the
// same excluded headers, Content-Length: 0 on an empty POST, no Go
// User-Agent when the header is set empty), or hands it to req.Write when
// it has anything the lean path does not do.
func writeRequest(bw *bufio.Writer, req *http.Request) error {
	hasBody := req.Body != nil && req.Body != http.NoBody
	if req.TransferEncoding != nil || req.Trailer != nil || req.Close || req.URL.Opaque != "" ||
		(hasBody && req.ContentLength <= 0) || !leanHeaders(req) {
		return req.Write(bw)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	uri := req.URL.RequestURI()
	if !validHead(req.Method) || !validHead(uri) || !validHead(host) || strings.IndexByte(req.Method, ' ') >= 0 || strings.IndexByte(uri, ' ') >= 0 {
		return req.Write(bw)
	}
	bw.WriteString(req.Method)
	bw.WriteByte(' ')
	bw.WriteString(uri)
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")
	for k, vs := range req.Header {
		switch k {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer", "User-Agent":
			continue
		}
		for _, v := range vs {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(textproto.TrimString(v))
			bw.WriteString("\r\n")
		}
	}
	if ua := req.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(textproto.TrimString(ua[0]))
		bw.WriteString("\r\n")
	} else if ua == nil {
		bw.WriteString("User-Agent: Go-http-client/1.1\r\n")
	}
	if hasBody || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], max(req.ContentLength, 0), 10))
		bw.WriteString("\r\n")
	}
	if _, err := bw.WriteString("\r\n"); err != nil {
		return err
	}
	if !hasBody {
		return nil
	}
	defer req.Body.Close()
	n, err := io.Copy(bw, io.LimitReader(req.Body, req.ContentLength))
	if err != nil {
		return err
	}
	if n != req.ContentLength {
		return fmt.Errorf("routing: request body of %d bytes, declared %d", n, req.ContentLength)
	}
	return nil
}

// validHead reports whether s may appear in a request head as is.
func validHead(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	return s != ""
}

// leanHeaders reports whether every header name is a token and no value
// holds a control character other than a tab (net/http's server admits
// no others; anything else takes Request.Write's path).
func leanHeaders(req *http.Request) bool {
	for k, vs := range req.Header {
		if k == "" {
			return false
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c <= ' ' || c >= 0x7f || c == ':' {
				return false
			}
		}
		for _, v := range vs {
			for i := 0; i < len(v); i++ {
				if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
					return false
				}
			}
		}
	}
	return true
}

// errMalformed is an upstream answer the router cannot parse.
var errMalformed = errors.New("routing: malformed upstream answer")

// maxHead bounds an upstream answer's status line and headers.
const maxHead = 64 << 10

// readResponse reads one answer to req from br: the status line, the
// headers and framing. reuse reports whether the connection may carry
// another call once the body was read to its end (a Content-Length or no
// body, and no Connection: close).
func readResponse(br *bufio.Reader, req *http.Request) (resp *http.Response, reuse bool, err error) {
	line, err := readLine(br)
	if err != nil {
		return nil, false, err
	}
	proto, rest, ok := strings.Cut(line, " ")
	if !ok || (proto != "HTTP/1.1" && proto != "HTTP/1.0") || len(rest) < 3 {
		return nil, false, errMalformed
	}
	code, err := strconv.Atoi(rest[:3])
	if err != nil || code < 100 || code > 999 || (len(rest) > 3 && rest[3] != ' ') {
		return nil, false, errMalformed
	}
	resp = &http.Response{Status: rest, StatusCode: code, Proto: proto, ProtoMajor: 1, ProtoMinor: 1, Request: req,
		Header: make(http.Header, 8), ContentLength: -1}
	if proto == "HTTP/1.0" {
		resp.ProtoMinor = 0
	}
	var chunked bool
	headBytes := len(line)
	for {
		kv, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				err = errMalformed
			}
			return nil, false, err
		}
		if headBytes += len(kv); headBytes > maxHead {
			return nil, false, errMalformed
		}
		kv = trimEOL(kv)
		if len(kv) == 0 {
			break
		}
		colon := bytes.IndexByte(kv, ':')
		if colon <= 0 || kv[0] == ' ' || kv[0] == '\t' {
			return nil, false, errMalformed // no name, or obsolete line folding
		}
		key := headerKey(kv[:colon])
		val := string(bytes.TrimSpace(kv[colon+1:]))
		switch key {
		case "Content-Length":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 || (resp.ContentLength >= 0 && resp.ContentLength != n) {
				return nil, false, errMalformed
			}
			resp.ContentLength = n
		case "Transfer-Encoding":
			if !strings.EqualFold(val, "chunked") || chunked {
				return nil, false, errMalformed
			}
			chunked = true
			continue
		case "Connection":
			if strings.EqualFold(val, "close") {
				resp.Close = true
			}
		}
		resp.Header[key] = append(resp.Header[key], val)
	}
	if proto == "HTTP/1.0" && !strings.EqualFold(resp.Header.Get("Connection"), "keep-alive") {
		resp.Close = true
	}
	noBody := req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	switch {
	case noBody:
		resp.Body, resp.ContentLength = http.NoBody, 0
		if req.Method == http.MethodHead {
			resp.ContentLength = -1
		}
		return resp, !resp.Close, nil
	case chunked:
		resp.ContentLength = -1
		resp.TransferEncoding = []string{"chunked"}
		resp.Body = io.NopCloser(httputil.NewChunkedReader(br))
		return resp, false, nil // trailers are not read: never reused
	case resp.ContentLength >= 0:
		resp.Body = &lengthBody{r: br, left: resp.ContentLength}
		return resp, !resp.Close, nil
	default:
		resp.Close = true
		resp.Body = io.NopCloser(br) // delimited by the upstream closing
		return resp, false, nil
	}
}

// readLine reads one CRLF (or LF) terminated line of at most the reader's
// buffer.
func readLine(br *bufio.Reader) (string, error) {
	l, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			err = errMalformed
		} else if errors.Is(err, io.EOF) && len(l) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return string(trimEOL(l)), nil
}

// trimEOL removes the line's trailing CR and LF bytes (bytes.TrimRight
// with a cutset builds its set on every call).
func trimEOL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// headerKey canonicalizes a header name, without allocating for the ones
// an upstream node sends.
func headerKey(b []byte) string {
	switch string(b) {
	case "Content-Type":
		return "Content-Type"
	case "Content-Length":
		return "Content-Length"
	case "Date":
		return "Date"
	case "Cache-Control":
		return "Cache-Control"
	case "Pragma":
		return "Pragma"
	case "X-Meridian-Entry":
		return "X-Meridian-Entry"
	case "Transfer-Encoding":
		return "Transfer-Encoding"
	case "Connection":
		return "Connection"
	case "Vary":
		return "Vary"
	case "X-Content-Type-Options":
		return "X-Content-Type-Options"
	}
	return textproto.CanonicalMIMEHeaderKey(string(b))
}

// lengthBody reads a Content-Length delimited body; Close reads what is
// left (so the connection can be reused) up to a bound.
type lengthBody struct {
	r    *bufio.Reader
	left int64
	err  error
}

func (b *lengthBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
	}
	return n, err
}

// maxDrain bounds what Close reads of an abandoned body to keep the
// connection; beyond it the connection is dropped.
const maxDrain = 256 << 10

func (b *lengthBody) Close() error {
	if b.err != nil {
		return b.err
	}
	if b.left > maxDrain {
		b.err = errors.New("routing: body left unread")
		return b.err
	}
	if b.left > 0 {
		if _, err := io.CopyN(io.Discard, b.r, b.left); err != nil {
			b.err = err
			return err
		}
		b.left = 0
	}
	return nil
}
