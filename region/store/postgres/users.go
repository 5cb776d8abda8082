package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at, scim_id, scim, version`

func scanUser(row pgx.Row) (store.User, error) {
	var u store.User
	var cl []byte
	var scimID *string
	if err := row.Scan(&u.ID, &u.Username, &u.PasswordHash, &cl, &u.TOTPSecret, &u.CreatedAt, &u.UpdatedAt,
		&scimID, &u.SCIM, &u.Version); err != nil {
		return store.User{}, err
	}
	if scimID != nil {
		u.SCIMID = *scimID
	}
	var err error
	u.Claims, err = unclaims(cl)
	u.CreatedAt, u.UpdatedAt = utc(u.CreatedAt), utc(u.UpdatedAt)
	return u, err
}

// CreateUser inserts u and appends a "put" outbox entry. A zero CreatedAt
// is set to now and a zero UpdatedAt to CreatedAt. A taken ID or username
// gives store.ErrConflict.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	now := s.now()
	u.CreatedAt = nowOr(u.CreatedAt, now)
	u.UpdatedAt = nowOr(u.UpdatedAt, u.CreatedAt)
	cl, err := claims(u.Claims)
	if err != nil {
		return wrap("create user", err)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO users (`+userCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)`,
			u.ID, u.Username, u.PasswordHash, cl, u.TOTPSecret, u.CreatedAt, u.UpdatedAt, nullable(u.SCIMID), u.SCIM); err != nil {
			return wrap("create user", err)
		}
		return wrap("create user", appendOutbox(ctx, tx, "put", u.Username, now))
	})
}

// UpdateUser replaces the user with u.ID (CreatedAt is kept) and appends a
// "put" outbox entry; a renamed user also gets a "delete" of the old
// username first. A zero UpdatedAt is set to now. A non-zero u.Version
// must match the stored one (else store.ErrStale); the version is then
// incremented. A set SCIM id is kept.
func (s *Store) UpdateUser(ctx context.Context, u store.User) error {
	now := s.now()
	u.UpdatedAt = nowOr(u.UpdatedAt, now)
	cl, err := claims(u.Claims)
	if err != nil {
		return wrap("update user", err)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		var old string
		var version int64
		if err := tx.QueryRow(ctx, `SELECT username, version FROM users WHERE id = $1 FOR UPDATE`, u.ID).Scan(&old, &version); err != nil {
			return wrap("update user", err)
		}
		if u.Version != 0 && u.Version != version {
			return wrap("update user", store.ErrStale)
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET username = $1, password_hash = $2, claims = $3, totp_secret = $4, updated_at = $5,
			scim_id = COALESCE(scim_id, $7), scim = $8, version = version + 1
			WHERE id = $6`, u.Username, u.PasswordHash, cl, u.TOTPSecret, u.UpdatedAt, u.ID, nullable(u.SCIMID), u.SCIM); err != nil {
			return wrap("update user", err)
		}
		if old != u.Username {
			if err := appendOutbox(ctx, tx, "delete", old, now); err != nil {
				return wrap("update user", err)
			}
		}
		return wrap("update user", appendOutbox(ctx, tx, "put", u.Username, now))
	})
}

// GetUserByID returns the user with the given id.
func (s *Store) GetUserByID(ctx context.Context, id string) (store.User, error) {
	var u store.User
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		u, err = scanUser(c.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = $1`, id))
		return wrap("get user", err)
	})
	return u, err
}

// GetUserBySCIMID returns the user with the given SCIM resource id.
func (s *Store) GetUserBySCIMID(ctx context.Context, scimID string) (store.User, error) {
	var u store.User
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		u, err = scanUser(c.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE scim_id = $1`, scimID))
		return wrap("get user", err)
	})
	return u, err
}

// GetUserByUsername returns the user with the given (normalized) username.
func (s *Store) GetUserByUsername(ctx context.Context, username string) (store.User, error) {
	var u store.User
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		u, err = scanUser(c.QueryRow(ctx, `SELECT `+userCols+` FROM users WHERE username = $1`, username))
		return wrap("get user", err)
	})
	return u, err
}

// ListUsers returns up to limit users with a username after the given one,
// in byte order of username. A limit below 1 gives no users.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]store.User, error) {
	if limit < 1 {
		return nil, nil
	}
	var users []store.User
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+userCols+` FROM users WHERE username > $1 ORDER BY username LIMIT $2`, after, limit)
		if err != nil {
			return wrap("list users", err)
		}
		users, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.User, error) { return scanUser(r) })
		return wrap("list users", err)
	})
	return users, err
}

