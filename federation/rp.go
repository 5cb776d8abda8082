package federation

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// Flow is the per-login secret state of an authorization request the RP
// sends: it must come back unchanged with the answer.
type Flow struct {
	State    string // CSRF protection of the redirect (RFC 6749 §10.12)
	Nonce    string // binds the ID token to this login
	Verifier string // PKCE code verifier (S256)
	// ClientID is the client_id the authorization request named (empty:
	// the RP's). AuthCodeURL fills it in; the caller keeps it with the
	// flow, so that the node completing the login redeems the code under
	// the id it was issued to even when that node derives another one
	// (nodes on different steps of a routing-key rotation).
	ClientID string
}

// NewFlow returns a flow with fresh 256-bit random values.
func NewFlow() (Flow, error) {
	var f Flow
	for _, p := range []*string{&f.State, &f.Nonce} {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return Flow{}, err
		}
		*p = base64.RawURLEncoding.EncodeToString(b[:])
	}
	f.Verifier = oauth2.GenerateVerifier()
	return f, nil
}

// Identity is a user as an upstream OpenID provider vouched for them.
type Identity struct {
	Issuer   string
	Subject  string
	Claims   map[string]string // profile claims: preferred_username, name, email, ...
	AuthTime time.Time
	AMR      []string
	// HomeRegion is the home_region claim (set by the hub), empty otherwise.
	HomeRegion string
}

// AuthError is an OAuth error answered by the upstream authorization
// endpoint (login_required, access_denied, ...).
type AuthError struct {
	Code        string
	Description string
}

// Error implements error.
func (e *AuthError) Error() string {
	return "federation: upstream authorization error " + strconv.Quote(e.Code) + ": " + e.Description
}

// Errors of RP.Complete other than unavailability (which wraps
// ErrUnavailable) and *AuthError.
var (
	ErrIssuerMismatch = errors.New("federation: authorization response iss does not name the expected issuer")
	ErrNoCode         = errors.New("federation: authorization response has no code")
	ErrNonce          = errors.New("federation: ID token nonce does not match")
	ErrSubject        = errors.New("federation: userinfo subject differs from the ID token subject")
)

// unavailable wraps err as ErrUnavailable.
func unavailable(what string, err error) error {
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, what, err)
}

// profileClaims are the claims copied from upstream tokens.
var profileClaims = []string{"preferred_username", "name", "given_name", "family_name", "locale",
	"email", "email_verified", "phone_number"}

// RPOptions tune an RP.
type RPOptions struct {
	// Scopes requested (default openid profile email phone).
	Scopes []string
	// HealthTTL is how long a successful probe is trusted (default 2s).
	HealthTTL time.Duration
	// ProbeTimeout bounds a health probe (default 1.5s).
	ProbeTimeout time.Duration
}

// RP is an OpenID Connect relying party towards one provider of the
// federation (the hub or a region) with one client's credentials. It
// discovers the provider lazily (a provider that is down at startup is
// retried), keeps a short-lived health state, and completes logins with
// every check RFC 9700 asks of a client: exact issuer (discovery and ID
// token), RFC 9207 iss on the authorization response, state (the caller's),
// PKCE S256, nonce, audience, signature and at_hash. It is safe for
// concurrent use.
type RP struct {
	issuer string
	creds  Credentials
	client *http.Client
	opts   RPOptions

	mu       sync.Mutex
	provider *oidc.Provider
	checked  time.Time
	healthy  bool
}

// NewRP returns an RP towards issuer. client is the back-channel client
// (NewHTTPClient); it is used for discovery, keys, token and userinfo.
func NewRP(issuer string, creds Credentials, client *http.Client, opts RPOptions) (*RP, error) {
	u, err := url.Parse(issuer)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("federation: issuer %q is not an http(s) URL", issuer)
	}
	if creds.ClientID == "" || creds.Key == nil || len(creds.RedirectURIs) == 0 {
		return nil, errors.New("federation: RP needs a client id, private key and redirect URI")
	}
	if client == nil {
		return nil, errors.New("federation: RP needs an HTTP client")
	}
	if len(opts.Scopes) == 0 {
		opts.Scopes = []string{oidc.ScopeOpenID, "profile", "email", "phone"}
	}
	if opts.HealthTTL <= 0 {
		opts.HealthTTL = 2 * time.Second
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 1500 * time.Millisecond
	}
	return &RP{issuer: issuer, creds: creds, client: client, opts: opts}, nil
}

// Issuer returns the provider's issuer.
func (rp *RP) Issuer() string { return rp.issuer }

// ClientID returns the RP's client id at the provider.
func (rp *RP) ClientID() string { return rp.creds.ClientID }

func (rp *RP) ctx(ctx context.Context) context.Context {
	return context.WithValue(oidc.ClientContext(ctx, rp.client), oauth2.HTTPClient, rp.client)
}

