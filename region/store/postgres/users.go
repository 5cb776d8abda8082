package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

const userCols = `id, username, password_hash, claims, totp_secret, created_at, updated_at`

func scanUser(row pgx.Row) (store.User, error) {
	var u store.User
	var cl []byte
	if err := row.Scan(&u.ID, &u.Username, &u.PasswordHash, &cl, &u.TOTPSecret, &u.CreatedAt, &u.UpdatedAt); err != nil {
		return store.User{}, err
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
		if _, err := tx.Exec(ctx, `INSERT INTO users (`+userCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			u.ID, u.Username, u.PasswordHash, cl, u.TOTPSecret, u.CreatedAt, u.UpdatedAt); err != nil {
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
	return s.write(ctx, func(tx pgx.Tx) error {
		var old string
		if err := tx.QueryRow(ctx, `SELECT username FROM users WHERE id = $1 FOR UPDATE`, u.ID).Scan(&old); err != nil {
			return wrap("update user", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE users SET username = $1, password_hash = $2, claims = $3, totp_secret = $4, updated_at = $5
			WHERE id = $6`, u.Username, u.PasswordHash, cl, u.TOTPSecret, u.UpdatedAt, u.ID); err != nil {
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

const clientCols = `id, secret_hash, name, redirect_uris, post_logout_redirect_uris, grant_types, auth_method, access_token_format, jwks, first_party, scopes, created_at`

func scanClient(row pgx.Row) (store.Client, error) {
	var c store.Client
	if err := row.Scan(&c.ID, &c.SecretHash, &c.Name, &c.RedirectURIs, &c.PostLogoutRedirectURIs, &c.GrantTypes, &c.AuthMethod,
		&c.AccessTokenFormat, &c.JWKS, &c.FirstParty, &c.Scopes, &c.CreatedAt); err != nil {
		return store.Client{}, err
	}
	c.RedirectURIs = unlist(c.RedirectURIs)
	c.PostLogoutRedirectURIs = unlist(c.PostLogoutRedirectURIs)
	c.GrantTypes = unlist(c.GrantTypes)
	c.Scopes = unlist(c.Scopes)
	c.CreatedAt = utc(c.CreatedAt)
	return c, nil
}

// CreateClient inserts c; a zero CreatedAt is set to now.
func (s *Store) CreateClient(ctx context.Context, c store.Client) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO clients (`+clientCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
			c.ID, c.SecretHash, c.Name, list(c.RedirectURIs), list(c.PostLogoutRedirectURIs), list(c.GrantTypes),
			c.AuthMethod, c.AccessTokenFormat, c.JWKS, c.FirstParty, list(c.Scopes), c.CreatedAt)
		return wrap("create client", err)
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

// DeleteClient deletes the client with the given id.
func (s *Store) DeleteClient(ctx context.Context, id string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("delete client", mustAffect(tx.Exec(ctx, `DELETE FROM clients WHERE id = $1`, id)))
	})
}
