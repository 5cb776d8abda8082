package mysql

import (
	"context"
	"database/sql"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// row is what *sql.Row and *sql.Rows have in common.
type row interface{ Scan(dest ...any) error }

// querier is a *sql.DB or *sql.Tx.
type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// collect runs query on q and scans every row with scan.
func collect[T any](ctx context.Context, q querier, scan func(row) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at, scim_id, scim, version`

func scanUser(r row) (store.User, error) {
	var u store.User
	var cl []byte
	var scimID, scim sql.NullString
	if err := r.Scan(&u.ID, &u.Username, &u.PasswordHash, &cl, &u.TOTPSecret, timeCol{&u.CreatedAt}, timeCol{&u.UpdatedAt},
		&scimID, &scim, &u.Version); err != nil {
		return store.User{}, err
	}
	u.SCIMID, u.SCIM = scimID.String, scim.String
	var err error
	u.Claims, err = unclaims(cl)
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
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
			u.ID, u.Username, u.PasswordHash, cl, u.TOTPSecret, ts(u.CreatedAt), ts(u.UpdatedAt), nullable(u.SCIMID), nullable(u.SCIM)); err != nil {
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
	return s.write(ctx, func(tx *sql.Tx) error {
		var old string
		var version int64
		if err := tx.QueryRowContext(ctx, `SELECT username, version FROM users WHERE id = ? FOR UPDATE`, u.ID).Scan(&old, &version); err != nil {
			return wrap("update user", err)
		}
		if u.Version != 0 && u.Version != version {
			return wrap("update user", store.ErrStale)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET username = ?, password_hash = ?, claims = ?, totp_secret = ?, updated_at = ?,
			scim_id = COALESCE(scim_id, ?), scim = ?, version = version + 1
			WHERE id = ?`, u.Username, u.PasswordHash, cl, u.TOTPSecret, ts(u.UpdatedAt), nullable(u.SCIMID), nullable(u.SCIM), u.ID); err != nil {
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
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	return u, wrap("get user", err)
}

// GetUserBySCIMID returns the user with the given SCIM resource id.
func (s *Store) GetUserBySCIMID(ctx context.Context, scimID string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE scim_id = ?`, scimID))
	return u, wrap("get user", err)
}

// GetUserByUsername returns the user with the given (normalized) username.
func (s *Store) GetUserByUsername(ctx context.Context, username string) (store.User, error) {
	u, err := scanUser(s.db.QueryRowContext(ctx, `SELECT `+userCols+` FROM users WHERE username = ?`, username))
	return u, wrap("get user", err)
}

// ListUsers returns up to limit users with a username after the given one,
// in byte order of username. A limit below 1 gives no users.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]store.User, error) {
	if limit < 1 {
		return nil, nil
	}
	users, err := collect(ctx, s.db, scanUser, `SELECT `+userCols+` FROM users WHERE username > ? ORDER BY username LIMIT ?`,
		after, limit)
	return users, wrap("list users", err)
}

// DeleteUser deletes the user with the given username and appends a
// "delete" outbox entry.
func (s *Store) DeleteUser(ctx context.Context, username string) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var id string
		if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = ? FOR UPDATE`, username).Scan(&id); err != nil {
			return wrap("delete user", err)
		}
		// A deleted user's tokens and sessions die with the account.
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = TRUE WHERE subject = ?`,
			`UPDATE refresh_tokens SET revoked = TRUE WHERE subject = ?`,
			`DELETE FROM sessions WHERE user_id = ?`,
			`DELETE FROM scim_group_members WHERE member_id IN (SELECT scim_id FROM users WHERE id = ?)`,
			`DELETE FROM webauthn_credentials WHERE user_id = ?`,
			`DELETE FROM users WHERE id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return wrap("delete user", err)
			}
		}
		return wrap("delete user", appendOutbox(ctx, tx, "delete", username, now))
	})
}

