package postgres

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

// ListUserSessions returns userID's unexpired sessions, oldest first.
func (s *Store) ListUserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	var out []store.Session
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
			WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at, hash`, userID, s.now())
		if err != nil {
			return wrap("list user sessions", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Session, error) {
			var sess store.Session
			var hb []byte
			if err := r.Scan(&hb, &sess.UserID, &sess.AuthTime, &sess.AMR, &sess.CreatedAt, &sess.ExpiresAt); err != nil {
				return sess, err
			}
			sess.AMR = unlist(sess.AMR)
			sess.AuthTime, sess.CreatedAt, sess.ExpiresAt = utc(sess.AuthTime), utc(sess.CreatedAt), utc(sess.ExpiresAt)
			var err error
			sess.Hash, err = hash(hb)
			return sess, err
		})
		return wrap("list user sessions", err)
	})
	return out, err
}

// DeleteUserSessions ends every session of userID except keep.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string, keep store.Hash) (int, error) {
	var n int64
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM sessions WHERE user_id = $1 AND hash <> $2`, userID, keep[:])
		n = tag.RowsAffected()
		return wrap("delete user sessions", err)
	})
	return int(n), err
}

// AddWebAuthnCredential inserts c; a zero CreatedAt is set to now.
func (s *Store) AddWebAuthnCredential(ctx context.Context, c store.WebAuthnCredential) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO webauthn_credentials (id, user_id, name, data, sign_count, clone_warning, created_at, last_used_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, c.ID, c.UserID, c.Name, c.Data, int64(c.SignCount), c.CloneWarning,
			c.CreatedAt, c.LastUsedAt)
		return wrap("add webauthn credential", err)
	})
}

const credentialCols = `id, user_id, name, data, sign_count, clone_warning, created_at, last_used_at`

func scanCredential(r pgx.Row) (store.WebAuthnCredential, error) {
	var c store.WebAuthnCredential
	var count int64
	if err := r.Scan(&c.ID, &c.UserID, &c.Name, &c.Data, &count, &c.CloneWarning, &c.CreatedAt, &c.LastUsedAt); err != nil {
		return store.WebAuthnCredential{}, err
	}
	c.SignCount = uint32(count)
	c.CreatedAt, c.LastUsedAt = utc(c.CreatedAt), utc(c.LastUsedAt)
	return c, nil
}

// GetWebAuthnCredential returns the credential with id.
func (s *Store) GetWebAuthnCredential(ctx context.Context, id []byte) (store.WebAuthnCredential, error) {
	var c store.WebAuthnCredential
	err := s.read(ctx, func(conn *pgx.Conn) error {
		var err error
		c, err = scanCredential(conn.QueryRow(ctx, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE id = $1`, id))
		return wrap("get webauthn credential", err)
	})
	return c, err
}

// ListWebAuthnCredentials returns userID's credentials, oldest first.
func (s *Store) ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error) {
	var out []store.WebAuthnCredential
	err := s.read(ctx, func(conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE user_id = $1 ORDER BY created_at, id`, userID)
		if err != nil {
			return wrap("list webauthn credentials", err)
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.WebAuthnCredential, error) { return scanCredential(r) })
		return wrap("list webauthn credentials", err)
	})
	return out, err
}

// UseWebAuthnCredential records a use with signCount (clone detection:
// see store.Store).
func (s *Store) UseWebAuthnCredential(ctx context.Context, id []byte, signCount uint32, at time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE webauthn_credentials SET sign_count = $1, last_used_at = $2
			WHERE id = $3 AND (sign_count < $1 OR (sign_count = 0 AND $1 = 0))`, int64(signCount), at, id)
		if err != nil {
			return wrap("use webauthn credential", err)
		}
		if tag.RowsAffected() == 1 {
			return nil
		}
		if err := mustAffect(tx.Exec(ctx, `UPDATE webauthn_credentials SET clone_warning = true WHERE id = $1`, id)); err != nil {
			return wrap("use webauthn credential", err)
		}
		return commitThen{wrap("use webauthn credential", store.ErrConflict)}
	})
}

// DeleteWebAuthnCredential removes userID's credential id.
func (s *Store) DeleteWebAuthnCredential(ctx context.Context, userID string, id []byte) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("delete webauthn credential", mustAffect(tx.Exec(ctx, `DELETE FROM webauthn_credentials WHERE id = $1 AND user_id = $2`, id, userID)))
	})
}

// ListUserClients returns the clients holding live tokens of userID.
func (s *Store) ListUserClients(ctx context.Context, userID string) ([]string, error) {
	var out []string
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT client_id FROM access_tokens WHERE subject = $1 AND NOT revoked AND expires_at > $2
			UNION SELECT client_id FROM refresh_tokens WHERE subject = $1 AND NOT revoked AND NOT used AND expires_at > $2 ORDER BY client_id`,
			userID, s.now())
		if err != nil {
			return wrap("list user clients", err)
		}
		out, err = pgx.CollectRows(rows, pgx.RowTo[string])
		return wrap("list user clients", err)
	})
	return out, err
}
