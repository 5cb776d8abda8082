package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// Lifetimes of what the hub issues. They are short: a region redeems the
// code at once and reads userinfo right after.
const (
	authRequestTTL = 10 * time.Minute
	codeTTL        = 2 * time.Minute
	accessTokenTTL = 5 * time.Minute
	idTokenTTL     = 5 * time.Minute
)

// Record kinds in the StateStore.
const (
	kindAuthRequest = "ar"
	kindCode        = "code"
	kindUsedCode    = "used"
	kindAccessToken = "at"
	kindLogin       = "rp"
)

// authReq is an authorization request from an entry region, from /authorize
// until its code is redeemed (then kept until it expires, so that a
// replayed code revokes the token issued from it).
type authReq struct {
	ID                  string            `json:"id"`
	ClientID            string            `json:"client_id"`
	RedirectURI         string            `json:"redirect_uri"`
	Scopes              []string          `json:"scopes"`
	State               string            `json:"state"`
	Nonce               string            `json:"nonce"`
	CodeChallenge       string            `json:"code_challenge"`
	CodeChallengeMethod string            `json:"code_challenge_method"`
	ResponseType        string            `json:"response_type"`
	Prompt              []string          `json:"prompt,omitempty"`
	MaxAge              *uint             `json:"max_age,omitempty"`
	LoginHint           string            `json:"login_hint,omitempty"`
	UILocales           []string          `json:"ui_locales,omitempty"`
	ACRValues           []string          `json:"acr_values,omitempty"`
	Expires             time.Time         `json:"exp"`
	Subject             string            `json:"sub,omitempty"`
	AuthTime            time.Time         `json:"auth_time"`
	AMR                 []string          `json:"amr,omitempty"`
	Claims              map[string]string `json:"claims,omitempty"`
	HomeRegion          string            `json:"home_region,omitempty"`
	IsDone              bool              `json:"done"`
	Tokens              []string          `json:"tokens,omitempty"`
}

func (a *authReq) GetID() string          { return a.ID }
func (a *authReq) GetACR() string         { return "" }
func (a *authReq) GetAMR() []string       { return a.AMR }
func (a *authReq) GetAudience() []string  { return []string{a.ClientID} }
func (a *authReq) GetAuthTime() time.Time { return a.AuthTime }
func (a *authReq) GetClientID() string    { return a.ClientID }
func (a *authReq) GetCodeChallenge() *oidc.CodeChallenge {
	if a.CodeChallenge == "" {
		return nil
	}
	return &oidc.CodeChallenge{Challenge: a.CodeChallenge, Method: oidc.CodeChallengeMethod(a.CodeChallengeMethod)}
}
func (a *authReq) GetNonce() string                   { return a.Nonce }
func (a *authReq) GetRedirectURI() string             { return a.RedirectURI }
func (a *authReq) GetResponseType() oidc.ResponseType { return oidc.ResponseType(a.ResponseType) }
func (a *authReq) GetResponseMode() oidc.ResponseMode { return oidc.ResponseModeQuery }
func (a *authReq) GetScopes() []string                { return a.Scopes }
func (a *authReq) GetState() string                   { return a.State }
func (a *authReq) GetSubject() string                 { return a.Subject }
func (a *authReq) Done() bool                         { return a.IsDone }

// accessToken is the server side of a hub access token (for /userinfo).
type accessToken struct {
	ClientID   string            `json:"client_id"`
	Subject    string            `json:"sub"`
	Scopes     []string          `json:"scopes"`
	Claims     map[string]string `json:"claims,omitempty"`
	HomeRegion string            `json:"home_region"`
	Expires    time.Time         `json:"exp"`
}

// regionClient is a region as a client of the hub.
type regionClient struct {
	id     string
	region string
	// keys are the region's federation public keys (more than one while
	// the region rotates its key): the region's client authenticates with
	// private_key_jwt signed by the region's own key.
	keys      []jose.JSONWebKey
	redirects []string
}

