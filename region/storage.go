package region

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// clientCacheTTL bounds how long a node trusts a client it read; a client
// deleted on another node of the region stops working within this time.
const clientCacheTTL = 10 * time.Second

// storage implements op.Storage (and its optional extensions) on top of a
// store.Store. It is the seam where Meridian's rules live: every artifact is
// region-tagged, only digests are stored, a reused code or refresh token
// revokes its grant.
type storage struct {
	region string
	codec  *routing.Codec
	st     store.Store
	keys   *Keys
	ttl    Lifetimes
	log    *slog.Logger
	fedKey func(ctx context.Context) ([]op.Key, error) // federation key set, nil: own keys only
	jwts   *jwtAccessTokens                            // signs RFC 9068 access tokens for JWT clients
	remote *remote                                     // peers; nil for a lone region

	mu      sync.Mutex
	clients map[string]cachedClient
	// static are built-in clients that live in no database (the /account
	// sign-in client).
	static map[string]*client
}

type cachedClient struct {
	c  *client
	at time.Time
}

// Lifetimes of the artifacts a region issues.
type Lifetimes struct {
	AccessToken  time.Duration
	RefreshToken time.Duration
	IDToken      time.Duration
	AuthRequest  time.Duration
	Session      time.Duration
}

// DefaultLifetimes are conservative defaults (RFC 9700 §2.2.2 favours short
// access tokens with refresh rotation).
var DefaultLifetimes = Lifetimes{
	AccessToken:  15 * time.Minute,
	RefreshToken: 30 * 24 * time.Hour,
	IDToken:      time.Hour,
	AuthRequest:  10 * time.Minute,
	Session:      12 * time.Hour,
}

// errNotFound is a client-side "no such thing"; op turns it into the
// protocol's error instead of a server_error.
type notFoundError struct{ what string }

func (e notFoundError) Error() string { return e.what + " not found" }
func (notFoundError) IsNotFound()     {}

// verify checks an artifact's tag and that this region issued it.
func (s *storage) verify(artifact string, kind routing.Kind) error {
	tag, err := s.codec.VerifyKind(artifact, kind)
	if err != nil {
		return err
	}
	if tag.Region != s.region {
		return fmt.Errorf("%w: issued by %s, this is %s", routing.ErrUnknownRegion, tag.Region, s.region)
	}
	return nil
}

// serverError marks a genuine server fault (the store failed), which op
// answers with 500; everything else is the client's problem.
func serverError(err error) error {
	if err == nil || errors.Is(err, store.ErrNotFound) {
		return err
	}
	return oidc.ErrServerError().WithParent(err)
}

// storeFailed reports whether err is a database fault (not a client's
// unknown artifact) and flags the request so the API answers 503.
func storeFailed(ctx context.Context, err error) bool {
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrAlreadyUsed) || errors.Is(err, store.ErrRevoked) {
		return false
	}
	raiseFault(ctx)
	return true
}

// --- clients ---

func (s *storage) client(ctx context.Context, id string) (*client, error) {
	if err := s.verify(id, routing.KindClient); err != nil {
		return nil, notFoundError{"client"}
	}
	if c, ok := s.static[id]; ok {
		return c, nil
	}
	s.mu.Lock()
	if cc, ok := s.clients[id]; ok && time.Since(cc.at) < clientCacheTTL {
		s.mu.Unlock()
		return cc.c, nil
	}
	s.mu.Unlock()
	c, err := s.st.GetClient(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFoundError{"client"}
	}
	if err != nil {
		storeFailed(ctx, err)
		return nil, serverError(err)
	}
	cl := &client{Client: c, idTokenTTL: s.ttl.IDToken}
	s.mu.Lock()
	if len(s.clients) > 10000 {
		clear(s.clients)
	}
	s.clients[id] = cachedClient{c: cl, at: time.Now()}
	s.mu.Unlock()
	return cl, nil
}

