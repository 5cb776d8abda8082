package region

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// Defaults of client secret rotation: the previous secret keeps working for
// DefaultSecretOverlap unless the operator asks for another overlap, never
// longer than DefaultMaxSecretOverlap.
const (
	DefaultSecretOverlap    = 24 * time.Hour
	DefaultMaxSecretOverlap = 30 * 24 * time.Hour
)

// ErrNoSecret is returned when a secret is rotated for a client that
// authenticates without one (public or private_key_jwt).
var ErrNoSecret = errors.New("region: the client has no secret")

// ErrOverlapTooLong wraps a requested rotation overlap above the maximum.
var ErrOverlapTooLong = errors.New("region: secret overlap too long")

// ClientStore is the part of the regional store that client management
// reads and writes.
type ClientStore interface {
	ClientCreator
	GetClient(ctx context.Context, id string) (store.Client, error)
	ListClients(ctx context.Context) ([]store.Client, error)
	UpdateClient(ctx context.Context, c store.Client) error
	DeleteClient(ctx context.Context, id string) error
}

// Clients manages a region's clients. The admin API, the RFC 7592 client
// configuration endpoint and the regional command all go through it, so
// they validate the same way.
type Clients struct {
	Store  ClientStore
	Codec  *routing.Codec
	Region string
	// MaxOverlap bounds how long a rotated secret keeps working; zero:
	// DefaultMaxSecretOverlap.
	MaxOverlap time.Duration
	// Now is the clock (nil: time.Now).
	Now func() time.Time
}

func (m *Clients) now() time.Time {
	if m.Now != nil {
		return m.Now().UTC()
	}
	return time.Now().UTC()
}

// Create validates spec and registers a new client (see CreateClient).
func (m *Clients) Create(ctx context.Context, spec ClientSpec) (RegisteredClient, error) {
	return CreateClient(ctx, m.Store, m.Codec, m.Region, spec)
}

// Get returns a client of this region; store.ErrNotFound for an id that
// is unknown, forged or another region's.
func (m *Clients) Get(ctx context.Context, id string) (store.Client, error) {
	if t, err := m.Codec.VerifyKind(id, routing.KindClient); err != nil || t.Region != m.Region {
		return store.Client{}, store.ErrNotFound
	}
	return m.Store.GetClient(ctx, id)
}

// List returns every client of the region, ordered by id.
func (m *Clients) List(ctx context.Context) ([]store.Client, error) {
	return m.Store.ListClients(ctx)
}

// Update replaces the metadata of client id with spec (validated as at
// registration). The client keeps its id, creation time, RFC 7592 token
// and secret while it keeps a secret-based auth method; a client that
// moves to a secret-based method gets a new secret (returned once), one
// that moves away from it loses its secrets.
func (m *Clients) Update(ctx context.Context, id string, spec ClientSpec) (RegisteredClient, error) {
	cur, err := m.Get(ctx, id)
	if err != nil {
		return RegisteredClient{}, err
	}
	if err := validateSpec(&spec); err != nil {
		return RegisteredClient{}, err
	}
	next := cur
	next.Name, next.RedirectURIs, next.PostLogoutRedirectURIs = spec.Name, spec.RedirectURIs, spec.PostLogoutRedirectURIs
	next.GrantTypes, next.AuthMethod, next.AccessTokenFormat = spec.GrantTypes, spec.AuthMethod, spec.AccessTokenFormat
	next.JWKS, next.FirstParty, next.Scopes = spec.JWKS, spec.FirstParty, spec.Scopes
	var secret string
	switch {
	case !usesSecret(spec.AuthMethod):
		next.SecretHash, next.PreviousSecretHash, next.PreviousSecretExpiresAt = nil, nil, time.Time{}
	case len(cur.SecretHash) == 0:
		if secret, err = newSecret(); err != nil {
			return RegisteredClient{}, err
		}
		next.SecretHash = HashClientSecret(secret)
	}
	if spec.registrationTokenHash != nil {
		next.RegistrationTokenHash = spec.registrationTokenHash
	}
	if err := m.Store.UpdateClient(ctx, next); err != nil {
		return RegisteredClient{}, err
	}
	return RegisteredClient{Client: next, Secret: secret}, nil
}

// Delete removes client id.
func (m *Clients) Delete(ctx context.Context, id string) error {
	if _, err := m.Get(ctx, id); err != nil {
		return err
	}
	return m.Store.DeleteClient(ctx, id)
}

