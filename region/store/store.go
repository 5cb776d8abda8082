// Package store defines what a regional authorization server keeps and the
// one interface every backend (embedded SQLite, PostgreSQL, MySQL/MariaDB)
// implements. The conformance suite in store/conformance is run against
// every backend.
//
// Secrets never reach a backend in the clear: tokens, codes, refresh tokens
// and session handles are stored by their SHA-256 digest (Digest), client
// secrets as an HMAC/SHA-256 digest, user passwords as argon2id PHC strings.
package store

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// Errors returned by every backend. Callers match them with errors.Is.
var (
	ErrNotFound = errors.New("store: not found")
	// ErrConflict is returned when a unique value (username, client_id, key id) already exists.
	ErrConflict = errors.New("store: already exists")
	// ErrAlreadyUsed is returned when a single-use artifact (authorization
	// code, refresh token) is presented a second time. The backend has already
	// revoked everything issued from it when it returns this error.
	ErrAlreadyUsed = errors.New("store: artifact already used")
	// ErrRevoked is returned for an artifact that was revoked.
	ErrRevoked = errors.New("store: revoked")
	// ErrStale is returned by a conditional update (UpdateUser,
	// UpdateGroup with a non-zero Version) when the stored version is no
	// longer the one the caller read: someone else wrote in between.
	ErrStale = errors.New("store: version changed")
)

// Hash is the SHA-256 digest under which a secret artifact is stored.
type Hash [sha256.Size]byte

// Digest returns the storage key of a secret artifact.
func Digest(secret string) Hash { return sha256.Sum256([]byte(secret)) }

// User is a person whose home (resident) region is this one.
type User struct {
	ID           string            // stable subject identifier ("sub"), never reused
	Username     string            // PRECIS-normalized username, unique
	PasswordHash string            // argon2id PHC string
	Claims       map[string]string // profile claims (name, email, ...)
	TOTPSecret   string            // base32 secret; empty when TOTP is not enrolled
	CreatedAt    time.Time
	UpdatedAt    time.Time
	// SCIMID is the user's SCIM resource id (a tagged artifact of kind
	// routing.KindUser, unique); empty until SCIM first names the user.
	// Once set, UpdateUser keeps it.
	SCIMID string
	// SCIM holds the user's SCIM attributes beyond userName (name, emails,
	// active, externalId, the enterprise extension, ...) as one JSON
	// object; empty for none. The store keeps it as it is.
	SCIM string
	// Version counts the user's writes: CreateUser stores 1 and every
	// UpdateUser adds one. It is the SCIM ETag.
	Version int64
}

// Group is a SCIM group of users of this region.
type Group struct {
	ID          string   // tagged artifact of kind routing.KindGroup
	DisplayName string   // unique
	ExternalID  string   // the provisioning client's id for it; may be empty
	Members     []string // SCIM ids of the member users, sorted, no duplicates
	CreatedAt   time.Time
	UpdatedAt   time.Time
	Version     int64 // CreateGroup stores 1, every UpdateGroup adds one
}

// Client is an OAuth client registered in this region (its resident AS).
type Client struct {
	ID                     string // tagged client_id
	SecretHash             []byte // SHA-256 of the secret; nil for public and private_key_jwt clients
	Name                   string
	RedirectURIs           []string // exact match only
	PostLogoutRedirectURIs []string
	GrantTypes             []string // authorization_code, refresh_token, client_credentials
	AuthMethod             string   // client_secret_basic, client_secret_post, private_key_jwt, none
	AccessTokenFormat      string   // opaque (default) or jwt
	JWKS                   string   // public keys (JSON Web Key Set) for private_key_jwt
	FirstParty             bool     // first-party clients skip the consent screen
	Scopes                 []string // scopes a client_credentials token may carry
	CreatedAt              time.Time

	// PreviousSecretHash is the digest of the secret a rotation replaced;
	// it still authenticates the client until PreviousSecretExpiresAt
	// (rotation with an overlap). nil when there is none.
	PreviousSecretHash      []byte
	PreviousSecretExpiresAt time.Time
	// RegistrationTokenHash is the SHA-256 digest of the client's RFC 7592
	// registration access token; nil for clients that cannot be managed
	// through the client configuration endpoint (e.g. made by an operator).
	RegistrationTokenHash []byte
}

