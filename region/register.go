package region

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Registration throttle: per client address and per region, one-minute
// windows counted in the region's database (the login limiter's attempt
// store), so every node of a region shares them. Registration is an
// operator's or a developer's act, so the limits are far above honest use
// and far below what fills a database.
const (
	defaultRegistrationsPerAddress = 10
	// registrationsPerRegionFactor: authorized registrations a region
	// admits per window, as a multiple of the per-address limit.
	registrationsPerRegionFactor = 6
)

// registrationGate decides who may register: nobody unless the region has
// an initial access token (RFC 7591 §3), and then only its holders, at a
// bounded rate.
type registrationGate struct {
	token     []byte // SHA-256 of the initial access token; nil: closed
	perAddr   int    // attempts per address and window
	perRegion int    // authorized registrations per region and window
	limits    *limiter
}

func newRegistrationGate(token string, perAddress int, limits *limiter) *registrationGate {
	if perAddress <= 0 {
		perAddress = defaultRegistrationsPerAddress
	}
	g := &registrationGate{perAddr: perAddress, perRegion: registrationsPerRegionFactor * perAddress, limits: limits}
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

// allow reserves one registration attempt from ip, region-wide: every
// attempt counts against its address; only authorized ones against the
// region, so strangers cannot use up the operator's budget. It returns
// errLimited and how long to wait when a limit is exhausted, or the
// database's error (the caller refuses rather than registers unthrottled).
func (g *registrationGate) allow(ctx context.Context, ip string, authorized bool) (time.Duration, error) {
	limits := []limit{{key: "register:ip:" + ip, max: g.perAddr}}
	if authorized {
		limits = append(limits, limit{key: "register:region", max: g.perRegion})
	}
	_, wait, err := g.limits.reserve(ctx, limits...)
	return wait, err
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
// throttled per address and per region (every node shares the counters).
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
	if wait, err := g.allow(ctx, clientIP(r), authorized); err != nil {
		if !errors.Is(err, errLimited) {
			p.log.ErrorContext(ctx, "registration limiter unavailable", "err", err)
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable",
				"error_description": "registration is temporarily unavailable"})
			return
		}
		retryAfter(w, wait)
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