// Ready checks that the provider answers, probing its discovery document
// (bounded by ProbeTimeout) unless a probe succeeded within HealthTTL. The
// error wraps ErrUnavailable.
func (rp *RP) Ready(ctx context.Context) error {
	rp.mu.Lock()
	p, fresh := rp.provider, rp.healthy && time.Since(rp.checked) < rp.opts.HealthTTL
	rp.mu.Unlock()
	if p != nil && fresh {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, rp.opts.ProbeTimeout)
	defer cancel()
	var err error
	if p == nil {
		// Discovery doubles as the first probe. The provider keeps the
		// client (not the context) for its key set.
		p, err = oidc.NewProvider(rp.ctx(pctx), rp.issuer)
	} else {
		err = rp.probe(pctx)
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	if err == nil && rp.provider == nil {
		rp.provider = p
	}
	rp.checked, rp.healthy = time.Now(), err == nil
	if err != nil {
		return unavailable("probing "+rp.issuer, err)
	}
	return nil
}

func (rp *RP) probe(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(rp.issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return err
	}
	resp, err := rp.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("discovery answered %s", resp.Status)
	}
	return nil
}

// MarkDown records that the provider failed, so the next Ready probes.
func (rp *RP) MarkDown() {
	rp.mu.Lock()
	rp.healthy = false
	rp.mu.Unlock()
}

func (rp *RP) discovered(ctx context.Context) (*oidc.Provider, error) {
	rp.mu.Lock()
	p := rp.provider
	rp.mu.Unlock()
	if p != nil {
		return p, nil
	}
	if err := rp.Ready(ctx); err != nil {
		return nil, err
	}
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.provider, nil
}

func (rp *RP) config(p *oidc.Provider, clientID, redirectURI string) *oauth2.Config {
	ep := p.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInParams // client_id in the body; no secret, a private_key_jwt assertion
	return &oauth2.Config{ClientID: clientID, Endpoint: ep,
		RedirectURL: redirectURI, Scopes: rp.opts.Scopes}
}

// RedirectURI returns the registered redirect URI on host (the host the
// browser is on), or the default one.
func (rp *RP) RedirectURI(host string) string {
	for _, u := range rp.creds.RedirectURIs {
		if pu, err := url.Parse(u); err == nil && strings.EqualFold(pu.Host, host) {
			return u
		}
	}
	return rp.creds.RedirectURIs[0]
}

// clientID is the client id flow f runs under.
func (rp *RP) clientID(f Flow) string {
	if f.ClientID != "" {
		return f.ClientID
	}
	return rp.creds.ClientID
}

// AuthCodeURL returns the authorization request URL for flow f with the
// user's login_hint and extra parameters (prompt, max_age), and sets
// f.ClientID to the client id it names. The provider must have been
// discovered (call Ready first).
func (rp *RP) AuthCodeURL(ctx context.Context, f *Flow, redirectURI, loginHint string, extra url.Values) (string, error) {
	p, err := rp.discovered(ctx)
	if err != nil {
		return "", err
	}
	opts := []oauth2.AuthCodeOption{oidc.Nonce(f.Nonce), oauth2.S256ChallengeOption(f.Verifier)}
	if loginHint != "" {
		opts = append(opts, oauth2.SetAuthURLParam("login_hint", loginHint))
	}
	for k, vs := range extra {
		if len(vs) > 0 && vs[0] != "" {
			opts = append(opts, oauth2.SetAuthURLParam(k, vs[0]))
		}
	}
	f.ClientID = rp.clientID(*f)
	return rp.config(p, f.ClientID, redirectURI).AuthCodeURL(f.State, opts...), nil
}

