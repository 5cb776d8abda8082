package region

import (
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/meridian-id/meridian/region/store"
)

// Grant types and auth methods a client may be registered with.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"

	AuthSecretBasic = "client_secret_basic"
	AuthSecretPost  = "client_secret_post"
	AuthPrivateKey  = "private_key_jwt"
	AuthNone        = "none"

	FormatOpaque = "opaque"
	FormatJWT    = "jwt"

	// ScopeIntrospect lets a client (a resource server) introspect any token
	// of the region, not only tokens issued to it or naming it as audience.
	ScopeIntrospect = "meridian:introspect"
)

// client adapts a stored client to op.Client.
type client struct {
	store.Client
	idTokenTTL time.Duration
}

func (c *client) GetID() string                    { return c.ID }
func (c *client) RedirectURIs() []string           { return c.Client.RedirectURIs }
func (c *client) PostLogoutRedirectURIs() []string { return c.Client.PostLogoutRedirectURIs }
func (c *client) ApplicationType() op.ApplicationType {
	if c.Client.AuthMethod == AuthNone {
		return op.ApplicationTypeNative
	}
	return op.ApplicationTypeWeb
}
func (c *client) AuthMethod() oidc.AuthMethod { return oidc.AuthMethod(c.Client.AuthMethod) }
func (c *client) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *client) GrantTypes() []oidc.GrantType {
	out := make([]oidc.GrantType, 0, len(c.Client.GrantTypes))
	for _, g := range c.Client.GrantTypes {
		out = append(out, oidc.GrantType(g))
	}
	return out
}
func (c *client) LoginURL(id string) string { return "/login?id=" + url.QueryEscape(id) }

// AccessTokenType is op's bearer path for every client: for a JWT client
// the crypto seam swaps the jti for the RFC 9068 at+jwt token storage
// signed (op's own JWT access tokens carry typ JWT, like ID tokens).
func (c *client) AccessTokenType() op.AccessTokenType { return op.AccessTokenTypeBearer }
func (c *client) IDTokenLifetime() time.Duration      { return c.idTokenTTL }

// DevMode lets plain-http redirect URIs through the library's check only when
// every registered redirect URI is on a loopback host.
func (c *client) DevMode() bool {
	for _, u := range c.Client.RedirectURIs {
		if !isLoopbackURI(u) {
			return false
		}
	}
	return len(c.Client.RedirectURIs) > 0
}
func (c *client) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *client) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// IsScopeAllowed admits, beyond the standard OIDC scopes op handles itself,
// only the extra scopes registered for the client.
func (c *client) IsScopeAllowed(scope string) bool { return slices.Contains(c.Scopes, scope) }

// IDTokenUserinfoClaimsAssertion puts the profile claims into the ID token
// when no access token is issued alongside (never the case for code flow),
// so claims are read from userinfo as OIDC Core intends.
func (c *client) IDTokenUserinfoClaimsAssertion() bool { return false }
func (c *client) ClockSkew() time.Duration             { return 0 }

func isLoopbackURI(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
