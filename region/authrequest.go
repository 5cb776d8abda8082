package region

import (
	"slices"
	"time"

	"github.com/zitadel/oidc/v3/pkg/oidc"

	"github.com/meridian-id/meridian/region/store"
)

// authRequest adapts a stored authorization request to op.AuthRequest.
type authRequest struct{ store.AuthRequest }

func (a *authRequest) GetID() string          { return a.ID }
func (a *authRequest) GetACR() string         { return satisfiedACR(a.AMR, a.ACRValues) }
func (a *authRequest) GetAMR() []string       { return a.AMR }
func (a *authRequest) GetAudience() []string  { return []string{a.ClientID} }
func (a *authRequest) GetAuthTime() time.Time { return a.AuthTime }
func (a *authRequest) GetClientID() string    { return a.ClientID }
func (a *authRequest) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: oidc.CodeChallengeMethod(a.CodeChallengeMethod)}
}
func (a *authRequest) GetNonce() string                   { return a.Nonce }
func (a *authRequest) GetRedirectURI() string             { return a.RedirectURI }
func (a *authRequest) GetResponseType() oidc.ResponseType { return oidc.ResponseType(a.ResponseType) }
func (a *authRequest) GetResponseMode() oidc.ResponseMode { return oidc.ResponseMode(a.ResponseMode) }
func (a *authRequest) GetScopes() []string                { return a.Scopes }
func (a *authRequest) GetState() string                   { return a.State }
func (a *authRequest) GetSubject() string                 { return a.UserID }
func (a *authRequest) Done() bool                         { return a.AuthRequest.Done }

// refreshRequest is the grant behind a presented refresh token.
type refreshRequest struct {
	token  string
	rt     store.RefreshToken
	scopes []string
}

func (r *refreshRequest) GetAMR() []string            { return r.rt.AMR }
func (r *refreshRequest) GetAudience() []string       { return r.rt.Audience }
func (r *refreshRequest) GetAuthTime() time.Time      { return r.rt.AuthTime }
func (r *refreshRequest) GetClientID() string         { return r.rt.ClientID }
func (r *refreshRequest) GetScopes() []string         { return r.scopes }
func (r *refreshRequest) GetSubject() string          { return r.rt.Subject }
func (r *refreshRequest) SetCurrentScopes(s []string) { r.scopes = s }

// clientCredentialsRequest is a client_credentials grant: the client is its
// own subject.
type clientCredentialsRequest struct {
	clientID string
	scopes   []string
}

func (c *clientCredentialsRequest) GetSubject() string    { return c.clientID }
func (c *clientCredentialsRequest) GetAudience() []string { return []string{c.clientID} }
func (c *clientCredentialsRequest) GetScopes() []string   { return c.scopes }

// The authentication context classes a region asserts in the acr claim
// (OIDC Core §2), ordered: ACRMFA satisfies a request for ACRPassword too.
// Discovery lists them as acr_values_supported.
const (
	// ACRPassword: the user proved a password (amr pwd).
	ACRPassword = "urn:meridian:acr:pwd"
	// ACRMFA: the user proved a password and a second factor, a TOTP code
	// (amr mfa).
	ACRMFA = "urn:meridian:acr:mfa"
)

// acrValuesSupported is what discovery advertises.
var acrValuesSupported = []string{ACRPassword, ACRMFA}

// Bounds on an authorization request's acr_values, kept with the request.
const (
	maxACRValues   = 8
	maxACRValueLen = 255
)

// satisfiedACR is the acr of an authentication with methods amr for a
// request that asked acr_values: the first requested class the
// authentication satisfies, else the class it reached ("" before any
// authentication). acr_values is a voluntary request (OIDC Core
// §3.1.2.1): a class that cannot be met does not fail the login, the acr
// claim says what was met and the client decides. An essential acr can
// only be asked with the claims parameter, which is not supported
// (claims_parameter_supported is false). A federated login's amr is the
// resident region's with "fed" in front, so the entry region asserts what
// the resident region verified.
func satisfiedACR(amr, requested []string) string {
	reached := ""
	switch {
	case slices.Contains(amr, "mfa"):
		reached = ACRMFA
	case slices.Contains(amr, "pwd"):
		reached = ACRPassword
	default:
		return ""
	}
	for _, want := range requested {
		if want == reached || (want == ACRPassword && reached == ACRMFA) {
			return want
		}
	}
	return reached
}
