package sqlite

import (
	"context"
	"database/sql"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// ListUserSessions returns userID's unexpired sessions, oldest first.
func (s *Store) ListUserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
		WHERE user_id = ? AND expires_at > ? ORDER BY created_at, hash`, userID, micros(s.now()))
	if err != nil {
		return nil, wrap("list user sessions", err)
	}
	defer rows.Close()
	var out []store.Session
	for rows.Next() {
		var sess store.Session
		var hash []byte
		var amr string
		var authTime, created, expires int64
		if err := rows.Scan(&hash, &sess.UserID, &authTime, &amr, &created, &expires); err != nil {
			return nil, wrap("list user sessions", err)
		}
		var d dec
		sess.Hash = d.hash(hash)
		sess.AMR = d.list(amr)
		sess.AuthTime, sess.CreatedAt, sess.ExpiresAt = fromMicros(authTime), fromMicros(created), fromMicros(expires)
		if d.err != nil {
			return nil, wrap("list user sessions", d.err)
		}
		out = append(out, sess)
	}
	return out, wrap("list user sessions", rows.Err())
}

// DeleteUserSessions ends every session of userID except keep.
func (s *Store) DeleteUserSessions(ctx context.Context, userID string, keep store.Hash) (int, error) {
	var n int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE user_id = ? AND hash <> ?`, userID, keep[:])
		if err == nil {
			n, err = res.RowsAffected()
		}
		return wrap("delete user sessions", err)
	})
	return int(n), err
}

// AddWebAuthnCredential inserts c; a zero CreatedAt is set to now.
func (s *Store) AddWebAuthnCredential(ctx context.Context, c store.WebAuthnCredential) error {
	c.CreatedAt = nowOr(c.CreatedAt, s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO webauthn_credentials (id, user_id, name, data, sign_count, clone_warning, created_at, last_used_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, c.ID, c.UserID, c.Name, c.Data, int64(c.SignCount), c.CloneWarning,
			micros(c.CreatedAt), micros(c.LastUsedAt))
		return wrap("add webauthn credential", err)
	})
}

const credentialCols = `id, user_id, name, data, sign_count, clone_warning, created_at, last_used_at`

func scanCredential(sc scanner) (store.WebAuthnCredential, error) {
	var c store.WebAuthnCredential
	var count, created, used int64
	if err := sc.Scan(&c.ID, &c.UserID, &c.Name, &c.Data, &count, &c.CloneWarning, &created, &used); err != nil {
		return store.WebAuthnCredential{}, err
	}
	c.SignCount = uint32(count)
	c.CreatedAt, c.LastUsedAt = fromMicros(created), fromMicros(used)
	return c, nil
}

// GetWebAuthnCredential returns the credential with id.
func (s *Store) GetWebAuthnCredential(ctx context.Context, id []byte) (store.WebAuthnCredential, error) {
	c, err := scanCredential(s.queryRow(ctx, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE id = ?`, id))
	return c, wrap("get webauthn credential", err)
}

// ListWebAuthnCredentials returns userID's credentials, oldest first.
func (s *Store) ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE user_id = ? ORDER BY created_at, id`, userID)
	if err != nil {
		return nil, wrap("list webauthn credentials", err)
	}
	defer rows.Close()
	var out []store.WebAuthnCredential
	for rows.Next() {
		c, err := scanCredential(rows)
		if err != nil {
			return nil, wrap("list webauthn credentials", err)
		}
		out = append(out, c)
	}
	return out, wrap("list webauthn credentials", rows.Err())
}

// UseWebAuthnCredential records a use with signCount (clone detection:
// see store.Store).
func (s *Store) UseWebAuthnCredential(ctx context.Context, id []byte, signCount uint32, at time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webauthn_credentials SET sign_count = ?, last_used_at = ?
			WHERE id = ? AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`, int64(signCount), micros(at), id, int64(signCount), int64(signCount))
		if err != nil {
			return wrap("use webauthn credential", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return wrap("use webauthn credential", err)
		}
		res, err = tx.ExecContext(ctx, `UPDATE webauthn_credentials SET clone_warning = 1 WHERE id = ?`, id)
		if err == nil {
			err = mustAffect(res)
		}
		if err != nil {
			return wrap("use webauthn credential", err)
		}
		return commitThen{wrap("use webauthn credential", store.ErrConflict)}
	})
}

// DeleteWebAuthnCredential removes userID's credential id.
func (s *Store) DeleteWebAuthnCredential(ctx context.Context, userID string, id []byte) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM webauthn_credentials WHERE id = ? AND user_id = ?`, id, userID)
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("delete webauthn credential", err)
	})
}

// ListUserClients returns the clients holding live tokens of userID.
func (s *Store) ListUserClients(ctx context.Context, userID string) ([]string, error) {
	now := micros(s.now())
	rows, err := s.r.QueryContext(ctx, `SELECT client_id FROM access_tokens WHERE subject = ? AND revoked = 0 AND expires_at > ?
		UNION SELECT client_id FROM refresh_tokens WHERE subject = ? AND revoked = 0 AND used = 0 AND expires_at > ? ORDER BY client_id`,
		userID, now, userID, now)
	if err != nil {
		return nil, wrap("list user clients", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, wrap("list user clients", err)
		}
		out = append(out, id)
	}
	return out, wrap("list user clients", rows.Err())
}