// AuthRequest is an authorization request from the moment it arrives until
// its code is redeemed.
type AuthRequest struct {
	ID                  string // tagged, KindAuthRequest
	ClientID            string
	RedirectURI         string
	Scopes              []string
	State               string
	Nonce               string
	ResponseType        string
	ResponseMode        string
	CodeChallenge       string
	CodeChallengeMethod string
	Prompt              []string
	MaxAge              *uint // seconds; nil when absent
	LoginHint           string
	UILocales           []string
	ACRValues           []string // acr_values, in the client's order of preference

	// Set once the user authenticated.
	UserID   string
	AuthTime time.Time
	AMR      []string
	Done     bool

	CreatedAt time.Time
	ExpiresAt time.Time
}

// AccessToken is the server side of an access token. Opaque tokens are found
// by the digest of the token; JWT access tokens by the digest of their jti.
type AccessToken struct {
	Hash      Hash
	ClientID  string
	Subject   string // user id, or the client id for client_credentials
	Audience  []string
	Scopes    []string
	GrantID   string // authorization request / refresh family the token belongs to; empty for client_credentials
	Format    string // opaque or jwt
	AuthTime  time.Time
	AMR       []string
	CreatedAt time.Time
	ExpiresAt time.Time
	Revoked   bool
}

// RefreshToken is the server side of a refresh token. Tokens of one
// authorization form a family (GrantID); rotation marks the presented token
// used and inserts its successor in one transaction.
type RefreshToken struct {
	Hash      Hash
	GrantID   string
	ClientID  string
	Subject   string
	Audience  []string
	Scopes    []string
	AuthTime  time.Time
	AMR       []string
	CreatedAt time.Time
	ExpiresAt time.Time
	Used      bool
	Revoked   bool
}

// Session is a browser session at this region (the SSO cookie's server side).
type Session struct {
	Hash      Hash
	UserID    string
	AuthTime  time.Time
	AMR       []string
	CreatedAt time.Time
	ExpiresAt time.Time
}

// WebAuthnCredential is a passkey (WebAuthn public-key credential) of a
// user resident in this region. Data is the relying party's record of the
// credential (public key, flags, transports, AAGUID), opaque to the store;
// SignCount is kept apart so that a use can be recorded atomically.
type WebAuthnCredential struct {
	ID           []byte // credential id, chosen by the authenticator (<= 1023 bytes)
	UserID       string
	Name         string // the user's label ("laptop")
	Data         []byte // the relying party library's credential record (JSON)
	SignCount    uint32 // the authenticator's last signature counter
	CloneWarning bool   // a counter went backwards: the credential may be cloned
	CreatedAt    time.Time
	LastUsedAt   time.Time // zero until the first sign-in
}

// SigningKey is a region's token signing key. The private key is a PKCS#8 DER
// blob sealed with a key-encryption key that is not in the database (KEKID
// names it; an empty KEKID marks a legacy plaintext row). Rotation adds a new
// active key, published at once but signing only from NotBefore, and keeps
// retired keys published until NotAfter so tokens signed with them still verify.
type SigningKey struct {
	ID         string // kid, names the region: "<region>-<random>"
	Algorithm  string // ES256
	PrivateDER []byte // sealed PKCS#8 DER; plaintext only when KEKID is empty
	KEKID      string // key-encryption key that sealed PrivateDER; "" for plaintext
	CreatedAt  time.Time
	NotBefore  time.Time // signs from then on; a zero NotBefore is stored as CreatedAt
	Active     bool      // the newest key: the one that signs from NotBefore on
	NotAfter   time.Time // zero while active; published until then once retired
}

// OutboxEntry is a pending change of the user table to announce to the hub.
type OutboxEntry struct {
	Seq       int64
	Op        string // put or delete
	Username  string // normalized
	CreatedAt time.Time
	Attempts  int
}

