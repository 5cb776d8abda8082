// Package region is Meridian's regional authorization server: a complete
// OpenID provider for the users and clients resident in one region.
//
// The protocol is github.com/zitadel/oidc's op package; this package owns the
// seams around it: region-tagged artifacts (crypto.go), hashed-at-rest
// storage with code-reuse and refresh-reuse revocation (storage.go), the
// identifier-first login (login.go), RFC 9207 iss and browser hardening
// (middleware.go), dynamic client registration (register.go).
package region

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
	"go.opentelemetry.io/otel/metric"
	"golang.org/x/text/language"

	"github.com/meridian-id/meridian/password"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/seal"
)

// Config configures one regional node.
type Config struct {
	// Region is this region's id; every artifact is tagged with it.
	Region string
	// Issuer is the region's own issuer URL (e.g. https://eu.id.example.com),
	// answered on RegionHosts; the hub federates with it.
	Issuer string
	// GlobalIssuer is the issuer applications use (the global host URL). Every
	// other Host is answered with it, so a request that GeoDNS sends to any
	// region sees the same issuer.
	GlobalIssuer string
	// RegionHosts are the host names (without port) that mean this region:
	// its region host and its DR host.
	RegionHosts []string
	// PeerHosts maps the other regions' host names (primary and DR,
	// without port) to their issuers: a request another region's router
	// forwards here keeps its Host, and is answered with that host's
	// issuer.
	PeerHosts map[string]string
	// CookieDomain scopes the sign-out cookie (the global domain), which
	// lets a logout anywhere end this region's session; empty keeps it
	// host-only. The SSO cookie itself is always host-only.
	CookieDomain string
	// SecureCookies sets Secure and the __Host- prefix; required with https.
	SecureCookies bool
	// CookieKey (>= 32 bytes) MACs CSRF tokens and login state.
	CookieKey []byte
	// PreviousCookieKeys, after a rotation of CookieKey, still open the
	// sealed cookies (federated-login hint) made before it.
	PreviousCookieKeys [][]byte
	// Lifetimes of issued artifacts; zero fields take DefaultLifetimes.
	Lifetimes Lifetimes
	// Federator, when set, signs in users who are not resident here.
	Federator Federator
	// Peers, when set, reaches the other regions: foreign clients are
	// authenticated by their home region and /keys publishes every
	// region's keys.
	Peers Peers
	// Meter, when set, receives the region's metrics (audit event counts).
	Meter metric.Meter
	// RegistrationToken is the initial access token (RFC 7591 §3) that opens
	// dynamic client registration; empty keeps /register closed.
	RegistrationToken string
	// RegistrationsPerMinute bounds registration attempts per client address
	// (zero: 10); the region admits six times as many authorized ones in
	// total. Both are counted in the region's database, across its nodes.
	RegistrationsPerMinute int
	// Keys configure signing-key sealing and rotation; a zero MinOverlap
	// becomes the longest ID / access token lifetime.
	Keys KeyOptions
	// ClientSecretOverlap is how long a client's previous secret keeps
	// working after a rotation that names no overlap (zero:
	// DefaultSecretOverlap); ClientSecretMaxOverlap bounds any requested
	// overlap (zero: DefaultMaxSecretOverlap).
	ClientSecretOverlap    time.Duration
	ClientSecretMaxOverlap time.Duration
	// PasswordMemoryBudget is the memory in bytes that concurrent argon2id
	// verifications of this node may hold together (zero:
	// DefaultPasswordMemoryBudget); a password post that does not fit is
	// answered 503 at once. It must hold at least one verification
	// (password.DefaultMemory).
	PasswordMemoryBudget int64
	// Passkeys configure the WebAuthn relying party.
	Passkeys PasskeyOptions
	// Account configures account self-service (/account).
	Account AccountOptions
}

// Provider is a regional OpenID provider. It is an http.Handler.
type Provider struct {
	cfg     Config
	st      store.Store
	codec   *routing.Codec
	keys    *Keys
	storage *storage
	op      *op.Provider
	log     *slog.Logger
	login   *loginUI
	fedHint *seal.Box // seals the federated-login hint cookie
	signOut *seal.Box // seals the session sign-out cookie
	audit   *auditor
	remote  *remote
	passkey *passkeys
	account *accountUI

	registration  *registrationGate
	clients       *Clients
	clientCalls   clientCalls
	secretOverlap time.Duration
	logoutPage    *template.Template
	handler       http.Handler
}

