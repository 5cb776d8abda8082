package mysql

import (
	"context"
	"database/sql"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

func scanSession(r row) (store.Session, error) {
	var sess store.Session
	err := r.Scan(hashCol{&sess.Hash}, &sess.UserID, timeCol{&sess.AuthTime}, listCol{&sess.AMR}, timeCol{&sess.CreatedAt}, timeCol{&sess.ExpiresAt})
	return sess, err
}

// ListUserSessions returns userID's unexpired sessions, oldest first.
func (s *Store) ListUserSessions(ctx context.Context, userID string) ([]store.Session, error) {
	out, err := collect(ctx, s.db, scanSession, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
		WHERE user_id = ? AND expires_at > ? ORDER BY created_at, hash`, userID, ts(s.now()))
	return out, wrap("list user sessions", err)
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
			ts(c.CreatedAt), ts(c.LastUsedAt))
		return wrap("add webauthn credential", err)
	})
}

const credentialCols = `id, user_id, name, data, sign_count, clone_warning, created_at, last_used_at`

func scanCredential(r row) (store.WebAuthnCredential, error) {
	var c store.WebAuthnCredential
	var count int64
	if err := r.Scan(&c.ID, &c.UserID, &c.Name, &c.Data, &count, &c.CloneWarning, timeCol{&c.CreatedAt}, timeCol{&c.LastUsedAt}); err != nil {
		return store.WebAuthnCredential{}, err
	}
	c.SignCount = uint32(count)
	return c, nil
}

// GetWebAuthnCredential returns the credential with id.
func (s *Store) GetWebAuthnCredential(ctx context.Context, id []byte) (store.WebAuthnCredential, error) {
	c, err := scanCredential(s.db.QueryRowContext(ctx, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE id = ?`, id))
	return c, wrap("get webauthn credential", err)
}

// ListWebAuthnCredentials returns userID's credentials, oldest first.
func (s *Store) ListWebAuthnCredentials(ctx context.Context, userID string) ([]store.WebAuthnCredential, error) {
	out, err := collect(ctx, s.db, scanCredential, `SELECT `+credentialCols+` FROM webauthn_credentials WHERE user_id = ? ORDER BY created_at, id`, userID)
	return out, wrap("list webauthn credentials", err)
}

// UseWebAuthnCredential records a use with signCount (clone detection:
// see store.Store).
func (s *Store) UseWebAuthnCredential(ctx context.Context, id []byte, signCount uint32, at time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE webauthn_credentials SET sign_count = ?, last_used_at = ?
			WHERE id = ? AND (sign_count < ? OR (sign_count = 0 AND ? = 0))`, int64(signCount), ts(at), id, int64(signCount), int64(signCount))
		if err != nil {
			return wrap("use webauthn credential", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			return wrap("use webauthn credential", err)
		}
		if err := mustAffect(tx.ExecContext(ctx, `UPDATE webauthn_credentials SET clone_warning = TRUE WHERE id = ?`, id)); err != nil {
			return wrap("use webauthn credential", err)
		}
		return commitThen{wrap("use webauthn credential", store.ErrConflict)}
	})
}

// DeleteWebAuthnCredential removes userID's credential id.
func (s *Store) DeleteWebAuthnCredential(ctx context.Context, userID string, id []byte) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("delete webauthn credential", mustAffect(tx.ExecContext(ctx, `DELETE FROM webauthn_credentials WHERE id = ? AND user_id = ?`, id, userID)))
	})
}

// ListUserClients returns the clients holding live tokens of userID.
func (s *Store) ListUserClients(ctx context.Context, userID string) ([]string, error) {
	now := ts(s.now())
	out, err := collect(ctx, s.db, func(r row) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, `SELECT client_id FROM access_tokens WHERE subject = ? AND NOT revoked AND expires_at > ?
		UNION SELECT client_id FROM refresh_tokens WHERE subject = ? AND NOT revoked AND NOT used AND expires_at > ? ORDER BY client_id`,
		userID, now, userID, now)
	return out, wrap("list user clients", err)
}
