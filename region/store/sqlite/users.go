package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at`

func scanUser(sc scanner) (store.User, error) {
	var u store.User
	var claims string
	var created, updated int64
	if err := sc.Scan(&u.ID, &u.Username, &u.PasswordHash, &claims, &u.TOTPSecret, &created, &updated); err != nil {
		return store.User{}, err
	}
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.Username, u.PasswordHash, claims, u.TOTPSecret, micros(u.CreatedAt), micros(u.UpdatedAt)); err != nil {
			return wrap("create user", err)
		}
		return wrap("create user", appendOutbox(ctx, tx, "put", u.Username, now))
	})
}

// UpdateUser replaces the user with u.ID (CreatedAt is kept) and appends a
// "put" outbox entry; a renamed user also gets a "delete" of the old
// username first. A zero UpdatedAt is set to now.
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
		if err := tx.QueryRowContext(ctx, `SELECT username FROM users WHERE id = ?`, u.ID).Scan(&old); err != nil {
			return wrap("update user", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET username = ?, password_hash = ?, claims = ?, totp_secret = ?, updated_at = ? WHERE id = ?`,
			u.Username, u.PasswordHash, claims, u.TOTPSecret, micros(u.UpdatedAt), u.ID); err != nil {
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

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at`

func scanClient(sc scanner) (store.Client, error) {
	var c store.Client
	var redirects, postLogout, grants, scopes string
	var created int64
	if err := sc.Scan(&c.ID, &c.SecretHash, &c.Name, &redirects, &postLogout, &grants, &c.AuthMethod,
		&c.AccessTokenFormat, &c.JWKS, &c.FirstParty, &scopes, &created); err != nil {
		return store.Client{}, err
	}
	var d dec
	c.RedirectURIs = d.list(redirects)
	c.PostLogoutRedirectURIs = d.list(postLogout)
	c.GrantTypes = d.list(grants)
	c.Scopes = d.list(scopes)
	c.CreatedAt = fromMicros(created)
	return c, d.err
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	var e enc
	args := []any{c.ID, c.SecretHash, c.Name, e.list(c.RedirectURIs), e.list(c.PostLogoutRedirectURIs),
		e.list(c.GrantTypes), c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, e.list(c.Scopes), micros(c.CreatedAt)}
	if e.err != nil {
		return wrap("create client", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return wrap("create client", err)
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

// DeleteClient deletes the client with the given id.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM clients WHERE id = ?`, id)
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("delete client", err)
	})
}