// Complete checks an authorization response q (the callback's query) that
// belongs to flow f (the caller matched q's state to f, in constant time),
// redeems the code and returns the verified identity. Unreachable
// providers give errors wrapping ErrUnavailable; an OAuth
// error answer gives *AuthError.
func (rp *RP) Complete(ctx context.Context, q url.Values, f Flow, redirectURI string) (Identity, error) {
	// RFC 9207: the response must name the issuer we sent the user to, or
	// another provider's code could be injected here (mix-up attack). Both
	// the hub and the regions always send iss.
	if subtle.ConstantTimeCompare([]byte(q.Get("iss")), []byte(rp.issuer)) != 1 {
		return Identity{}, ErrIssuerMismatch
	}
	if e := q.Get("error"); e != "" {
		ae := &AuthError{Code: e, Description: q.Get("error_description")}
		if e == "server_error" || e == "temporarily_unavailable" {
			// The provider is up but cannot serve (its store failed): the
			// user should retry later, not start again.
			return Identity{}, unavailable("authorization endpoint of "+rp.issuer, ae)
		}
		return Identity{}, ae
	}
	code := q.Get("code")
	if code == "" {
		return Identity{}, ErrNoCode
	}
	p, err := rp.discovered(ctx)
	if err != nil {
		return Identity{}, err
	}
	cctx := rp.ctx(ctx)
	// private_key_jwt (RFC 7523 §2.2): the assertion names the OP's issuer
	// and its token endpoint as audience.
	clientID := rp.clientID(f)
	assertion, err := SignAssertion(rp.creds.Key, clientID, []string{rp.issuer, p.Endpoint().TokenURL}, time.Now())
	if err != nil {
		return Identity{}, err
	}
	tok, err := rp.config(p, clientID, redirectURI).Exchange(cctx, code, oauth2.VerifierOption(f.Verifier),
		oauth2.SetAuthURLParam("client_assertion_type", ClientAssertionType), oauth2.SetAuthURLParam("client_assertion", assertion))
	if err != nil {
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.Response == nil || re.Response.StatusCode >= 500 {
			rp.MarkDown()
			return Identity{}, unavailable("token endpoint of "+rp.issuer, err)
		}
		return Identity{}, fmt.Errorf("federation: code exchange at %s: %w", rp.issuer, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return Identity{}, errors.New("federation: token response has no id_token")
	}
	idt, err := p.Verifier(&oidc.Config{ClientID: clientID, SupportedSigningAlgs: []string{oidc.ES256, oidc.RS256}}).Verify(cctx, raw)
	if err != nil {
		return Identity{}, fmt.Errorf("federation: ID token from %s: %w", rp.issuer, err)
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(f.Nonce)) != 1 {
		return Identity{}, ErrNonce
	}
	if idt.AccessTokenHash != "" {
		if err := idt.VerifyAccessToken(tok.AccessToken); err != nil {
			return Identity{}, fmt.Errorf("federation: at_hash: %w", err)
		}
	}
	var all map[string]any
	if err := idt.Claims(&all); err != nil {
		return Identity{}, fmt.Errorf("federation: ID token claims: %w", err)
	}
	id := Identity{Issuer: idt.Issuer, Subject: idt.Subject, Claims: map[string]string{}}
	copyClaims(id.Claims, all)
	if at, ok := all["auth_time"].(float64); ok && at > 0 {
		id.AuthTime = time.Unix(int64(at), 0).UTC()
	}
	if amr, ok := all["amr"].([]any); ok {
		for _, a := range amr {
			if s, ok := a.(string); ok {
				id.AMR = append(id.AMR, s)
			}
		}
	}
	id.HomeRegion, _ = all["home_region"].(string)
	// A region's ID token carries only sub when an access token is issued
	// alongside (claims belong to userinfo, as OIDC Core intends).
	if id.Claims["preferred_username"] == "" && p.UserInfoEndpoint() != "" {
		ui, err := p.UserInfo(cctx, oauth2.StaticTokenSource(tok))
		if err != nil {
			rp.MarkDown()
			return Identity{}, unavailable("userinfo of "+rp.issuer, err)
		}
		if subtle.ConstantTimeCompare([]byte(ui.Subject), []byte(idt.Subject)) != 1 {
			return Identity{}, ErrSubject
		}
		var uc map[string]any
		if err := ui.Claims(&uc); err != nil {
			return Identity{}, fmt.Errorf("federation: userinfo claims: %w", err)
		}
		copyClaims(id.Claims, uc)
	}
	if id.AuthTime.IsZero() {
		id.AuthTime = time.Now().UTC()
	}
	return id, nil
}

// copyClaims copies the profile claims of src into dst as strings.
func copyClaims(dst map[string]string, src map[string]any) {
	for _, k := range profileClaims {
		switch v := src[k].(type) {
		case string:
			if v != "" {
				dst[k] = v
			}
		case bool:
			dst[k] = strconv.FormatBool(v)
		}
	}
}

// LoginParams are the authorization request parameters a federated login
// carries from the entry region through the hub to the resident region,
// which enforces them (OIDC Core §3.1.2.1): prompt (only login and none
// travel; consent stays with the application's own region), max_age,
// ui_locales and acr_values.
type LoginParams struct {
	Prompt    []string
	MaxAge    *uint
	UILocales []string
	ACRValues []string
}

// Values returns the parameters to add to the authorization request.
func (p LoginParams) Values() url.Values {
	v := url.Values{}
	var prompt []string
	for _, x := range p.Prompt {
		if x == "login" || x == "none" {
			prompt = append(prompt, x)
		}
	}
	if len(prompt) > 0 {
		v.Set("prompt", strings.Join(prompt, " "))
	}
	if p.MaxAge != nil {
		v.Set("max_age", strconv.FormatUint(uint64(*p.MaxAge), 10))
	}
	if len(p.UILocales) > 0 {
		v.Set("ui_locales", strings.Join(p.UILocales, " "))
	}
	if len(p.ACRValues) > 0 {
		v.Set("acr_values", strings.Join(p.ACRValues, " "))
	}
	return v
}
