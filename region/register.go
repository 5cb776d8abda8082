package region

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Registration throttle: per client address and per node, fixed one-minute
// windows. Registration is an operator's or a developer's act, so the
// limits are far above honest use and far below what fills a database.
const (
	defaultRegistrationsPerAddress = 10
	registrationWindow             = time.Minute
)

// registrationGate decides who may register: nobody unless the region has
// an initial access token (RFC 7591 §3), and then only its holders, at a
// bounded rate.
type registrationGate struct {
	token   []byte // SHA-256 of the initial access token; nil: closed
	perAddr int    // attempts per address and window
	perNode int    // authorized registrations per node and window

	mu     sync.Mutex
	window time.Time
	total  int
	perIP  map[string]int
}

func newRegistrationGate(token string, perAddress int) *registrationGate {
	if perAddress <= 0 {
		perAddress = defaultRegistrationsPerAddress
	}
	g := &registrationGate{perIP: map[string]int{}, perAddr: perAddress, perNode: 6 * perAddress}
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		g.token = sum[:]
	}
	return g
}

func (g *registrationGate) open() bool { return g.token != nil }

// authorized reports whether r carries the initial access token as a
// bearer token (RFC 6750 §2.1), compared in constant time.
func (g *registrationGate) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(sum[:], g.token) == 1
}

// allow counts one registration attempt from ip and reports whether it is
// within the limits, and if not, how long until the window rolls over.
// Every attempt counts against its address; only authorized ones against
// the node, so strangers cannot use up the operator's budget.
func (g *registrationGate) allow(ip string, authorized bool, now time.Time) (bool, time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if now.Sub(g.window) >= registrationWindow {
		g.window, g.total = now, 0
		clear(g.perIP)
	}
	retry := registrationWindow - now.Sub(g.window)
	if g.perIP[ip] >= g.perAddr || (authorized && g.total >= g.perNode) {
		return false, retry
	}
	g.perIP[ip]++
	if authorized {
		g.total++
	}
	return true, retry
}

// registrationRequest is RFC 7591 client metadata plus Meridian's
// access_token_format extension.
type registrationRequest struct {
	RedirectURIs            []string        `json:"redirect_uris"`
	PostLogoutRedirectURIs  []string        `json:"post_logout_redirect_uris,omitempty"`
	ClientName              string          `json:"client_name,omitempty"`
	GrantTypes              []string        `json:"grant_types,omitempty"`
	ResponseTypes           []string        `json:"response_types,omitempty"`
	TokenEndpointAuthMethod string          `json:"token_endpoint_auth_method,omitempty"`
	JWKS                    json.RawMessage `json:"jwks,omitempty"`
	AccessTokenFormat       string          `json:"access_token_format,omitempty"`
}

// register is RFC 7591 dynamic client registration. Dynamically registered
// clients are third-party: users are always asked for consent.
//
// It is closed unless the region is configured with an initial access token
// (RFC 7591 §3), which the caller presents as a bearer token, and it is
// throttled per address and per node.
func (p *Provider) register(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	ctx := r.Context()
	g := p.registration
	if !g.open() {
		p.audit.record(ctx, AuditRegistration, slog.String("outcome", "closed"))
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "access_denied",
			"error_description": "dynamic client registration is not open in this region; ask its operator"})
		return
	}
	authorized := g.authorized(r)
	if ok, retry := g.allow(clientIP(r), authorized, time.Now()); !ok {
		w.Header().Set("Retry-After", strconv.Itoa(int(retry.Seconds())+1))
		writeJSON(w, http.StatusTooManyRequests, map[string]string{"error": "temporarily_unavailable",
			"error_description": "too many registrations; retry later"})
		return
	}
	if !authorized {
		p.audit.record(ctx, AuditRegistration, slog.String("outcome", "denied"))
		w.Header().Set("WWW-Authenticate", `Bearer realm="meridian", error="invalid_token"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_token",
			"error_description": "an initial access token is required (RFC 7591 §3)"})
		return
	}
	var req registrationRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "body must be a JSON object"})
		return
	}
	for _, rt := range req.ResponseTypes {
		if rt != "code" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": "only response type code is supported"})
			return
		}
	}
	spec := ClientSpec{
		Name: req.ClientName, RedirectURIs: req.RedirectURIs, PostLogoutRedirectURIs: req.PostLogoutRedirectURIs,
		GrantTypes: req.GrantTypes, AuthMethod: req.TokenEndpointAuthMethod, Public: req.TokenEndpointAuthMethod == AuthNone,
		AccessTokenFormat: req.AccessTokenFormat,
	}
	if len(req.JWKS) > 0 {
		spec.JWKS = string(req.JWKS)
	}
	// RFC 7592: the client manages itself with a registration access
	// token, stored by its digest and shown once.
	regToken, regHash, err := newRegistrationToken()
	if err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	spec.registrationTokenHash = regHash
	c, err := CreateClient(ctx, p.st, p.codec, p.cfg.Region, spec)
	switch {
	case errors.Is(err, ErrInvalidRedirectURI):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_redirect_uri", "error_description": err.Error()})
		return
	case errors.Is(err, ErrInvalidClientMetadata):
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_client_metadata", "error_description": err.Error()})
		return
	case err != nil:
		p.log.ErrorContext(ctx, "client registration failed", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	p.audit.record(ctx, AuditRegistration, slog.String("outcome", "registered"), slog.String("client_id", c.ID),
		slog.String("token_endpoint_auth_method", c.AuthMethod), slog.Any("redirect_uris", c.RedirectURIs))
	d := newClientDocument(c.Client, c.Secret, time.Now())
	d.RegistrationAccessToken, d.RegistrationClientURI = regToken, p.registrationClientURI(r, c.ID)
	writeJSON(w, http.StatusCreated, d)
}