// Store is what a regional node needs from its database. Every method is
// atomic: a returned error means nothing was written, and nil means the
// write committed. Backends may group-commit calls (CreateAccessToken and
// CreateTokens share transactions with concurrent calls, see GroupCommit):
// this holds per call all the same.
type Store interface {
	// Users. CreateUser, UpdateUser and DeleteUser also append an outbox
	// entry in the same transaction so the hub hears of every change.
	CreateUser(ctx context.Context, u User) error
	UpdateUser(ctx context.Context, u User) error
	GetUserByID(ctx context.Context, id string) (User, error)
	GetUserByUsername(ctx context.Context, username string) (User, error)
	// ListUsers returns up to limit users ordered by username, after the given username.
	ListUsers(ctx context.Context, after string, limit int) ([]User, error)
	// DeleteUser removes a user and, in the same transaction, revokes every
	// token issued to them, ends their sessions and removes them from every
	// group.
	DeleteUser(ctx context.Context, username string) error
	// RevokeUserTokens revokes every access and refresh token issued to the
	// user with the given id and ends their sessions, in one transaction
	// (a deactivated user, a password reset). Unknown users are no error.
	RevokeUserTokens(ctx context.Context, userID string) error
	// GetUserBySCIMID returns the user with the given SCIM resource id.
	GetUserBySCIMID(ctx context.Context, scimID string) (User, error)
	// UpdateUser (above) replaces the user with u.ID. When u.Version is
	// non-zero it writes only while the stored version equals it and
	// returns ErrStale otherwise; every update stores version+1.

	// SCIM groups. CreateGroup stores Version 1 (ErrConflict for a taken id
	// or display name); UpdateGroup replaces name, external id and members,
	// conditionally like UpdateUser; ListGroups orders by display name.
	CreateGroup(ctx context.Context, g Group) error
	GetGroup(ctx context.Context, id string) (Group, error)
	ListGroups(ctx context.Context) ([]Group, error)
	UpdateGroup(ctx context.Context, g Group) error
	DeleteGroup(ctx context.Context, id string) error

	// Outbox of user-table changes for the hub, in Seq order.
	PendingOutbox(ctx context.Context, limit int) ([]OutboxEntry, error)
	AckOutbox(ctx context.Context, seq int64) error

	// Clients.
	CreateClient(ctx context.Context, c Client) error
	GetClient(ctx context.Context, id string) (Client, error)
	ListClients(ctx context.Context) ([]Client, error)
	// UpdateClient replaces every field of the stored client c.ID except
	// CreatedAt; ErrNotFound for an unknown id. The last writer wins.
	UpdateClient(ctx context.Context, c Client) error
	// DeleteClient removes a client and, in the same transaction, revokes
	// every access and refresh token issued to it.
	DeleteClient(ctx context.Context, id string) error

	// Authorization requests and codes.
	CreateAuthRequest(ctx context.Context, r AuthRequest) error
	GetAuthRequest(ctx context.Context, id string) (AuthRequest, error)
	// CompleteAuthRequest records the authenticated user on a pending request.
	CompleteAuthRequest(ctx context.Context, id, userID string, authTime time.Time, amr []string) error
	// SaveCode attaches the digest of the issued code to a completed request.
	SaveCode(ctx context.Context, id string, code Hash) error
	// RedeemCode atomically marks the code used and returns its request. A
	// second redemption returns ErrAlreadyUsed after revoking every access and
	// refresh token of the request's grant (RFC 6749 §4.1.2). Exactly one of
	// any number of concurrent redemptions succeeds.
	RedeemCode(ctx context.Context, code Hash) (AuthRequest, error)
	// GetAuthRequestByCode returns the unexpired request holding the code
	// digest, redeemed or not, and changes nothing: the token endpoint reads
	// a code with it before the client is authenticated and redeems it only
	// afterwards (RFC 6749 §4.1.3). ErrNotFound for unknown codes and
	// expired requests.
	GetAuthRequestByCode(ctx context.Context, code Hash) (AuthRequest, error)
	DeleteAuthRequest(ctx context.Context, id string) error

	// Access tokens.
	CreateAccessToken(ctx context.Context, t AccessToken) error
	// GetAccessToken returns ErrNotFound for unknown tokens; revoked and
	// expired tokens are returned as they are, the caller decides.
	GetAccessToken(ctx context.Context, h Hash) (AccessToken, error)
	RevokeAccessToken(ctx context.Context, h Hash) error

	// Refresh tokens.
	// CreateTokens inserts an access token and, when rt is non-nil, a refresh
	// token in one transaction (the first tokens of a grant).
	CreateTokens(ctx context.Context, at AccessToken, rt *RefreshToken) error
	GetRefreshToken(ctx context.Context, h Hash) (RefreshToken, error)
	// RotateRefreshToken marks old used and inserts at and next in one
	// transaction. If old is already used (reuse) it revokes the whole family
	// (every refresh and access token with old's GrantID) and returns
	// ErrAlreadyUsed; if old is revoked it returns ErrRevoked. Exactly one of
	// any number of concurrent rotations of the same token succeeds.
	RotateRefreshToken(ctx context.Context, old Hash, at AccessToken, next RefreshToken) error
	// RevokeRefreshToken revokes one refresh token and its family.
	RevokeRefreshToken(ctx context.Context, h Hash) error
	// RevokeGrant revokes every access and refresh token of a grant.
	RevokeGrant(ctx context.Context, grantID string) error
	// RevokeUserClientTokens revokes every token of a user at a client (logout).
	RevokeUserClientTokens(ctx context.Context, userID, clientID string) error
	// ListUserClients returns, sorted, the clients that hold an unrevoked,
	// unexpired access or refresh token of userID: the user's grants.
	ListUserClients(ctx context.Context, userID string) ([]string, error)

	// Browser sessions.
	CreateSession(ctx context.Context, s Session) error
	GetSession(ctx context.Context, h Hash) (Session, error)
	DeleteSession(ctx context.Context, h Hash) error
	// ListUserSessions returns userID's unexpired sessions, oldest first.
	ListUserSessions(ctx context.Context, userID string) ([]Session, error)
	// DeleteUserSessions ends every session of userID except keep (the
	// zero Hash keeps none) and returns how many it ended.
	DeleteUserSessions(ctx context.Context, userID string, keep Hash) (int, error)

	// Passkeys (WebAuthn credentials); DeleteUser removes a user's.
	//
	// AddWebAuthnCredential inserts c; a taken credential id (by anyone)
	// gives ErrConflict.
	AddWebAuthnCredential(ctx context.Context, c WebAuthnCredential) error
	// GetWebAuthnCredential returns the credential with id, ErrNotFound when
	// there is none.
	GetWebAuthnCredential(ctx context.Context, id []byte) (WebAuthnCredential, error)
	// ListWebAuthnCredentials returns userID's credentials, oldest first.
	ListWebAuthnCredentials(ctx context.Context, userID string) ([]WebAuthnCredential, error)
	// UseWebAuthnCredential records a sign-in with credential id whose
	// authenticator reported signCount. A counter that does not exceed the
	// stored one (unless both are zero: an authenticator without a counter)
	// marks the credential clone-suspect (CloneWarning) and returns
	// ErrConflict; of concurrent uses with the same counter exactly one
	// succeeds. ErrNotFound for an unknown id.
	UseWebAuthnCredential(ctx context.Context, id []byte, signCount uint32, at time.Time) error
	// DeleteWebAuthnCredential removes userID's credential id; ErrNotFound
	// when userID holds no such credential (another user's is untouched).
	DeleteWebAuthnCredential(ctx context.Context, userID string, id []byte) error

	// Signing keys.
	AddSigningKey(ctx context.Context, k SigningKey) error
	// ActivateSigningKey makes id the active key and retires the previous
	// active key, publishing it until notAfter.
	ActivateSigningKey(ctx context.Context, id string, notAfter time.Time) error
	// ListSigningKeys returns the active key and retired keys whose NotAfter
	// is in the future, newest first.
	ListSigningKeys(ctx context.Context, now time.Time) ([]SigningKey, error)
	// ResealSigningKey replaces key id's private key material and KEK id,
	// only while the row is still sealed by fromKEK (compare-and-swap, so
	// two nodes migrating at once cannot overwrite each other's work). It
	// returns ErrNotFound for an unknown id and ErrConflict when the row is
	// no longer sealed by fromKEK.
	ResealSigningKey(ctx context.Context, id, fromKEK string, material []byte, toKEK string) error

	// DeleteExpired removes expired auth requests, tokens and sessions.
	DeleteExpired(ctx context.Context, now time.Time) error

	// Login throttling and TOTP replay, shared by every node of a region.
	//
	// ReserveAttempt atomically counts one attempt against key in the fixed
	// window that starts at window, unless that window already holds limit
	// attempts, and reports whether it counted it. Of any number of
	// concurrent reservations exactly as many succeed as the window had room
	// for. The counter is kept until expires; DeleteExpired removes it.
	ReserveAttempt(ctx context.Context, key string, window time.Time, limit int, expires time.Time) (bool, error)
	// ReleaseAttempt takes back one reservation of key in window (an attempt
	// that turned out not to count); the counter never goes below zero and
	// an absent counter is not an error.
	ReleaseAttempt(ctx context.Context, key string, window time.Time) error
	// CountAttempts returns the attempts counted against key in the window
	// that starts at window (zero for an absent counter). A caller checks a
	// finished window with it, whose count only ever goes down.
	CountAttempts(ctx context.Context, key string, window time.Time) (int, error)
	// AcceptTOTPStep records step as the last accepted TOTP time step of
	// userID if it is later than the one recorded (RFC 6238 §5.2), and
	// reports whether it was: a code's step is accepted at most once per
	// user. Exactly one of any number of concurrent calls with the same
	// step wins. The record goes with the user (DeleteUser).
	AcceptTOTPStep(ctx context.Context, userID string, step int64) (bool, error)

	// Ping checks that the database answers (readiness).
	Ping(ctx context.Context) error
	Close() error
}