func appendOutbox(ctx context.Context, tx *sql.Tx, op, username string, now time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox (op, username, created_at) VALUES (?, ?, ?)`, op, username, ts(now))
	return err
}

// PendingOutbox returns up to limit outbox entries in Seq order. A limit
// below 1 gives no entries.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	if limit < 1 {
		return nil, nil
	}
	out, err := collect(ctx, s.db, func(r row) (store.OutboxEntry, error) {
		var e store.OutboxEntry
		err := r.Scan(&e.Seq, &e.Op, &e.Username, timeCol{&e.CreatedAt}, &e.Attempts)
		return e, err
	}, `SELECT seq, op, username, created_at, attempts FROM outbox ORDER BY seq LIMIT ?`, limit)
	return out, wrap("pending outbox", err)
}

// AckOutbox deletes the outbox entry seq; an unknown seq gives
// store.ErrNotFound.
func (s *Store) AckOutbox(ctx context.Context, seq int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("ack outbox", mustAffect(tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq)))
	})
}

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at,
	previous_secret_hash, previous_secret_expires_at, registration_token_hash`

func scanClient(r row) (store.Client, error) {
	var c store.Client
	if err := r.Scan(&c.ID, &c.SecretHash, &c.Name, listCol{&c.RedirectURIs}, listCol{&c.PostLogoutRedirectURIs}, listCol{&c.GrantTypes},
		&c.AuthMethod, &c.AccessTokenFormat, &c.JWKS, &c.FirstParty, listCol{&c.Scopes}, timeCol{&c.CreatedAt},
		&c.PreviousSecretHash, timeCol{&c.PreviousSecretExpiresAt}, &c.RegistrationTokenHash); err != nil {
		return store.Client{}, err
	}
	return c, nil
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes), ts(c.CreatedAt),
			c.PreviousSecretHash, ts(c.PreviousSecretExpiresAt), c.RegistrationTokenHash)
		return wrap("create client", err)
	})
}

// UpdateClient replaces every column of client c.ID but created_at
// (ClientFoundRows: an update that writes identical values still counts).
func (s *Store) UpdateClient(ctx context.Context, c store.Client) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("update client", mustAffect(tx.ExecContext(ctx, `UPDATE clients SET secret_hash = ?, name = ?,
			redirect_uris = ?, post_logout_redirect_uris = ?, grant_types = ?, auth_method = ?, access_token_format = ?,
			jwks = ?, first_party = ?, scopes = ?, previous_secret_hash = ?, previous_secret_expires_at = ?,
			registration_token_hash = ? WHERE id = ?`,
			c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes),
			c.PreviousSecretHash, ts(c.PreviousSecretExpiresAt), c.RegistrationTokenHash, c.ID)))
	})
}

// GetClient returns the client with the given id.
func (s *Store) GetClient(ctx context.Context, id string) (store.Client, error) {
	c, err := scanClient(s.db.QueryRowContext(ctx, `SELECT `+clientCols+` FROM clients WHERE id = ?`, id))
	return c, wrap("get client", err)
}

// ListClients returns every client, ordered by id.
func (s *Store) ListClients(ctx context.Context) ([]store.Client, error) {
	out, err := collect(ctx, s.db, scanClient, `SELECT `+clientCols+` FROM clients ORDER BY id`)
	return out, wrap("list clients", err)
}

// DeleteClient deletes the client with the given id and, in the same
// transaction, revokes every access and refresh token issued to it.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := mustAffect(tx.ExecContext(ctx, `DELETE FROM clients WHERE id = ?`, id)); err != nil {
			return wrap("delete client", err)
		}
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = TRUE WHERE client_id = ? AND NOT revoked`,
			`UPDATE refresh_tokens SET revoked = TRUE WHERE client_id = ? AND NOT revoked`,
		} {
			if _, err := tx.ExecContext(ctx, q, id); err != nil {
				return wrap("delete client", err)
			}
		}
		return nil
	})
}
