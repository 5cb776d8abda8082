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

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at`

func scanUser(r row) (store.User, error) {
	var u store.User
	var cl []byte
	if err := r.Scan(&u.ID, &u.Username, &u.PasswordHash, &cl, &u.TOTPSecret, timeCol{&u.CreatedAt}, timeCol{&u.UpdatedAt}); err != nil {
		return store.User{}, err
	}
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
		if _, err := tx.ExecContext(ctx, `INSERT INTO users (`+userCols+`) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			u.ID, u.Username, u.PasswordHash, cl, u.TOTPSecret, ts(u.CreatedAt), ts(u.UpdatedAt)); err != nil {
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
	cl, err := claims(u.Claims)
	if err != nil {
		return wrap("update user", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		var old string
		if err := tx.QueryRowContext(ctx, `SELECT username FROM users WHERE id = ? FOR UPDATE`, u.ID).Scan(&old); err != nil {
			return wrap("update user", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE users SET username = ?, password_hash = ?, claims = ?, totp_secret = ?, updated_at = ?
			WHERE id = ?`, u.Username, u.PasswordHash, cl, u.TOTPSecret, ts(u.UpdatedAt), u.ID); err != nil {
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

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at`

func scanClient(r row) (store.Client, error) {
	var c store.Client
	if err := r.Scan(&c.ID, &c.SecretHash, &c.Name, listCol{&c.RedirectURIs}, listCol{&c.PostLogoutRedirectURIs}, listCol{&c.GrantTypes},
		&c.AuthMethod, &c.AccessTokenFormat, &c.JWKS, &c.FirstParty, listCol{&c.Scopes}, timeCol{&c.CreatedAt}); err != nil {
		return store.Client{}, err
	}
	return c, nil
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO clients (`+clientCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			c.ID, c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes), ts(c.CreatedAt))
		return wrap("create client", err)
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

// DeleteClient deletes the client with the given id.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("delete client", mustAffect(tx.ExecContext(ctx, `DELETE FROM clients WHERE id = ?`, id)))
	})
}