func (c *regionClient) GetID() string                       { return c.id }
func (c *regionClient) RedirectURIs() []string              { return c.redirects }
func (c *regionClient) PostLogoutRedirectURIs() []string    { return nil }
func (c *regionClient) ApplicationType() op.ApplicationType { return op.ApplicationTypeWeb }
func (c *regionClient) AuthMethod() oidc.AuthMethod         { return oidc.AuthMethodPrivateKeyJWT }
func (c *regionClient) ResponseTypes() []oidc.ResponseType {
	return []oidc.ResponseType{oidc.ResponseTypeCode}
}
func (c *regionClient) GrantTypes() []oidc.GrantType         { return []oidc.GrantType{oidc.GrantTypeCode} }
func (c *regionClient) LoginURL(id string) string            { return "/login?id=" + url.QueryEscape(id) }
func (c *regionClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeBearer }
func (c *regionClient) IDTokenLifetime() time.Duration       { return idTokenTTL }
func (c *regionClient) IsScopeAllowed(string) bool           { return false }
func (c *regionClient) IDTokenUserinfoClaimsAssertion() bool { return true }
func (c *regionClient) ClockSkew() time.Duration             { return 0 }
func (c *regionClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (c *regionClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

// DevMode admits http redirect URIs; the operator chose the scheme in the
// federation config, and matching stays exact.
func (c *regionClient) DevMode() bool {
	for _, u := range c.redirects {
		if strings.HasPrefix(u, "http://") {
			return true
		}
	}
	return false
}

type notFoundError struct{ what string }

func (e notFoundError) Error() string { return e.what + " not found" }
func (notFoundError) IsNotFound()     {}

// storage implements op.Storage for the hub.
type storage struct {
	clients map[string]*regionClient
	state   *sealedState
	key     signingKey
}

func randomToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func serverError(err error) error {
	if err == nil {
		return nil
	}
	return oidc.ErrServerError().WithParent(err)
}

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c, ok := s.clients[id]
	if !ok {
		return nil, notFoundError{"client"}
	}
	return c, nil
}

// AuthorizeClientIDSecret refuses every secret: regions authenticate at
// the hub only with private_key_jwt (GetKeyByIDAndClientID).
func (s *storage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("invalid client credentials")
}

// CreateAuthRequest enforces what op leaves open: code flow only, PKCE
// S256 always (RFC 9700 §2.1.1), query response mode.
func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	if _, ok := s.clients[req.ClientID]; !ok {
		return nil, notFoundError{"client"}
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		return nil, &oidc.Error{ErrorType: "unsupported_response_type", Description: "only response_type=code is supported"}
	}
	if req.CodeChallenge == "" || req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE with code_challenge_method=S256 is required")
	}
	if req.ResponseMode != "" && req.ResponseMode != oidc.ResponseModeQuery {
		return nil, oidc.ErrInvalidRequest().WithDescription("only response_mode=query is supported")
	}
	id, err := randomToken()
	if err != nil {
		return nil, serverError(err)
	}
	ar := &authReq{ID: id, ClientID: req.ClientID, RedirectURI: req.RedirectURI, Scopes: req.Scopes, State: req.State,
		Nonce: req.Nonce, CodeChallenge: req.CodeChallenge, CodeChallengeMethod: string(req.CodeChallengeMethod),
		ResponseType: string(req.ResponseType), Prompt: req.Prompt, MaxAge: req.MaxAge, LoginHint: req.LoginHint,
		ACRValues: req.ACRValues, Expires: time.Now().Add(authRequestTTL)}
	for _, l := range req.UILocales {
		ar.UILocales = append(ar.UILocales, l.String())
	}
	if err := s.state.put(ctx, kindAuthRequest, id, ar, authRequestTTL); err != nil {
		return nil, serverError(err)
	}
	return ar, nil
}

func (s *storage) authRequest(ctx context.Context, id string) (*authReq, error) {
	if id == "" || len(id) > 64 {
		return nil, ErrStateNotFound
	}
	var ar authReq
	if err := s.state.get(ctx, kindAuthRequest, id, &ar); err != nil {
		return nil, err
	}
	if time.Now().After(ar.Expires) {
		return nil, ErrStateNotFound
	}
	return &ar, nil
}