// RotateSecret gives client id a new secret (returned once). The current
// secret keeps authenticating for overlap (zero: it stops at once); a
// secret from an earlier rotation stops now. Overlaps above the maximum
// are refused with ErrOverlapTooLong.
func (m *Clients) RotateSecret(ctx context.Context, id string, overlap time.Duration) (RegisteredClient, error) {
	limit := m.MaxOverlap
	if limit <= 0 {
		limit = DefaultMaxSecretOverlap
	}
	if overlap < 0 || overlap > limit {
		return RegisteredClient{}, fmt.Errorf("%w: %s is not between 0 and %s", ErrOverlapTooLong, overlap, limit)
	}
	cur, err := m.Get(ctx, id)
	if err != nil {
		return RegisteredClient{}, err
	}
	if !usesSecret(cur.AuthMethod) || len(cur.SecretHash) == 0 {
		return RegisteredClient{}, ErrNoSecret
	}
	secret, err := newSecret()
	if err != nil {
		return RegisteredClient{}, err
	}
	next := cur
	next.SecretHash = HashClientSecret(secret)
	next.PreviousSecretHash, next.PreviousSecretExpiresAt = nil, time.Time{}
	if overlap > 0 {
		next.PreviousSecretHash, next.PreviousSecretExpiresAt = cur.SecretHash, m.now().Add(overlap)
	}
	if err := m.Store.UpdateClient(ctx, next); err != nil {
		return RegisteredClient{}, err
	}
	return RegisteredClient{Client: next, Secret: secret}, nil
}

// secretMatches reports, in constant time, whether secret is c's current
// secret or its previous one within the overlap.
func secretMatches(c store.Client, secret string, now time.Time) bool {
	if secret == "" {
		return false
	}
	h := HashClientSecret(secret)
	cur := len(c.SecretHash) > 0 && subtle.ConstantTimeCompare(h, c.SecretHash) == 1
	prev := len(c.PreviousSecretHash) > 0 && subtle.ConstantTimeCompare(h, c.PreviousSecretHash) == 1
	return cur || (prev && now.Before(c.PreviousSecretExpiresAt))
}

func usesSecret(method string) bool { return method == AuthSecretBasic || method == AuthSecretPost }

// newSecret returns a 256-bit random secret, URL-safe.
func newSecret() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// newRegistrationToken returns an RFC 7592 registration access token and
// the digest under which it is stored.
func newRegistrationToken() (string, []byte, error) {
	tok, err := newSecret()
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256([]byte(tok))
	return tok, sum[:], nil
}

// validateSpec fills spec's defaults and checks it (see CreateClient).
func validateSpec(spec *ClientSpec) error {
	if len(spec.GrantTypes) == 0 {
		spec.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken}
	}
	for _, g := range spec.GrantTypes {
		if g != GrantAuthorizationCode && g != GrantRefreshToken && g != GrantClientCredentials {
			return fmt.Errorf("%w: unsupported grant type %q", ErrInvalidClientMetadata, g)
		}
	}
	if spec.AuthMethod == "" {
		spec.AuthMethod = AuthSecretBasic
		if spec.Public {
			spec.AuthMethod = AuthNone
		} else if spec.JWKS != "" {
			spec.AuthMethod = AuthPrivateKey
		}
	}
	switch spec.AuthMethod {
	case AuthSecretBasic, AuthSecretPost:
	case AuthNone:
		if slices.Contains(spec.GrantTypes, GrantClientCredentials) {
			return fmt.Errorf("%w: public clients cannot use client_credentials", ErrInvalidClientMetadata)
		}
	case AuthPrivateKey:
		var set jose.JSONWebKeySet
		if err := json.Unmarshal([]byte(spec.JWKS), &set); err != nil || len(set.Keys) == 0 {
			return fmt.Errorf("%w: private_key_jwt needs a JWKS with at least one key", ErrInvalidClientMetadata)
		}
		for _, k := range set.Keys {
			if !k.IsPublic() {
				return fmt.Errorf("%w: the JWKS must hold public keys only", ErrInvalidClientMetadata)
			}
		}
	default:
		return fmt.Errorf("%w: unsupported token_endpoint_auth_method %q", ErrInvalidClientMetadata, spec.AuthMethod)
	}
	if spec.Public != (spec.AuthMethod == AuthNone) {
		return fmt.Errorf("%w: public clients use auth method none", ErrInvalidClientMetadata)
	}
	switch spec.AccessTokenFormat {
	case "":
		spec.AccessTokenFormat = FormatOpaque
	case FormatOpaque, FormatJWT:
	default:
		return fmt.Errorf("%w: access token format must be opaque or jwt", ErrInvalidClientMetadata)
	}
	if slices.Contains(spec.GrantTypes, GrantAuthorizationCode) && len(spec.RedirectURIs) == 0 {
		return fmt.Errorf("%w: at least one redirect URI is required", ErrInvalidRedirectURI)
	}
	for _, u := range append(slices.Clone(spec.RedirectURIs), spec.PostLogoutRedirectURIs...) {
		if err := validRedirectURI(u); err != nil {
			return err
		}
	}
	return nil
}
