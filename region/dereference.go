package region

import (
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meridian-id/meridian/routing"
)

// ScopeDereference lets a trusted internal client exchange opaque access
// tokens for their RFC 9068 JWT form.
const ScopeDereference = "meridian:dereference"

// atClaims are RFC 9068 JWT access token claims.
type atClaims struct {
	jwt.Claims
	ClientID string `json:"client_id"`
	Scope    string `json:"scope,omitempty"`
	AuthTime int64  `json:"auth_time,omitempty"`
}

// dereference is POST /dereference: an opaque access token in, the
// equivalent RFC 9068 JWT out, signed by this region with iss = the region
// issuer. Internal services then validate by value (against the federation
// JWKS) what travels by reference on the internet. The caller authenticates
// with HTTP Basic and needs the meridian:dereference scope; the JWT expires
// with the opaque token and names it by a digest, never by its value.
func (p *Provider) dereference(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	}
	if !ok || p.storage.AuthorizeClientIDSecret(ctx, id, secret) != nil {
		w.Header().Set("WWW-Authenticate", `Basic realm="meridian"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
		return
	}
	scopes, foreign := foreignScopes(ctx, id)
	if !foreign {
		c, err := p.storage.client(ctx, id)
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "invalid_client"})
			return
		}
		scopes = c.Scopes
	}
	if !slices.Contains(scopes, ScopeDereference) {
		writeJSON(w, http.StatusForbidden, map[string]string{"error": "unauthorized_client", "error_description": "client lacks the meridian:dereference scope"})
		return
	}
	token := r.PostFormValue("token")
	if _, err := p.codec.VerifyKind(token, routing.KindAccess); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "error_description": "token is not an opaque access token of this federation"})
		return
	}
	at, err := p.storage.activeToken(ctx, token)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_token", "error_description": "token is not active"})
		return
	}
	digest := sha256.Sum256([]byte(token))
	c := atClaims{
		Claims: jwt.Claims{
			Issuer: p.cfg.Issuer, Subject: at.Subject, Audience: jwt.Audience(at.Audience),
			Expiry: jwt.NewNumericDate(at.ExpiresAt), IssuedAt: jwt.NewNumericDate(time.Now()),
			ID: base64.RawURLEncoding.EncodeToString(digest[:16]),
		},
		ClientID: at.ClientID,
	}
	for i, s := range at.Scopes {
		if i > 0 {
			c.Scope += " "
		}
		c.Scope += s
	}
	if !at.AuthTime.IsZero() {
		c.AuthTime = at.AuthTime.Unix()
	}
	raw, err := p.storage.jwts.sign(ctx, c)
	if err != nil {
		raiseFault(ctx)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "temporarily_unavailable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": raw, "issued_token_type": "urn:ietf:params:oauth:token-type:jwt", "token_type": "Bearer",
		"expires_in": int(time.Until(at.ExpiresAt).Seconds()),
	})
}