func (s *storage) saveAuthRequest(ctx context.Context, ar *authReq) error {
	ttl := time.Until(ar.Expires)
	if ttl <= 0 {
		return ErrStateNotFound
	}
	return s.state.put(ctx, kindAuthRequest, ar.ID, ar, ttl)
}

func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	ar, err := s.authRequest(ctx, id)
	if errors.Is(err, ErrStateNotFound) {
		return nil, notFoundError{"authorization request"}
	}
	if err != nil {
		return nil, serverError(err)
	}
	return ar, nil
}

// AuthRequestByCode redeems a code: exactly one redemption succeeds (the
// code record is taken atomically); a replay revokes the token the first
// redemption obtained (RFC 6749 §4.1.2).
func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	var id string
	err := s.state.take(ctx, kindCode, code, &id)
	if errors.Is(err, ErrStateNotFound) {
		if s.state.get(ctx, kindUsedCode, code, &id) == nil {
			if ar, err := s.authRequest(ctx, id); err == nil {
				for _, t := range ar.Tokens {
					_ = s.state.del(ctx, kindAccessToken, t)
				}
			}
			return nil, errors.New("code already used; the token issued from it is revoked")
		}
		return nil, errors.New("invalid code")
	}
	if err != nil {
		return nil, serverError(err)
	}
	if err := s.state.put(ctx, kindUsedCode, code, id, authRequestTTL); err != nil {
		return nil, serverError(err)
	}
	ar, err := s.authRequest(ctx, id)
	if err != nil || !ar.IsDone {
		return nil, errors.New("invalid code")
	}
	return ar, nil
}

func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return serverError(s.state.put(ctx, kindCode, code, id, codeTTL))
}

// DeleteAuthRequest keeps the request until it expires: it is what lets a
// replayed code revoke the token issued from it.
func (s *storage) DeleteAuthRequest(context.Context, string) error { return nil }

func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	ar, ok := req.(*authReq)
	if !ok {
		return "", time.Time{}, oidc.ErrUnsupportedGrantType()
	}
	tok, err := randomToken()
	if err != nil {
		return "", time.Time{}, serverError(err)
	}
	exp := time.Now().Add(accessTokenTTL)
	at := accessToken{ClientID: ar.ClientID, Subject: ar.Subject, Scopes: ar.Scopes, Claims: ar.Claims,
		HomeRegion: ar.HomeRegion, Expires: exp}
	if err := s.state.put(ctx, kindAccessToken, tok, at, accessTokenTTL); err != nil {
		return "", time.Time{}, serverError(err)
	}
	ar.Tokens = append(ar.Tokens, tok)
	if err := s.saveAuthRequest(ctx, ar); err != nil {
		return "", time.Time{}, serverError(err)
	}
	return tok, exp, nil
}

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, oidc.ErrUnsupportedGrantType().WithDescription("the hub issues no refresh tokens")
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, op.ErrInvalidRefreshToken
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(ctx context.Context, token, _, clientID string) *oidc.Error {
	var at accessToken
	if s.state.get(ctx, kindAccessToken, token, &at) == nil && at.ClientID == clientID {
		_ = s.state.del(ctx, kindAccessToken, token)
	}
	return nil
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) { return s.key, nil }

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{id: s.key.id, key: &s.key.key.PublicKey}}, nil
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest puts the resident claims and home_region into the
// ID token.
func (s *storage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	ar, ok := req.(*authReq)
	if !ok {
		return errors.New("unexpected token request")
	}
	fillUserinfo(info, ar.Subject, ar.Claims, ar.HomeRegion, scopes)
	return nil
}

func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	var at accessToken
	if err := s.state.get(ctx, kindAccessToken, tokenID, &at); err != nil {
		return errors.New("token is not active")
	}
	if time.Now().After(at.Expires) {
		return errors.New("token is not active")
	}
	fillUserinfo(info, at.Subject, at.Claims, at.HomeRegion, at.Scopes)
	return nil
}

