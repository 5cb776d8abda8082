package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at, scim_id, scim, version`

func scanUser(sc scanner) (store.User, error) {
	var u store.User
	var claims string
	var created, updated int64
	var scimID sql.NullString
	if err := sc.Scan(&u.ID, &u.Username, &u.PasswordHash, &claims, &u.TOTPSecret, &created, &updated,
		&scimID, &u.SCIM, &u.Version); err != nil {
		return store.User{}, err
	}
	u.SCIMID = scimID.String
	var d dec
	u.Claims = d.claims(claims)
	u.CreatedAt = fromMicros(created)
	u.UpdatedAt = fromMicros(updated)
	return u, d.err
}

// CreateUser inserts u and appends a "put" outbox entry. A zero CreatedAt
// is set to now and a zero UpdatedAt to CreatedAt. A taken ID or username
// gives store.ErrConflict.
func (s *Store) CreateUser(ctx context.Context, u store.User) error {
	now := s.now()
	u.CreatedAt = nowOr(u.CreatedAt, now)
	u.UpdatedAt = nowOr(u.UpdatedAt, u.CreatedAt)
	var e enc
	claims := e.claims(u.Claims)
	if e.err != nil {
		return wrap("create user", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1)`,
			u.ID, u.Username, u.PasswordHash, claims, u.TOTPSecret, micros(u.CreatedAt), micros(u.UpdatedAt),
			nullable(u.SCIMID), u.SCIM); err != nil {
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
	var e enc
	claims := e.claims(u.Claims)
	if e.err != nil {
		return wrap("update user", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var old string
		var version int64
		if err := tx.QueryRowContext(ctx, `SELECT username, version FROM users WHERE id = ?`, u.ID).Scan(&old, &version); err != nil {
			return wrap("update user", err)
		}
		if u.Version != 0 && u.Version != version {
			return wrap("update user", store.ErrStale)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET username = ?, password_hash = ?, claims = ?, totp_secret = ?, updated_at = ?,
			scim_id = COALESCE(scim_id, ?), scim = ?, version = version + 1 WHERE id = ?`,
			u.Username, u.PasswordHash, claims, u.TOTPSecret, micros(u.UpdatedAt), nullable(u.SCIMID), u.SCIM, u.ID); err != nil {
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
	u, err := scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
	return u, wrap("get user", err)
}

// GetUserBySCIMID returns the user with the given SCIM resource id.
func (s *Store) GetUserBySCIMID(ctx context.Context, scimID string) (store.User, error) {
	u, err := scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE scim_id = ?`, scimID))
	return u, wrap("get user", err)
}

// GetUserByUsername returns the user with the given (normalized) username.
func (s *Store) GetUserByUsername(ctx context.Context, username string) (store.User, error) {
	u, err := scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE username = ?`, username))
	return u, wrap("get user", err)
}

// ListUsers returns up to limit users with a username after the given one,
// in byte order of username. A limit below 1 gives no users.
func (s *Store) ListUsers(ctx context.Context, after string, limit int) ([]store.User, error) {
	if limit < 1 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT `+userCols+` FROM users WHERE username > ? ORDER BY username LIMIT ?`, after, limit)
	if err != nil {
		return nil, wrap("list users", err)
	}
	defer rows.Close()
	var users []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, wrap("list users", err)
		}
		users = append(users, u)
	}
	return users, wrap("list users", rows.Err())
}

// DeleteUser deletes the user with the given username and appends a
// "delete" outbox entry.
func (s *Store) DeleteUser(ctx context.Context, username string) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var id string
		if err := tx.QueryRowContext(ctx, `SELECT id FROM users WHERE username = ?`, username).Scan(&id); err != nil {
			return wrap("delete user", err)
		}
		// A deleted user's tokens and sessions die with the account.
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = 1 WHERE subject = ?`,
			`UPDATE refresh_tokens SET revoked = 1 WHERE subject = ?`,
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
	_, err := tx.ExecContext(ctx, `INSERT INTO outbox (op, username, created_at) VALUES (?, ?, ?)`, op, username, micros(now))
	return err
}

// PendingOutbox returns up to limit outbox entries in Seq order. A limit
// below 1 gives no entries.
func (s *Store) PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEntry, error) {
	if limit < 1 {
		return nil, nil
	}
	rows, err := s.r.QueryContext(ctx, `SELECT seq, op, username, created_at, attempts FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, wrap("pending outbox", err)
	}
	defer rows.Close()
	var out []store.OutboxEntry
	for rows.Next() {
		var e store.OutboxEntry
		var created int64
		if err := rows.Scan(&e.Seq, &e.Op, &e.Username, &created, &e.Attempts); err != nil {
			return nil, wrap("pending outbox", err)
		}
		e.CreatedAt = fromMicros(created)
		out = append(out, e)
	}
	return out, wrap("pending outbox", rows.Err())
}