// GetClientByClientID implements op.OPStorage.
func (s *storage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.client(ctx, id)
	if errors.As(err, new(notFoundError)) {
		// op answers errors that are not OAuth errors with 500 (which the
		// API turns into 503): an unknown client is the caller's mistake.
		return nil, oidc.ErrInvalidClient().WithParent(err)
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// HashClientSecret is how client secrets are stored: they are 256-bit
// machine-generated values, so a fast hash is as strong as a slow KDF and
// keeps client authentication at the store's speed.
func HashClientSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

func (s *storage) authenticate(ctx context.Context, id, secret string) (*client, error) {
	c, err := s.client(ctx, id)
	if err != nil {
		return nil, err
	}
	if len(c.SecretHash) == 0 || secret == "" {
		return nil, errors.New("client has no secret")
	}
	if !secretMatches(c.Client, secret, time.Now()) {
		return nil, errors.New("invalid client secret")
	}
	return c, nil
}

// forget drops client id from this node's cache after a change made here;
// other nodes of the region see it within clientCacheTTL.
func (s *storage) forget(id string) {
	s.mu.Lock()
	delete(s.clients, id)
	s.mu.Unlock()
}

// AuthorizeClientIDSecret implements op.OPStorage. A client resident in
// another region (a resource server introspecting a token issued here) is
// authenticated by its home region.
func (s *storage) AuthorizeClientIDSecret(ctx context.Context, id, secret string) error {
	if tag, err := s.codec.VerifyKind(id, routing.KindClient); err == nil && tag.Region != s.region && s.remote != nil {
		fc, err := s.remote.verifyClient(ctx, tag.Region, id, secret)
		if err != nil {
			return err
		}
		rememberForeign(ctx, id, fc.scopes)
		return nil
	}
	_, err := s.authenticate(ctx, id, secret)
	return err
}

// ClientCredentials implements op.ClientCredentialsStorage.
func (s *storage) ClientCredentials(ctx context.Context, id, secret string) (op.Client, error) {
	c, err := s.authenticate(ctx, id, secret)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// ClientCredentialsTokenRequest implements op.ClientCredentialsStorage. Only
// scopes registered for the client are granted.
func (s *storage) ClientCredentialsTokenRequest(ctx context.Context, id string, scopes []string) (op.TokenRequest, error) {
	c, err := s.client(ctx, id)
	if err != nil {
		return nil, err
	}
	var granted []string
	for _, sc := range scopes {
		if !slices.Contains(c.Scopes, sc) {
			return nil, oidc.ErrInvalidScope().WithDescription("scope not registered for this client")
		}
		granted = append(granted, sc)
	}
	return &clientCredentialsRequest{clientID: id, scopes: granted}, nil
}

// GetKeyByIDAndClientID implements op.OPStorage for private_key_jwt.
func (s *storage) GetKeyByIDAndClientID(ctx context.Context, keyID, clientID string) (*jose.JSONWebKey, error) {
	c, err := s.client(ctx, clientID)
	if err != nil {
		return nil, err
	}
	if c.JWKS == "" || c.Client.AuthMethod != AuthPrivateKey {
		return nil, notFoundError{"client key"}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal([]byte(c.JWKS), &set); err != nil {
		return nil, fmt.Errorf("client jwks: %w", err)
	}
	for i := range set.Keys {
		if set.Keys[i].KeyID == keyID || (keyID == "" && len(set.Keys) == 1) {
			return &set.Keys[i], nil
		}
	}
	return nil, notFoundError{"client key"}
}

// ValidateJWTProfileScopes implements op.OPStorage; the JWT bearer grant is
// not offered.
func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, oidc.ErrUnsupportedGrantType()
}

// --- authorization requests and codes ---

// CreateAuthRequest implements op.AuthStorage. It enforces what the library
// leaves open: PKCE is S256 only and required for every client (RFC 9700
// §2.1.1), and only the code flow exists.
func (s *storage) CreateAuthRequest(ctx context.Context, req *oidc.AuthRequest, _ string) (op.AuthRequest, error) {
	_, err := s.client(ctx, req.ClientID)
	if err != nil {
		return nil, err
	}
	if req.ResponseType != oidc.ResponseTypeCode {
		return nil, &oidc.Error{ErrorType: "unsupported_response_type", Description: "only response_type=code is supported"}
	}
	if req.CodeChallenge != "" && req.CodeChallengeMethod != oidc.CodeChallengeMethodS256 {
		return nil, oidc.ErrInvalidRequest().WithDescription("code_challenge_method must be S256")
	}
	// Every client, confidential ones too (OAuth 2.1, RFC 9700 §2.1.1):
	// PKCE also stops code injection, which a client secret does not.
	if req.CodeChallenge == "" {
		return nil, oidc.ErrInvalidRequest().WithDescription("PKCE (code_challenge with code_challenge_method=S256) is required")
	}
	if ctx.Value(requestURIKey{}) != nil {
		return nil, &oidc.Error{ErrorType: "request_uri_not_supported", Description: "request_uri is not supported"}
	}
	if req.ResponseMode != "" && req.ResponseMode != oidc.ResponseModeQuery {
		return nil, oidc.ErrInvalidRequest().WithDescription("only response_mode=query is supported")
	}
	// acr_values is kept with the request (and passed on to the resident
	// region of a user from elsewhere): bounded.
	if len(req.ACRValues) > maxACRValues {
		return nil, oidc.ErrInvalidRequest().WithDescription("too many acr_values")
	}
	for _, v := range req.ACRValues {
		if len(v) > maxACRValueLen {
			return nil, oidc.ErrInvalidRequest().WithDescription("an acr_values entry is too long")
		}
	}
	id, err := s.codec.New(routing.KindAuthRequest, s.region)
	if err != nil {
		return nil, oidc.ErrServerError().WithParent(err)
	}
	now := time.Now().UTC()
	ar := store.AuthRequest{
		ID:                  id,
		ClientID:            req.ClientID,
		RedirectURI:         req.RedirectURI,
		Scopes:              req.Scopes,
		State:               req.State,
		Nonce:               req.Nonce,
		ResponseType:        string(req.ResponseType),
		ResponseMode:        string(req.ResponseMode),
		CodeChallenge:       req.CodeChallenge,
		CodeChallengeMethod: string(req.CodeChallengeMethod),
		Prompt:              req.Prompt,
		MaxAge:              req.MaxAge,
		LoginHint:           req.LoginHint,
		ACRValues:           req.ACRValues,
		CreatedAt:           now,
		ExpiresAt:           now.Add(s.ttl.AuthRequest),
	}
	for _, l := range req.UILocales {
		ar.UILocales = append(ar.UILocales, l.String())
	}
	if err := s.st.CreateAuthRequest(ctx, ar); err != nil {
		return nil, serverError(err)
	}
	return &authRequest{ar}, nil
}

// AuthRequestByID implements op.AuthStorage.
func (s *storage) AuthRequestByID(ctx context.Context, id string) (op.AuthRequest, error) {
	if err := s.verify(id, routing.KindAuthRequest); err != nil {
		return nil, notFoundError{"authorization request"}
	}
	ar, err := s.st.GetAuthRequest(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && time.Now().After(ar.ExpiresAt)) {
		return nil, notFoundError{"authorization request"}
	}
	if err != nil {
		return nil, serverError(err)
	}
	return &authRequest{ar}, nil
}

// AuthRequestByCode implements op.AuthStorage. op calls it before it
// authenticates the client and checks the PKCE verifier, so it only reads
// the code: a leaked code presented without the client's credentials (or
// without the verifier) changes nothing (RFC 6749 §4.1.3). The code is
// redeemed by redeem, when op issues the tokens, i.e. after every check.
func (s *storage) AuthRequestByCode(ctx context.Context, code string) (op.AuthRequest, error) {
	if err := s.verify(code, routing.KindCode); err != nil {
		return nil, err
	}
	ar, err := s.st.GetAuthRequestByCode(ctx, store.Digest(code))
	if err != nil {
		storeFailed(ctx, err)
		return nil, err
	}
	return &codeRequest{authRequest: &authRequest{ar}, code: store.Digest(code)}, nil
}

// codeRequest is an authorization request read by its code and not yet
// redeemed.
type codeRequest struct {
	*authRequest
	code store.Hash
}

// redeem consumes the code behind req, atomically: of any number of
// concurrent redemptions exactly one gets the request, and a later one
// revokes every token the first obtained.
func (s *storage) redeem(ctx context.Context, req *codeRequest) error {
	ar, err := s.st.RedeemCode(ctx, req.code)
	if errors.Is(err, store.ErrAlreadyUsed) {
		s.log.WarnContext(ctx, "authorization code reused; grant revoked", "client_id", req.ClientID)
		return oidc.ErrInvalidGrant().WithDescription("invalid code")
	}
	if errors.Is(err, store.ErrNotFound) {
		return oidc.ErrInvalidGrant().WithDescription("invalid code")
	}
	if err != nil {
		storeFailed(ctx, err)
		return serverError(err)
	}
	req.AuthRequest = ar
	return nil
}

// SaveAuthCode implements op.AuthStorage.
func (s *storage) SaveAuthCode(ctx context.Context, id, code string) error {
	return serverError(s.st.SaveCode(ctx, id, store.Digest(code)))
}

// DeleteAuthRequest implements op.AuthStorage. It keeps the redeemed
// request: its row is what detects a replayed code (and revokes the tokens
// issued from it) until the request expires and DeleteExpired removes it.
func (s *storage) DeleteAuthRequest(context.Context, string) error { return nil }

// --- tokens ---

// tokenFacts extracts who and what a token request is about.
func (s *storage) tokenFacts(req op.TokenRequest) (clientID, grantID string, authTime time.Time, amr []string, err error) {
	switch r := req.(type) {
	case *codeRequest:
		return r.ClientID, r.ID, r.AuthTime, r.AMR, nil
	case *authRequest:
		return r.ClientID, r.ID, r.AuthTime, r.AMR, nil
	case *refreshRequest:
		return r.rt.ClientID, r.rt.GrantID, r.rt.AuthTime, r.rt.AMR, nil
	case *clientCredentialsRequest:
		return r.clientID, "", time.Time{}, nil, nil
	}
	return "", "", time.Time{}, nil, oidc.ErrUnsupportedGrantType()
}

// newAccessToken mints the access token id op will turn into the token: the
// opaque token itself for opaque clients, a public jti for JWT clients.
func (s *storage) newAccessToken(ctx context.Context, req op.TokenRequest) (string, store.AccessToken, error) {
	clientID, grantID, authTime, amr, err := s.tokenFacts(req)
	if err != nil {
		return "", store.AccessToken{}, err
	}
	c, err := s.client(ctx, clientID)
	if err != nil {
		return "", store.AccessToken{}, err
	}
	kind, format := routing.KindAccess, FormatOpaque
	if c.AccessTokenFormat == FormatJWT {
		kind, format = routing.KindTokenID, FormatJWT
	}
	id, err := s.codec.New(kind, s.region)
	if err != nil {
		return "", store.AccessToken{}, err
	}
	now := time.Now().UTC()
	if format == FormatJWT {
		c := atClaims{
			Claims: jwt.Claims{
				Issuer: op.IssuerFromContext(ctx), Subject: req.GetSubject(), Audience: jwt.Audience(req.GetAudience()),
				Expiry: jwt.NewNumericDate(now.Add(s.ttl.AccessToken)), IssuedAt: jwt.NewNumericDate(now), ID: id,
			},
			ClientID: clientID, Scope: strings.Join(req.GetScopes(), " "),
		}
		if !authTime.IsZero() {
			c.AuthTime = authTime.Unix()
		}
		if err := s.jwts.park(ctx, c); err != nil {
			return "", store.AccessToken{}, serverError(err)
		}
	}
	return id, store.AccessToken{
		Hash:      store.Digest(id),
		ClientID:  clientID,
		Subject:   req.GetSubject(),
		Audience:  req.GetAudience(),
		Scopes:    req.GetScopes(),
		GrantID:   grantID,
		Format:    format,
		AuthTime:  authTime,
		AMR:       amr,
		CreatedAt: now,
		ExpiresAt: now.Add(s.ttl.AccessToken),
	}, nil
}

// CreateAccessToken implements op.AuthStorage.
func (s *storage) CreateAccessToken(ctx context.Context, req op.TokenRequest) (string, time.Time, error) {
	if cr, ok := req.(*codeRequest); ok {
		if err := s.redeem(ctx, cr); err != nil {
			return "", time.Time{}, err
		}
	}
	id, at, err := s.newAccessToken(ctx, req)
	if err != nil {
		return "", time.Time{}, err
	}
	if err := s.st.CreateAccessToken(ctx, at); err != nil {
		if _, ok := req.(*codeRequest); ok && errors.Is(err, store.ErrRevoked) {
			return id, at.ExpiresAt, s.lostRace(ctx, at)
		}
		return "", time.Time{}, serverError(err)
	}
	return id, at.ExpiresAt, nil
}

// CreateAccessAndRefreshTokens implements op.AuthStorage: first tokens of a
// grant, or a rotation (the presented refresh token is marked used and its
// successor inserted in one transaction; a lost race is treated as reuse).
func (s *storage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	if cr, ok := req.(*codeRequest); ok {
		if err := s.redeem(ctx, cr); err != nil {
			return "", "", time.Time{}, err
		}
	}
	id, at, err := s.newAccessToken(ctx, req)
	if err != nil {
		return "", "", time.Time{}, err
	}
	rtoken, err := s.codec.New(routing.KindRefresh, s.region)
	if err != nil {
		return "", "", time.Time{}, err
	}
	now := at.CreatedAt
	next := store.RefreshToken{
		Hash:      store.Digest(rtoken),
		GrantID:   at.GrantID,
		ClientID:  at.ClientID,
		Subject:   at.Subject,
		Audience:  at.Audience,
		Scopes:    at.Scopes,
		AuthTime:  at.AuthTime,
		AMR:       at.AMR,
		CreatedAt: now,
		ExpiresAt: now.Add(s.ttl.RefreshToken),
	}
	if rr, ok := req.(*refreshRequest); ok {
		// Scopes narrowed on refresh (RFC 6749 §6) apply to the new access
		// token only; the family keeps the original grant.
		next.Scopes = rr.rt.Scopes
		err = s.st.RotateRefreshToken(ctx, store.Digest(current), at, next)
		switch {
		case errors.Is(err, store.ErrAlreadyUsed):
			s.log.WarnContext(ctx, "refresh token reused; family revoked", "client_id", at.ClientID)
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token already used; the grant has been revoked")
		case errors.Is(err, store.ErrRevoked), errors.Is(err, store.ErrNotFound):
			return "", "", time.Time{}, oidc.ErrInvalidGrant().WithDescription("refresh token is not valid")
		case err != nil:
			return "", "", time.Time{}, serverError(err)
		}
		return id, rtoken, at.ExpiresAt, nil
	}
	if err := s.st.CreateTokens(ctx, at, &next); err != nil {
		if errors.Is(err, store.ErrRevoked) {
			return id, rtoken, at.ExpiresAt, s.lostRace(ctx, at)
		}
		return "", "", time.Time{}, serverError(err)
	}
	return id, rtoken, at.ExpiresAt, nil
}

// lostRace handles a grant revoked between this request's code redemption
// and its token issuance: a replay of the same code arrived in between and
// revoked the grant. The sequential outcome of that race is "the first
// redemption gets tokens, the replay revokes them", so the first redemption
// still answers 200, with tokens that were never stored and are therefore
// inactive everywhere. Exactly one of any number of concurrent redemptions
// succeeds, and none of them holds a usable token.
func (s *storage) lostRace(ctx context.Context, at store.AccessToken) error {
	s.log.WarnContext(ctx, "authorization code replayed during issuance; tokens issued revoked", "client_id", at.ClientID)
	return nil
}

// TokenRequestByRefreshToken implements op.AuthStorage. A token that was
// already rotated is a replay: the whole family is revoked (RFC 9700 §4.14.2).
func (s *storage) TokenRequestByRefreshToken(ctx context.Context, token string) (op.RefreshTokenRequest, error) {
	if err := s.verify(token, routing.KindRefresh); err != nil {
		return nil, err
	}
	rt, err := s.st.GetRefreshToken(ctx, store.Digest(token))
	if err != nil {
		storeFailed(ctx, err)
		return nil, err
	}
	switch {
	case rt.Used:
		if err := s.st.RevokeRefreshToken(ctx, rt.Hash); err != nil {
			return nil, serverError(err)
		}
		s.log.WarnContext(ctx, "refresh token reused; family revoked", "client_id", rt.ClientID)
		return nil, errors.New("refresh token already used; grant revoked")
	case rt.Revoked:
		return nil, errors.New("refresh token revoked")
	case time.Now().After(rt.ExpiresAt):
		return nil, errors.New("refresh token expired")
	}
	return &refreshRequest{token: token, rt: rt, scopes: rt.Scopes}, nil
}

// TerminateSession implements op.AuthStorage. The browser session itself is
// ended by the end_session middleware, which can reach the cookie.
func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

// GetRefreshTokenInfo implements op.AuthStorage.
func (s *storage) GetRefreshTokenInfo(ctx context.Context, clientID, token string) (string, string, error) {
	if s.verify(token, routing.KindRefresh) != nil {
		return "", "", op.ErrInvalidRefreshToken
	}
	rt, err := s.st.GetRefreshToken(ctx, store.Digest(token))
	if errors.Is(err, store.ErrNotFound) {
		return "", "", op.ErrInvalidRefreshToken
	}
	if err != nil {
		return "", "", err
	}
	return rt.Subject, token, nil
}

// RevokeToken implements op.AuthStorage (RFC 7009). Unknown tokens are not
// an error; another client's token is refused.
func (s *storage) RevokeToken(ctx context.Context, token, _, clientID string) *oidc.Error {
	tag, err := routing.Parse(token)
	if err != nil {
		return nil
	}
	switch tag.Kind {
	case routing.KindRefresh:
		if s.verify(token, routing.KindRefresh) != nil {
			return nil
		}
		rt, err := s.st.GetRefreshToken(ctx, store.Digest(token))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		if rt.ClientID != clientID {
			return oidc.ErrUnauthorizedClient().WithDescription("token was issued to another client")
		}
		if err := s.st.RevokeRefreshToken(ctx, rt.Hash); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	case routing.KindAccess, routing.KindTokenID:
		if s.verify(token, tag.Kind) != nil {
			return nil
		}
		at, err := uncached(s.st).GetAccessToken(ctx, store.Digest(token))
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
		if at.ClientID != clientID {
			return oidc.ErrUnauthorizedClient().WithDescription("token was issued to another client")
		}
		if err := s.st.RevokeAccessToken(ctx, at.Hash); err != nil {
			return oidc.ErrServerError().WithParent(err)
		}
	}
	return nil
}

// activeToken returns the stored access token behind an opaque token or a
// JWT's jti, if it is still active.
func (s *storage) activeToken(ctx context.Context, tokenID string) (store.AccessToken, error) {
	tag, err := routing.Parse(tokenID)
	if err != nil || (tag.Kind != routing.KindAccess && tag.Kind != routing.KindTokenID) {
		return store.AccessToken{}, errors.New("not an access token")
	}
	if err := s.verify(tokenID, tag.Kind); err != nil {
		return store.AccessToken{}, err
	}
	at, err := s.st.GetAccessToken(ctx, store.Digest(tokenID))
	if err != nil {
		storeFailed(ctx, err)
		return store.AccessToken{}, err
	}
	if at.Revoked || time.Now().After(at.ExpiresAt) {
		return store.AccessToken{}, errors.New("token is not active")
	}
	return at, nil
}

// --- claims ---

// SetUserinfoFromScopes is deprecated in op; SetUserinfoFromRequest is used.
func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

// SetUserinfoFromRequest implements op.CanSetUserinfoFromRequest (ID token claims).
func (s *storage) SetUserinfoFromRequest(ctx context.Context, info *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	grant := ""
	switch r := req.(type) {
	case *codeRequest:
		grant = r.ID
	case *authRequest:
		grant = r.ID
	case *refreshRequest:
		grant = r.rt.GrantID
	}
	return s.fillUserinfo(ctx, info, req.GetSubject(), grant, scopes)
}

// SetUserinfoFromToken implements op.OPStorage (the userinfo endpoint).
func (s *storage) SetUserinfoFromToken(ctx context.Context, info *oidc.UserInfo, tokenID, _, _ string) error {
	at, err := s.activeToken(ctx, tokenID)
	if err != nil {
		return err
	}
	if at.Subject == at.ClientID {
		return errors.New("token has no user")
	}
	return s.fillUserinfo(ctx, info, at.Subject, at.GrantID, at.Scopes)
}

// fillUserinfo sets the claims of a resident user from the user table, or
// of a user resident elsewhere (a federated subject, never looked up in the
// user table) from their home region, fetched now over an authenticated hop.
func (s *storage) fillUserinfo(ctx context.Context, info *oidc.UserInfo, userID, _ string, scopes []string) error {
	var u store.User
	if home, sub, ok := ParseFederatedSubject(userID); ok {
		if s.remote == nil {
			return fmt.Errorf("%w: no peers configured", errHomeClaims)
		}
		claims, err := s.remote.homeClaims(ctx, home, sub, scopes)
		if err != nil {
			return err
		}
		u = store.User{ID: userID, Username: claims["preferred_username"], Claims: claims}
	} else {
		var err error
		if u, err = s.st.GetUserByID(ctx, userID); err != nil {
			storeFailed(ctx, err)
			return err
		}
	}
	info.Subject = u.ID
	for _, sc := range scopes {
		switch sc {
		case oidc.ScopeProfile:
			info.PreferredUsername = u.Username
			info.Name = u.Claims["name"]
			info.GivenName = u.Claims["given_name"]
			info.FamilyName = u.Claims["family_name"]
			if l, err := language.Parse(u.Claims["locale"]); err == nil {
				info.Locale = oidc.NewLocale(l)
			}
		case oidc.ScopeEmail:
			info.Email = u.Claims["email"]
			info.EmailVerified = oidc.Bool(u.Claims["email_verified"] == "true")
		case oidc.ScopePhone:
			info.PhoneNumber = u.Claims["phone_number"]
		}
	}
	return nil
}

// SetIntrospectionFromToken implements op.OPStorage (RFC 7662). A caller
// may introspect tokens issued to it or naming it as audience, or any token
// when it holds the meridian:introspect scope; otherwise the token is
// reported inactive, as if unknown.
func (s *storage) SetIntrospectionFromToken(ctx context.Context, resp *oidc.IntrospectionResponse, tokenID, _, callerID string) error {
	at, err := s.activeToken(ctx, tokenID)
	if err != nil {
		return err
	}
	if at.ClientID != callerID && !slices.Contains(at.Audience, callerID) {
		scopes, foreign := foreignScopes(ctx, callerID)
		if !foreign {
			caller, err := s.client(ctx, callerID)
			if err != nil {
				return errors.New("caller may not introspect this token")
			}
			scopes = caller.Scopes
		}
		if !slices.Contains(scopes, ScopeIntrospect) {
			return errors.New("caller may not introspect this token")
		}
	}
	resp.Scope = at.Scopes
	resp.ClientID = at.ClientID
	resp.Subject = at.Subject
	resp.Audience = at.Audience
	resp.Expiration = oidc.FromTime(at.ExpiresAt)
	resp.IssuedAt = oidc.FromTime(at.CreatedAt)
	resp.TokenType = oidc.BearerToken
	resp.Issuer = op.IssuerFromContext(ctx)
	if _, _, fed := ParseFederatedSubject(at.Subject); at.Subject != at.ClientID && !fed {
		if u, err := s.st.GetUserByID(ctx, at.Subject); err == nil {
			resp.Username = u.Username
		}
	}
	return nil
}

// GetPrivateClaimsFromScopes implements op.OPStorage; JWT access tokens
// carry no claims beyond RFC 9068's.
func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

// --- keys ---

// SigningKey implements op.AuthStorage.
func (s *storage) SigningKey(ctx context.Context) (op.SigningKey, error) {
	return s.keys.signingKey(ctx)
}

// SignatureAlgorithms implements op.AuthStorage.
func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.ES256}, nil
}

// KeySet implements op.AuthStorage: the keys published at /keys and used to
// verify id_token_hint and JWT access tokens.
func (s *storage) KeySet(ctx context.Context) ([]op.Key, error) {
	if s.fedKey != nil {
		return s.fedKey(ctx)
	}
	jwks, err := s.keys.PublicKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]op.Key, len(jwks))
	for i, k := range jwks {
		out[i] = publicKey{k}
	}
	return out, nil
}

// Health implements op.Storage.
func (s *storage) Health(ctx context.Context) error { return s.st.Ping(ctx) }