// DeleteUser deletes the user with the given username and appends a
// "delete" outbox entry.
func (s *Store) DeleteUser(ctx context.Context, username string) error {
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		var id string
		if err := tx.QueryRow(ctx, `SELECT id FROM users WHERE username = $1`, username).Scan(&id); err != nil {
			return wrap("delete user", err)
		}
		// A deleted user's tokens and sessions die with the account.
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = true WHERE subject = $1`,
			`UPDATE refresh_tokens SET revoked = true WHERE subject = $1`,
			`DELETE FROM sessions WHERE user_id = $1`,
			`DELETE FROM scim_group_members WHERE member_id IN (SELECT scim_id FROM users WHERE id = $1)`,
			`DELETE FROM webauthn_credentials WHERE user_id = $1`,
			`DELETE FROM users WHERE id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return wrap("delete user", err)
			}
		}
		return wrap("delete user", appendOutbox(ctx, tx, "delete", username, now))
	})
}

func appendOutbox(ctx context.Context, tx pgx.Tx, op, username string, now time.Time) error {
	_, err := tx.Exec(ctx, `INSERT INTO outbox (op, username, created_at) VALUES ($1, $2, $3)`, op, username, now)
	return err
}

// PendingOutbox returns up to limit outbox entries in Seq order. A limit
// below 1 gives no entries.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	if limit < 1 {
		return nil, nil
	}
	var out []store.OutboxEntry
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT seq, op, username, created_at, attempts FROM outbox ORDER BY seq LIMIT $1`, limit)
		if err != nil {
			return wrap("pending outbox", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.OutboxEntry, error) {
			var e store.OutboxEntry
			err := r.Scan(&e.Seq, &e.Op, &e.Username, &e.CreatedAt, &e.Attempts)
			e.CreatedAt = utc(e.CreatedAt)
			return e, err
		})
		return wrap("pending outbox", err)
	})
	return out, err
}

// AckOutbox deletes the outbox entry seq; an unknown seq gives
// store.ErrNotFound.
func (s *Store) AckOutbox(ctx context.Context, seq int64) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("ack outbox", mustAffect(tx.Exec(ctx, `DELETE FROM outbox WHERE seq = $1`, seq)))
	})
}

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at,
	previous_secret_hash, previous_secret_expires_at, registration_token_hash`

func scanClient(row pgx.Row) (store.Client, error) {
	var c store.Client
	if err := row.Scan(&c.ID, &c.SecretHash, &c.Name, &c.RedirectURIs, &c.PostLogoutRedirectURIs, &c.GrantTypes, &c.AuthMethod,
		&c.AccessTokenFormat, &c.JWKS, &c.FirstParty, &c.Scopes, &c.CreatedAt,
		&c.PreviousSecretHash, &c.PreviousSecretExpiresAt, &c.RegistrationTokenHash); err != nil {
		return store.Client{}, err
	}
	c.RedirectURIs = unlist(c.RedirectURIs)
	c.PostLogoutRedirectURIs = unlist(c.PostLogoutRedirectURIs)
	c.GrantTypes = unlist(c.GrantTypes)
	c.Scopes = unlist(c.Scopes)
	c.CreatedAt = utc(c.CreatedAt)
	c.PreviousSecretExpiresAt = utc(c.PreviousSecretExpiresAt)
	return c, nil
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO clients (`+clientCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`,
			c.ID, c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes), c.CreatedAt,
			c.PreviousSecretHash, c.PreviousSecretExpiresAt, c.RegistrationTokenHash)
		return wrap("create client", err)
	})
}

// UpdateClient replaces every column of client c.ID but created_at.
func (s *Store) UpdateClient(ctx context.Context, c store.Client) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("update client", mustAffect(tx.Exec(ctx, `UPDATE clients SET secret_hash = $1, name = $2,
			redirect_uris = $3, post_logout_redirect_uris = $4, grant_types = $5, auth_method = $6, access_token_format = $7,
			jwks = $8, first_party = $9, scopes = $10, previous_secret_hash = $11, previous_secret_expires_at = $12,
			registration_token_hash = $13 WHERE id = $14`,
			c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes),
			c.PreviousSecretHash, c.PreviousSecretExpiresAt, c.RegistrationTokenHash, c.ID)))
	})
}

// GetClient returns the client with the given id.
func (s *Store) GetClient(ctx context.Context, id string) (store.Client, error) {
	var cl store.Client
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		cl, err = scanClient(c.QueryRow(ctx, `SELECT `+clientCols+` FROM clients WHERE id = $1`, id))
		return wrap("get client", err)
	})
	return cl, err
}

// ListClients returns every client, ordered by id.
func (s *Store) ListClients(ctx context.Context) ([]store.Client, error) {
	var out []store.Client
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+clientCols+` FROM clients ORDER BY id`)
		if err != nil {
			return wrap("list clients", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Client, error) { return scanClient(r) })
		return wrap("list clients", err)
	})
	return out, err
}

// DeleteClient deletes the client with the given id and, in the same
// transaction, revokes every access and refresh token issued to it.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if err := mustAffect(tx.Exec(ctx, `DELETE FROM clients WHERE id = $1`, id)); err != nil {
			return wrap("delete client", err)
		}
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = true WHERE client_id = $1 AND NOT revoked`,
			`UPDATE refresh_tokens SET revoked = true WHERE client_id = $1 AND NOT revoked`,
		} {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return wrap("delete client", err)
			}
		}
		return nil
	})
}
