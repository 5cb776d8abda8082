package region

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// faultKey carries a per-request flag that storage raises when the database
// (not the client) failed, so the API answers 503 temporarily_unavailable
// instead of the library's "inactive"/403: a resource server must be able to
// tell "token invalid" from "cannot tell right now".
type faultKey struct{}

// fault is per-request state shared between the API middleware and the
// storage: the server-fault flag, and the scopes of a client authenticated
// by its home region (introspection by a foreign resource server).
type fault struct {
	raised  atomic.Bool
	mu      sync.Mutex
	foreign map[string][]string
}

func withFault(ctx context.Context) (context.Context, *fault) {
	f := &fault{}
	return context.WithValue(ctx, faultKey{}, f), f
}

// rememberForeign records a foreign client authenticated for this request.
func rememberForeign(ctx context.Context, id string, scopes []string) {
	if f, ok := ctx.Value(faultKey{}).(*fault); ok {
		f.mu.Lock()
		if f.foreign == nil {
			f.foreign = map[string][]string{}
		}
		f.foreign[id] = scopes
		f.mu.Unlock()
	}
}

// foreignScopes returns the scopes of a foreign client authenticated in
// this request, and whether there is one.
func foreignScopes(ctx context.Context, id string) ([]string, bool) {
	f, ok := ctx.Value(faultKey{}).(*fault)
	if !ok {
		return nil, false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.foreign[id]
	return s, ok
}

// raiseFault marks the request as failed by the server.
func raiseFault(ctx context.Context) {
	if f, ok := ctx.Value(faultKey{}).(*fault); ok {
		f.raised.Store(true)
	}
}

// faultRaised reports whether the request was marked failed by the server.
func faultRaised(ctx context.Context) bool {
	f, ok := ctx.Value(faultKey{}).(*fault)
	return ok && f.raised.Load()
}

// clientAuthFailed is the description of every client authentication
// failure op answers in plain text (introspection).
const clientAuthFailed = "client authentication failed"

// apiErrors makes every error of a back-channel endpoint an RFC 6749 §5.2
// (or RFC 6750 §3 for userinfo) JSON error. op answers some client mistakes
// with plain text, and userinfo with 403 where RFC 6750 wants 401.
func apiErrors(bearer bool, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, f := withFault(r.Context())
		bw := &bufferedWriter{header: http.Header{}}
		next.ServeHTTP(bw, r.WithContext(ctx))
		status := bw.status
		if status == 0 {
			status = http.StatusOK
		}
		h := w.Header()
		for k, v := range bw.header {
			h[k] = v
		}
		jsonBody := strings.HasPrefix(bw.header.Get("Content-Type"), "application/json")
		switch {
		case f.raised.Load() || status >= 500:
			h.Del("Content-Length")
			h.Set("Retry-After", "5")
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable",
				"error_description": "the authorization server cannot answer right now; retry later"})
		case bearer && status >= 400:
			h.Del("Content-Length")
			h.Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token",
				"error_description": "the access token is missing, invalid, expired or revoked"})
		case status == http.StatusUnauthorized && !jsonBody:
			// op's text names the cause ("client not found", "invalid
			// client secret"): one answer for every cause tells a caller
			// nothing about which client ids exist.
			h.Del("Content-Length")
			writeClientAuthError(w, clientAuthFailed)
		case status >= 400 && !jsonBody:
			h.Del("Content-Length")
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request",
				"error_description": strings.TrimSpace(bw.body.String())})
		default:
			h.Set("Content-Length", strconv.Itoa(bw.body.Len()))
			w.WriteHeader(status)
			_, _ = w.Write(bw.body.Bytes())
		}
	})
}

type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(s int) {
	if b.status == 0 {
		b.status = s
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}
