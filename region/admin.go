package region

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// ClientSpec describes a client to register.
type ClientSpec struct {
	Name                   string
	RedirectURIs           []string
	PostLogoutRedirectURIs []string
	GrantTypes             []string // default: authorization_code, refresh_token
	AuthMethod             string   // default: client_secret_basic, or none when Public
	Public                 bool
	AccessTokenFormat      string // opaque (default) or jwt
	JWKS                   string // for private_key_jwt
	FirstParty             bool
	Scopes                 []string

	// registrationTokenHash, set by dynamic registration, is stored with
	// the client (RFC 7592).
	registrationTokenHash []byte
}

// RegisteredClient is what registration returns; Secret is shown once and
// only its hash is stored.
type RegisteredClient struct {
	store.Client
	Secret string
}

// ErrInvalidClientMetadata is wrapped by client validation errors.
var ErrInvalidClientMetadata = errors.New("invalid client metadata")

// ErrInvalidRedirectURI is wrapped when a redirect URI is unacceptable.
var ErrInvalidRedirectURI = errors.New("invalid redirect_uri")

// ClientCreator is the part of the regional store CreateClient writes to.
type ClientCreator interface {
	CreateClient(ctx context.Context, c store.Client) error
}

// UserCreator is the part of the regional store CreateUser writes to.
type UserCreator interface {
	CreateUser(ctx context.Context, u store.User) error
}

// CreateClient validates spec, mints a tagged client_id (and a 256-bit
// secret for confidential clients) and stores the client.
func CreateClient(ctx context.Context, st ClientCreator, codec *routing.Codec, region string, spec ClientSpec) (RegisteredClient, error) {
	if err := validateSpec(&spec); err != nil {
		return RegisteredClient{}, err
	}
	id, err := codec.New(routing.KindClient, region)
	if err != nil {
		return RegisteredClient{}, err
	}
	c := store.Client{
		ID: id, Name: spec.Name, RedirectURIs: spec.RedirectURIs, PostLogoutRedirectURIs: spec.PostLogoutRedirectURIs,
		GrantTypes: spec.GrantTypes, AuthMethod: spec.AuthMethod, AccessTokenFormat: spec.AccessTokenFormat,
		JWKS: spec.JWKS, FirstParty: spec.FirstParty, Scopes: spec.Scopes, CreatedAt: time.Now().UTC(),
	}
	var secret string
	if usesSecret(spec.AuthMethod) {
		if secret, err = newSecret(); err != nil {
			return RegisteredClient{}, err
		}
		c.SecretHash = HashClientSecret(secret)
	}
	c.RegistrationTokenHash = spec.registrationTokenHash
	if err := st.CreateClient(ctx, c); err != nil {
		return RegisteredClient{}, err
	}
	return RegisteredClient{Client: c, Secret: secret}, nil
}

// validRedirectURI accepts absolute https URIs with a host, http on a
// loopback host (RFC 8252 §7.3: 127.0.0.1, [::1], localhost), and
// reverse-domain private-use schemes of native apps (RFC 8252 §7.1: the
// scheme contains a dot, e.g. com.example.app:/cb); never a fragment or
// userinfo. Every other scheme is refused: view-source:, blob:, jar:,
// ms-settings:, javascript:, data:, file: and the like hand the code to
// something that is not the client.
func validRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || strings.Contains(raw, "#") || len(raw) > 2000 {
		return fmt.Errorf("%w: %q must be an absolute URI without fragment", ErrInvalidRedirectURI, raw)
	}
	if u.User != nil {
		return fmt.Errorf("%w: %q must not carry userinfo", ErrInvalidRedirectURI, raw)
	}
	switch scheme := strings.ToLower(u.Scheme); {
	case scheme == "https":
		if u.Host == "" {
			return fmt.Errorf("%w: %q has no host", ErrInvalidRedirectURI, raw)
		}
	case scheme == "http":
		if !isLoopbackURI(raw) {
			return fmt.Errorf("%w: %q: http is only allowed for loopback hosts", ErrInvalidRedirectURI, raw)
		}
	case strings.Contains(scheme, "."):
		// A reverse-domain private-use scheme: it names the native app
		// that owns it.
	default:
		return fmt.Errorf("%w: %q: scheme %q not allowed (use https, loopback http or a reverse-domain private-use scheme)", ErrInvalidRedirectURI, raw, u.Scheme)
	}
	return nil
}

// RecordAdminChange emits one admin.change audit event (a JSON-able log
// record with the region and action) for a change an operator made outside
// the provider, e.g. with the regional command. attrs must not carry
// secrets.
func RecordAdminChange(ctx context.Context, log *slog.Logger, region, action string, attrs ...slog.Attr) {
	newAuditor(log, region, nil).record(ctx, AuditAdminChange, append([]slog.Attr{slog.String("action", action)}, attrs...)...)
}

// UserSpec describes a user to create.
type UserSpec struct {
	Username   string
	Password   string
	Claims     map[string]string
	TOTPSecret string
}

// CreateUser normalizes the username, hashes the password with argon2id
// and stores the user with a fresh random subject id.
func CreateUser(ctx context.Context, st UserCreator, spec UserSpec) (store.User, error) {
	name, err := NormalizeUsername(spec.Username)
	if err != nil {
		return store.User{}, err
	}
	if len(spec.Password) < 8 {
		return store.User{}, errors.New("region: password must be at least 8 characters")
	}
	hash, err := HashPassword(spec.Password)
	if err != nil {
		return store.User{}, err
	}
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return store.User{}, err
	}
	now := time.Now().UTC()
	u := store.User{ID: base64.RawURLEncoding.EncodeToString(b[:]), Username: name, PasswordHash: hash,
		Claims: spec.Claims, TOTPSecret: spec.TOTPSecret, CreatedAt: now, UpdatedAt: now}
	if u.Claims == nil {
		u.Claims = map[string]string{}
	}
	if err := st.CreateUser(ctx, u); err != nil {
		return store.User{}, err
	}
	return u, nil
}
