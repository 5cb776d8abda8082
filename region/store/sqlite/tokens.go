package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

const accessCols = `hash, client_id, subject, audience, scopes, grant_id, format, auth_time, amr, created_at, expires_at, revoked`

func scanAccess(sc scanner) (store.AccessToken, error) {
	var t store.AccessToken
	var hash []byte
	var aud, scopes, amr string
	var authTime, created, expires int64
	if err := sc.Scan(&hash, &t.ClientID, &t.Subject, &aud, &scopes, &t.GrantID, &t.Format,
		&authTime, &amr, &created, &expires, &t.Revoked); err != nil {
		return store.AccessToken{}, err
	}
	var d dec
	t.Hash = d.hash(hash)
	t.Audience = d.list(aud)
	t.Scopes = d.list(scopes)
	t.AMR = d.list(amr)
	t.AuthTime = fromMicros(authTime)
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt = fromMicros(expires)
	return t, d.err
}

const refreshCols = `hash, grant_id, client_id, subject, audience, scopes, auth_time, amr, created_at, expires_at, used, revoked`

func scanRefresh(sc scanner) (store.RefreshToken, error) {
	var t store.RefreshToken
	var hash []byte
	var aud, scopes, amr string
	var authTime, created, expires int64
	if err := sc.Scan(&hash, &t.GrantID, &t.ClientID, &t.Subject, &aud, &scopes,
		&authTime, &amr, &created, &expires, &t.Used, &t.Revoked); err != nil {
		return store.RefreshToken{}, err
	}
	var d dec
	t.Hash = d.hash(hash)
	t.Audience = d.list(aud)
	t.Scopes = d.list(scopes)
	t.AMR = d.list(amr)
	t.AuthTime = fromMicros(authTime)
	t.CreatedAt = fromMicros(created)
	t.ExpiresAt = fromMicros(expires)
	return t, d.err
}

// insertAccess inserts t after checking that its grant was not revoked.
func (s *Store) insertAccess(ctx context.Context, tx *sql.Tx, t store.AccessToken, now time.Time) error {
	revoked, err := ensureGrant(ctx, tx, t.GrantID, now)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("grant %q: %w", t.GrantID, store.ErrRevoked)
	}
	t.CreatedAt = nowOr(t.CreatedAt, now)
	var e enc
	args := []any{t.Hash[:], t.ClientID, t.Subject, e.list(t.Audience), e.list(t.Scopes), t.GrantID, t.Format,
		micros(t.AuthTime), e.list(t.AMR), micros(t.CreatedAt), micros(t.ExpiresAt), t.Revoked}
	if e.err != nil {
		return e.err
	}
	_, err = s.exec(ctx, tx, insertAccessSQL, args...)
	return mapErr(err)
}

// insertRefresh inserts t after checking that its grant was not revoked.
func (s *Store) insertRefresh(ctx context.Context, tx *sql.Tx, t store.RefreshToken, now time.Time) error {
	if t.GrantID == "" {
		return errors.New("refresh token without grant id")
	}
	revoked, err := ensureGrant(ctx, tx, t.GrantID, now)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("grant %q: %w", t.GrantID, store.ErrRevoked)
	}
	t.CreatedAt = nowOr(t.CreatedAt, now)
	var e enc
	args := []any{t.Hash[:], t.GrantID, t.ClientID, t.Subject, e.list(t.Audience), e.list(t.Scopes),
		micros(t.AuthTime), e.list(t.AMR), micros(t.CreatedAt), micros(t.ExpiresAt), t.Used, t.Revoked}
	if e.err != nil {
		return e.err
	}
	_, err = s.exec(ctx, tx, insertRefreshSQL, args...)
	return mapErr(err)
}

// CreateAccessToken inserts t; a zero CreatedAt is set to now. A token of a
// revoked grant gives store.ErrRevoked.
func (s *Store) CreateAccessToken(ctx context.Context, t store.AccessToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx *sql.Tx) error {
		return wrap("create access token", s.insertAccess(ctx, tx, t, now))
	})
}

// GetAccessToken returns the access token with digest h, revoked or expired
// as it is.
func (s *Store) GetAccessToken(ctx context.Context, h store.Hash) (store.AccessToken, error) {
	t, err := scanAccess(s.queryRow(ctx, `SELECT `+accessCols+` FROM access_tokens WHERE hash = ?`, h[:]))
	return t, wrap("get access token", err)
}