// ErrConfig is wrapped by configuration errors from New.
var ErrConfig = errors.New("region: invalid config")

// New builds a regional provider. The store must be migrated; the region
// gets its first signing key if it has none.
func New(ctx context.Context, cfg Config, st store.Store, codec *routing.Codec, log *slog.Logger) (*Provider, error) {
	if !codec.HasRegion(cfg.Region) {
		return nil, fmt.Errorf("%w: region %q is not in the routing codec", ErrConfig, cfg.Region)
	}
	if len(cfg.CookieKey) < 32 {
		return nil, fmt.Errorf("%w: cookie key must be at least 32 bytes", ErrConfig)
	}
	if cfg.Issuer == "" || cfg.GlobalIssuer == "" {
		return nil, fmt.Errorf("%w: issuer and global issuer are required", ErrConfig)
	}
	if cfg.PasswordMemoryBudget < 0 || (cfg.PasswordMemoryBudget > 0 && cfg.PasswordMemoryBudget < password.DefaultMemory) {
		return nil, fmt.Errorf("%w: password memory budget %d bytes is below one argon2id verification (%d bytes)", ErrConfig, cfg.PasswordMemoryBudget, password.DefaultMemory)
	}
	fillLifetimes(&cfg.Lifetimes)
	p := &Provider{cfg: cfg, st: st, codec: codec, log: log, audit: newAuditor(log, cfg.Region, cfg.Meter),
		registration: newRegistrationGate(cfg.RegistrationToken, cfg.RegistrationsPerMinute, newLimiter(st))}
	if cfg.ClientSecretMaxOverlap <= 0 {
		cfg.ClientSecretMaxOverlap = DefaultMaxSecretOverlap
	}
	if cfg.ClientSecretOverlap <= 0 {
		cfg.ClientSecretOverlap = min(DefaultSecretOverlap, cfg.ClientSecretMaxOverlap)
	}
	if cfg.ClientSecretOverlap > cfg.ClientSecretMaxOverlap {
		return nil, fmt.Errorf("%w: client secret overlap %s exceeds the maximum %s", ErrConfig, cfg.ClientSecretOverlap, cfg.ClientSecretMaxOverlap)
	}
	p.clientCalls = newClientCalls(cfg.Meter)
	p.secretOverlap = cfg.ClientSecretOverlap
	if cfg.Keys.MinOverlap == 0 {
		cfg.Keys.MinOverlap = max(cfg.Lifetimes.IDToken, cfg.Lifetimes.AccessToken)
	}
	if cfg.Keys.Wrapper == nil {
		log.Warn("signing keys are stored unencrypted: no key-encryption key configured", "region", cfg.Region)
	}
	var err error
	if p.keys, err = NewKeys(cfg.Region, st, cfg.Keys); err != nil {
		return nil, err
	}
	if err := p.keys.EnsureActive(ctx); err != nil {
		return nil, err
	}
	p.storage = &storage{
		region: cfg.Region, codec: codec, st: newTokenCache(st), keys: p.keys, ttl: cfg.Lifetimes, log: log,
		clients: map[string]cachedClient{}, jwts: newJWTAccessTokens(p.keys, codec, cfg.Region),
	}
	// Through the token cache: deleting a client empties it at once.
	p.clients = &Clients{Store: p.storage.st, Codec: codec, Region: cfg.Region, MaxOverlap: cfg.ClientSecretMaxOverlap}
	if cfg.Peers != nil {
		p.remote = newRemote(cfg.Peers, p.keys.opts.PeerCacheTTL)
		p.storage.remote = p.remote
		p.storage.fedKey = p.federationKeys
	}
	opCfg := &op.Config{
		CodeMethodS256:           true,
		AuthMethodPost:           true,
		AuthMethodPrivateKeyJWT:  true,
		GrantTypeRefreshToken:    true,
		RequestObjectSupported:   false,
		SupportedUILocales:       []language.Tag{language.English},
		SupportedScopes:          []string{"openid", "profile", "email", "phone", "offline_access"},
		SupportedClaims:          supportedClaims,
		DefaultLogoutRedirectURI: "/logged-out",
	}
	p.op, err = op.NewProvider(opCfg, p.storage, p.issuerFunc,
		op.WithCrypto(tokenCrypto{codec: codec, region: cfg.Region, jwts: p.storage.jwts}),
		op.WithAllowInsecure(),
		op.WithHttpInterceptors(p.intercept),
		// CORS is set per endpoint by intercept, not on every route.
		op.WithCORSOptions(nil),
	)
	if err != nil {
		return nil, err
	}
	if p.fedHint, err = seal.New("meridian federated-login hint v2", cfg.CookieKey, cfg.PreviousCookieKeys...); err != nil {
		return nil, fmt.Errorf("%w: cookie key: %v", ErrConfig, err)
	}
	if p.signOut, err = seal.New("meridian session sign-out v1", cfg.CookieKey, cfg.PreviousCookieKeys...); err != nil {
		return nil, fmt.Errorf("%w: cookie key: %v", ErrConfig, err)
	}
	if p.passkey, err = newPasskeys(cfg); err != nil {
		return nil, err
	}
	p.login, err = newLoginUI(p)
	if err != nil {
		return nil, err
	}
	if p.account, err = newAccountUI(p); err != nil {
		return nil, err
	}
	if p.logoutPage, err = p.login.tmpl.Clone(); err == nil {
		_, err = p.logoutPage.Parse(confirmLogoutTemplate)
	}
	if err != nil {
		return nil, err
	}
	p.handler = p.op
	return p, nil
}