func fillUserinfo(info *oidc.UserInfo, sub string, c map[string]string, home string, scopes []string) {
	info.Subject = sub
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeProfile:
			info.PreferredUsername = c["preferred_username"]
			info.Name = c["name"]
			info.GivenName = c["given_name"]
			info.FamilyName = c["family_name"]
			if l, err := language.Parse(c["locale"]); err == nil && c["locale"] != "" {
				info.Locale = oidc.NewLocale(l)
			}
		case oidc.ScopeEmail:
			info.Email = c["email"]
			if v, ok := c["email_verified"]; ok {
				info.EmailVerified = oidc.Bool(v == "true")
			}
		case oidc.ScopePhone:
			info.PhoneNumber = c["phone_number"]
		}
	}
	info.AppendClaims("home_region", home)
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errors.New("introspection is not offered by the hub")
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// GetKeyByIDAndClientID returns the federation public key of the region
// whose client clientID is (private_key_jwt).
func (s *storage) GetKeyByIDAndClientID(_ context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	c, ok := s.clients[clientID]
	if !ok {
		return nil, notFoundError{"client key"}
	}
	for _, k := range c.keys {
		if keyID == k.KeyID || (keyID == "" && len(c.keys) == 1) {
			return &k, nil
		}
	}
	return nil, notFoundError{"client key"}
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, oidc.ErrUnsupportedGrantType()
}

func (s *storage) Health(ctx context.Context) error { return s.state.s.Ping(ctx) }

// tokenCrypto is op's Crypto seam: codes and access tokens are random
// values the storage looks up by hash, not encrypted blobs.
type tokenCrypto struct{}

// Encrypt mints a code for an authorization request id, and returns the
// token id (itself the random access token) for "tokenID:subject".
func (tokenCrypto) Encrypt(s string) (string, error) {
	if id, _, ok := strings.Cut(s, ":"); ok {
		return id, nil
	}
	return randomToken()
}

// Decrypt turns an access token into "token:" so op hands the token itself
// to SetUserinfoFromToken.
func (tokenCrypto) Decrypt(s string) (string, error) {
	if len(s) != 43 || strings.ContainsAny(s, ":.") {
		return "", errors.New("not a hub access token")
	}
	return s + ":", nil
}

// signingKey is the hub's ES256 ID token key.
type signingKey struct {
	id  string
	key *ecdsa.PrivateKey
}

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (k signingKey) Key() any                                    { return k.key }
func (k signingKey) ID() string                                  { return k.id }

type publicKey struct {
	id  string
	key *ecdsa.PublicKey
}

func (p publicKey) ID() string                         { return p.id }
func (p publicKey) Algorithm() jose.SignatureAlgorithm { return jose.ES256 }
func (p publicKey) Use() string                        { return "sig" }
func (p publicKey) Key() any                           { return p.key }

// deriveSigningKey derives the hub's P-256 signing key from the hub secret,
// so every hub node signs with the same key without a key exchange. The
// secret is the hub's alone: regions hold k_hub and the routing key, and
// anything derived from those would let a region forge the hub's tokens.
func deriveSigningKey(secret []byte) (signingKey, error) {
	for i := range 16 {
		d, err := hkdf.Key(sha256.New, secret, nil, fmt.Sprintf("meridian hub id token signing key v1/%d", i), 32)
		if err != nil {
			return signingKey{}, err
		}
		priv, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d)
		if err != nil {
			continue // d was 0 or >= n: p < 2^-32, try the next counter
		}
		pub, err := priv.PublicKey.Bytes()
		if err != nil {
			return signingKey{}, err
		}
		sum := sha256.Sum256(pub)
		return signingKey{id: "hub-" + hex.EncodeToString(sum[:8]), key: priv}, nil
	}
	return signingKey{}, errors.New("hub: cannot derive a signing key")
}