// RevokeAccessToken revokes the access token with digest h.
func (s *Store) RevokeAccessToken(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = 1 WHERE hash = ?`, h[:])
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("revoke access token", err)
	})
}

// CreateTokens inserts at and, when rt is non-nil, rt in one transaction.
// Tokens of a revoked grant give store.ErrRevoked and nothing is written.
func (s *Store) CreateTokens(ctx context.Context, at store.AccessToken, rt *store.RefreshToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx *sql.Tx) error {
		if err := s.insertAccess(ctx, tx, at, now); err != nil {
			return wrap("create tokens", err)
		}
		if rt == nil {
			return nil
		}
		return wrap("create tokens", s.insertRefresh(ctx, tx, *rt, now))
	})
}

// GetRefreshToken returns the refresh token with digest h, used, revoked
// or expired as it is.
func (s *Store) GetRefreshToken(ctx context.Context, h store.Hash) (store.RefreshToken, error) {
	t, err := scanRefresh(s.queryRow(ctx, `SELECT `+refreshCols+` FROM refresh_tokens WHERE hash = ?`, h[:]))
	return t, wrap("get refresh token", err)
}

// RotateRefreshToken marks old used and inserts at and next, which belong
// to old's grant (an empty GrantID is filled in; another one is an error).
// A used old token is reuse: the family is revoked, the revocation
// committed, and store.ErrAlreadyUsed returned. A revoked (and unused) old
// token gives store.ErrRevoked, an unknown one store.ErrNotFound.
func (s *Store) RotateRefreshToken(ctx context.Context, old store.Hash, at store.AccessToken, next store.RefreshToken) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var grant string
		var used, revoked bool
		if err := tx.QueryRowContext(ctx, `SELECT grant_id, used, revoked FROM refresh_tokens WHERE hash = ?`, old[:]).
			Scan(&grant, &used, &revoked); err != nil {
			return wrap("rotate refresh token", err)
		}
		if used {
			if err := revokeGrant(ctx, tx, grant, now); err != nil {
				return wrap("rotate refresh token", err)
			}
			return commitThen{fmt.Errorf("sqlite: rotate refresh token: %w", store.ErrAlreadyUsed)}
		}
		if revoked {
			return fmt.Errorf("sqlite: rotate refresh token: %w", store.ErrRevoked)
		}
		if err := sameGrant(grant, &at.GrantID, &next.GrantID); err != nil {
			return wrap("rotate refresh token", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET used = 1 WHERE hash = ?`, old[:]); err != nil {
			return wrap("rotate refresh token", err)
		}
		if err := s.insertAccess(ctx, tx, at, now); err != nil {
			return wrap("rotate refresh token", err)
		}
		return wrap("rotate refresh token", s.insertRefresh(ctx, tx, next, now))
	})
}

// sameGrant fills empty grant ids with grant and rejects other ones.
func sameGrant(grant string, ids ...*string) error {
	for _, id := range ids {
		switch *id {
		case "":
			*id = grant
		case grant:
		default:
			return fmt.Errorf("token of grant %q cannot succeed a token of grant %q", *id, grant)
		}
	}
	return nil
}

// RevokeRefreshToken revokes the refresh token with digest h and its whole
// family (every access and refresh token of its grant).
func (s *Store) RevokeRefreshToken(ctx context.Context, h store.Hash) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var grant string
		if err := tx.QueryRowContext(ctx, `SELECT grant_id FROM refresh_tokens WHERE hash = ?`, h[:]).Scan(&grant); err != nil {
			return wrap("revoke refresh token", err)
		}
		return wrap("revoke refresh token", revokeGrant(ctx, tx, grant, now))
	})
}

// RevokeGrant revokes every access and refresh token of the grant, and
// every token issued for it later. An empty grant id gives
// store.ErrNotFound.
func (s *Store) RevokeGrant(ctx context.Context, grantID string) error {
	if grantID == "" {
		return fmt.Errorf("sqlite: revoke grant: empty grant id: %w", store.ErrNotFound)
	}
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("revoke grant", revokeGrant(ctx, tx, grantID, now))
	})
}

// RevokeUserClientTokens revokes every token whose subject is userID at
// clientID, together with the grants they belong to.
func (s *Store) RevokeUserClientTokens(ctx context.Context, userID, clientID string) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, revoked, created_at)
			SELECT id, 1, ? FROM (
				SELECT grant_id AS id FROM access_tokens WHERE subject = ? AND client_id = ? AND grant_id <> ''
				UNION
				SELECT grant_id AS id FROM refresh_tokens WHERE subject = ? AND client_id = ?
			) WHERE true
			ON CONFLICT (id) DO UPDATE SET revoked = 1`,
			micros(now), userID, clientID, userID, clientID); err != nil {
			return wrap("revoke user client tokens", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = 1 WHERE revoked = 0 AND subject = ? AND client_id = ?`,
			userID, clientID); err != nil {
			return wrap("revoke user client tokens", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET revoked = 1 WHERE revoked = 0 AND subject = ? AND client_id = ?`,
			userID, clientID)
		return wrap("revoke user client tokens", err)
	})
}

// CreateSession inserts sess; a zero CreatedAt is set to now.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	sess.CreatedAt = nowOr(sess.CreatedAt, s.now())
	var e enc
	amr := e.list(sess.AMR)
	if e.err != nil {
		return wrap("create session", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (hash, user_id, auth_time, amr, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`,
			sess.Hash[:], sess.UserID, micros(sess.AuthTime), amr, micros(sess.CreatedAt), micros(sess.ExpiresAt))
		return wrap("create session", err)
	})
}