// AckOutbox deletes the outbox entry seq; an unknown seq gives
// store.ErrNotFound.
func (s *Store) AckOutbox(ctx context.Context, seq int64) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, seq)
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("ack outbox", err)
	})
}

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at,
	previous_secret_hash, previous_secret_expires_at, registration_token_hash`

func scanClient(sc scanner) (store.Client, error) {
	var c store.Client
	var redirects, postLogout, grants, scopes string
	var created, prevExpires int64
	if err := sc.Scan(&c.ID, &c.SecretHash, &c.Name, &redirects, &postLogout, &grants, &c.AuthMethod,
		&c.AccessTokenFormat, &c.JWKS, &c.FirstParty, &scopes, &created,
		&c.PreviousSecretHash, &prevExpires, &c.RegistrationTokenHash); err != nil {
		return store.Client{}, err
	}
	var d dec
	c.RedirectURIs = d.list(redirects)
	c.PostLogoutRedirectURIs = d.list(postLogout)
	c.GrantTypes = d.list(grants)
	c.Scopes = d.list(scopes)
	c.CreatedAt = fromMicros(created)
	c.PreviousSecretExpiresAt = fromMicros(prevExpires)
	return c, d.err
}

// clientArgs are c's column values in clientCols order.
func clientArgs(c store.Client) ([]any, error) {
	var e enc
	args := []any{c.ID, c.SecretHash, c.Name, e.list(c.RedirectURIs), e.list(c.PostLogoutRedirectURIs),
		e.list(c.GrantTypes), c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, e.list(c.Scopes), micros(c.CreatedAt),
		c.PreviousSecretHash, micros(c.PreviousSecretExpiresAt), c.RegistrationTokenHash}
	return args, e.err
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	args, err := clientArgs(c)
	if err != nil {
		return wrap("create client", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return wrap("create client", err)
	})
}

// UpdateClient replaces every column of client c.ID but created_at.
func (s *Store) UpdateClient(ctx context.Context, c store.Client) error {
	args, err := clientArgs(c)
	if err != nil {
		return wrap("update client", err)
	}
	// Drop created_at (index 11), move the id to the end for the WHERE.
	args = append(append(args[1:11:11], args[12:]...), c.ID)
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE clients SET secret_hash = ?, name = ?, redirect_uris = ?,
			post_logout_redirect_uris = ?, grant_types = ?, auth_method = ?, access_token_format = ?, jwks = ?,
			first_party = ?, scopes = ?, previous_secret_hash = ?, previous_secret_expires_at = ?,
			registration_token_hash = ? WHERE id = ?`, args...)
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("update client", err)
	})
}

// GetClient returns the client with the given id.
func (s *Store) GetClient(ctx context.Context, id string) (store.Client, error) {
	c, err := scanClient(s.queryRow(ctx, `SELECT `+clientCols+` FROM clients WHERE id = ?`, id))
	return c, wrap("get client", err)
}

// ListClients returns every client, ordered by id.
func (s *Store) ListClients(ctx context.Context) ([]store.Client, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+clientCols+` FROM clients ORDER BY id`)
	if err != nil {
		return nil, wrap("list clients", err)
	}
	defer rows.Close()
	var out []store.Client
	for rows.Next() {
		c, err := scanClient(rows)
		if err != nil {
			return nil, wrap("list clients", err)
		}
		out = append(out, c)
	}
	return out, wrap("list clients", rows.Err())
}

// DeleteClient deletes the client with the given id and, in the same
// transaction, revokes every access and refresh token issued to it.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM clients WHERE id = ?`, id)
		if err == nil {
			err = mustAffect(res)
		}
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = 1 WHERE client_id = ? AND revoked = 0`,
			`UPDATE refresh_tokens SET revoked = 1 WHERE client_id = ? AND revoked = 0`,
		} {
			if err == nil {
				_, err = tx.ExecContext(ctx, q, id)
			}
		}
		return wrap("delete client", err)
	})
}