var supportedClaims = []string{
	"sub", "aud", "exp", "iat", "iss", "auth_time", "nonce", "acr", "amr", "at_hash", "c_hash", "azp",
	"preferred_username", "name", "given_name", "family_name", "locale", "email", "email_verified", "phone_number",
}

func fillLifetimes(l *Lifetimes) {
	d := DefaultLifetimes
	if l.AccessToken <= 0 {
		l.AccessToken = d.AccessToken
	}
	if l.RefreshToken <= 0 {
		l.RefreshToken = d.RefreshToken
	}
	if l.IDToken <= 0 {
		l.IDToken = d.IDToken
	}
	if l.AuthRequest <= 0 {
		l.AuthRequest = d.AuthRequest
	}
	if l.Session <= 0 {
		l.Session = d.Session
	}
}

// ServeHTTP implements http.Handler.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.handler.ServeHTTP(w, r) }

// Keys returns the region's signing key manager.
func (p *Provider) Keys() *Keys { return p.keys }

// Region returns the region id.
func (p *Provider) Region() string { return p.cfg.Region }

// issuerFunc is op's issuer: the issuer of the host the request came
// through (hostIssuer).
func (p *Provider) issuerFunc(bool) (op.IssuerFromRequest, error) {
	return p.hostIssuer, nil
}

// hostIssuer is the issuer of the host a request came through, the one
// its client discovered there: the region issuer on the region's own
// hosts, another region's issuer on that region's hosts (its router
// forwarded the request here, keeping the Host), the global issuer
// everywhere else (the global host, or a test listener). Discovery, ID
// tokens and RFC 9207 authorization-response iss all use it, so they
// always agree.
func (p *Provider) hostIssuer(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(host)
	if slices.Contains(p.cfg.RegionHosts, host) {
		return p.cfg.Issuer
	}
	if iss, ok := p.cfg.PeerHosts[host]; ok {
		return iss
	}
	return p.cfg.GlobalIssuer
}

// Ready reports whether the node can serve (its database answers).
func (p *Provider) Ready(ctx context.Context) error { return p.st.Ping(ctx) }

// BearerToken returns the active access token a bearer value stands for:
// an opaque access token issued by this region, or an RFC 9068 JWT access
// token signed by it. Revoked, expired, foreign and malformed tokens are an
// error. Handlers outside the OpenID provider (SCIM) authenticate with it.
func (p *Provider) BearerToken(ctx context.Context, bearer string) (store.AccessToken, error) {
	id := bearer
	if strings.HasPrefix(bearer, "eyJ") {
		jti, err := p.storage.jwts.verify(bearer)
		if err != nil {
			return store.AccessToken{}, err
		}
		id = strings.TrimSuffix(jti, ":") // verify answers in Decrypt's "tokenID:" form
	}
	return p.storage.activeToken(ctx, id)
}

// Store is the provider's view of its store: a user deleted or a token
// revoked through it also leaves this node's access-token cache at once.
func (p *Provider) Store() store.Store { return p.storage.st }