// GetSession returns the session with digest h. An expired session is
// reported as store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, h store.Hash) (store.Session, error) {
	var sess store.Session
	var hash []byte
	var amr string
	var authTime, created, expires int64
	err := s.queryRow(ctx, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
		WHERE hash = ? AND expires_at > ?`, h[:], micros(s.now())).
		Scan(&hash, &sess.UserID, &authTime, &amr, &created, &expires)
	if err != nil {
		return store.Session{}, wrap("get session", err)
	}
	var d dec
	sess.Hash = d.hash(hash)
	sess.AMR = d.list(amr)
	sess.AuthTime = fromMicros(authTime)
	sess.CreatedAt = fromMicros(created)
	sess.ExpiresAt = fromMicros(expires)
	return sess, wrap("get session", d.err)
}

// DeleteSession deletes the session with digest h.
func (s *Store) DeleteSession(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, h[:])
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("delete session", err)
	})
}

// AddSigningKey inserts k; a zero CreatedAt is set to now. A second active
// key, like a taken id, gives store.ErrConflict.
func (s *Store) AddSigningKey(ctx context.Context, k store.SigningKey) error {
	k.CreatedAt = nowOr(k.CreatedAt, s.now())
	k.NotBefore = nowOr(k.NotBefore, k.CreatedAt)
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (id, algorithm, private_der, kek_id, created_at, not_before, active, not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.Algorithm, k.PrivateDER, k.KEKID, micros(k.CreatedAt), micros(k.NotBefore), k.Active, micros(k.NotAfter))
		return wrap("add signing key", err)
	})
}

// ActivateSigningKey makes id the active key (its NotAfter becomes zero)
// and retires the previously active key, publishing it until notAfter.
// Activating the active key changes nothing.
func (s *Store) ActivateSigningKey(ctx context.Context, id string, notAfter time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var active bool
		if err := tx.QueryRowContext(ctx, `SELECT active FROM signing_keys WHERE id = ?`, id).Scan(&active); err != nil {
			return wrap("activate signing key", err)
		}
		if active {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE signing_keys SET active = 0, not_after = ? WHERE active = 1`, micros(notAfter)); err != nil {
			return wrap("activate signing key", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE signing_keys SET active = 1, not_after = ? WHERE id = ?`, micros(time.Time{}), id)
		return wrap("activate signing key", err)
	})
}

// ListSigningKeys returns the active key and the retired keys published
// after now, newest (by CreatedAt) first.
func (s *Store) ListSigningKeys(ctx context.Context, now time.Time) ([]store.SigningKey, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT id, algorithm, private_der, kek_id, created_at, not_before, active, not_after FROM signing_keys
		WHERE active = 1 OR not_after > ? ORDER BY created_at DESC, id DESC`, micros(now))
	if err != nil {
		return nil, wrap("list signing keys", err)
	}
	defer rows.Close()
	var keys []store.SigningKey
	for rows.Next() {
		var k store.SigningKey
		var created, notBefore, notAfter int64
		if err := rows.Scan(&k.ID, &k.Algorithm, &k.PrivateDER, &k.KEKID, &created, &notBefore, &k.Active, &notAfter); err != nil {
			return nil, wrap("list signing keys", err)
		}
		k.CreatedAt = fromMicros(created)
		k.NotBefore = fromMicros(notBefore)
		k.NotAfter = fromMicros(notAfter)
		keys = append(keys, k)
	}
	return keys, wrap("list signing keys", rows.Err())
}

// ResealSigningKey replaces id's key material and KEK id while the row is
// still sealed by fromKEK.
func (s *Store) ResealSigningKey(ctx context.Context, id, fromKEK string, material []byte, toKEK string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		var cur string
		if err := tx.QueryRowContext(ctx, `SELECT kek_id FROM signing_keys WHERE id = ?`, id).Scan(&cur); err != nil {
			return wrap("reseal signing key", err)
		}
		if cur != fromKEK {
			return wrap("reseal signing key", store.ErrConflict)
		}
		_, err := tx.ExecContext(ctx, `UPDATE signing_keys SET private_der = ?, kek_id = ? WHERE id = ?`, material, toKEK, id)
		return wrap("reseal signing key", err)
	})
}

// DeleteExpired removes auth requests, access tokens, refresh tokens,
// sessions and federated claims that expired at or before now (refresh
// tokens stay until then even when used or revoked, for reuse detection),
// and grant rows nothing refers to any more.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) error {
	n := micros(now)
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM auth_requests WHERE expires_at <= ?`,
			`DELETE FROM access_tokens WHERE expires_at <= ?`,
			`DELETE FROM refresh_tokens WHERE expires_at <= ?`,
			`DELETE FROM sessions WHERE expires_at <= ?`,
			`DELETE FROM login_attempts WHERE expires_at <= ?`,
			`DELETE FROM grants WHERE created_at <= ?
				AND NOT EXISTS (SELECT 1 FROM auth_requests a WHERE a.id = grants.id)
				AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = grants.id)
				AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = grants.id)`,
		} {
			if _, err := tx.ExecContext(ctx, q, n); err != nil {
				return wrap("delete expired", err)
			}
		}
		return nil
	})
}
