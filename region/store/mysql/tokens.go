package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

const accessCols = `hash, client_id, subject, audience, scopes, grant_id, format, auth_time, amr, created_at, expires_at, revoked`

func scanAccess(r row) (store.AccessToken, error) {
	var t store.AccessToken
	if err := r.Scan(hashCol{&t.Hash}, &t.ClientID, &t.Subject, listCol{&t.Audience}, listCol{&t.Scopes}, &t.GrantID, &t.Format,
		timeCol{&t.AuthTime}, listCol{&t.AMR}, timeCol{&t.CreatedAt}, timeCol{&t.ExpiresAt}, &t.Revoked); err != nil {
		return store.AccessToken{}, err
	}
	return t, nil
}

const refreshCols = `hash, grant_id, client_id, subject, audience, scopes, auth_time, amr, created_at, expires_at, used, revoked`

func scanRefresh(r row) (store.RefreshToken, error) {
	var t store.RefreshToken
	if err := r.Scan(hashCol{&t.Hash}, &t.GrantID, &t.ClientID, &t.Subject, listCol{&t.Audience}, listCol{&t.Scopes},
		timeCol{&t.AuthTime}, listCol{&t.AMR}, timeCol{&t.CreatedAt}, timeCol{&t.ExpiresAt}, &t.Used, &t.Revoked); err != nil {
		return store.RefreshToken{}, err
	}
	return t, nil
}

// insertAccess inserts t after locking its grant and checking that it was
// not revoked.
func insertAccess(ctx context.Context, tx *sql.Tx, t store.AccessToken, now time.Time) error {
	revoked, err := ensureGrant(ctx, tx, t.GrantID, now)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("grant %q: %w", t.GrantID, store.ErrRevoked)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO access_tokens (`+accessCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.Hash[:], t.ClientID, t.Subject, list(t.Audience), list(t.Scopes), t.GrantID, t.Format,
		ts(t.AuthTime), list(t.AMR), ts(nowOr(t.CreatedAt, now)), ts(t.ExpiresAt), t.Revoked)
	return err
}

// insertRefresh inserts t after locking its grant and checking that it was
// not revoked.
func insertRefresh(ctx context.Context, tx *sql.Tx, t store.RefreshToken, now time.Time) error {
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
	_, err = tx.ExecContext(ctx, `INSERT INTO refresh_tokens (`+refreshCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		t.Hash[:], t.GrantID, t.ClientID, t.Subject, list(t.Audience), list(t.Scopes),
		ts(t.AuthTime), list(t.AMR), ts(nowOr(t.CreatedAt, now)), ts(t.ExpiresAt), t.Used, t.Revoked)
	return err
}

// CreateAccessToken inserts t; a zero CreatedAt is set to now. A token of a
// revoked grant gives store.ErrRevoked. Concurrent calls share one
// transaction and one commit (store.GroupCommit); each is atomic as if it
// ran alone.
func (s *Store) CreateAccessToken(ctx context.Context, t store.AccessToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx *sql.Tx) error {
		return wrap("create access token", insertAccess(ctx, tx, t, now))
	})
}

// GetAccessToken returns the access token with digest h, revoked or expired
// as it is.
func (s *Store) GetAccessToken(ctx context.Context, h store.Hash) (store.AccessToken, error) {
	t, err := scanAccess(s.db.QueryRowContext(ctx, `SELECT `+accessCols+` FROM access_tokens WHERE hash = ?`, h[:]))
	return t, wrap("get access token", err)
}

// RevokeAccessToken revokes the access token with digest h.
func (s *Store) RevokeAccessToken(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("revoke access token", mustAffect(tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = TRUE WHERE hash = ?`, h[:])))
	})
}

// CreateTokens inserts at and, when rt is non-nil, rt in one transaction
// (group-committed like CreateAccessToken). Tokens of a revoked grant give
// store.ErrRevoked and nothing is written.
func (s *Store) CreateTokens(ctx context.Context, at store.AccessToken, rt *store.RefreshToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx *sql.Tx) error {
		if err := insertAccess(ctx, tx, at, now); err != nil {
			return wrap("create tokens", err)
		}
		if rt == nil {
			return nil
		}
		return wrap("create tokens", insertRefresh(ctx, tx, *rt, now))
	})
}

// GetRefreshToken returns the refresh token with digest h, used, revoked
// or expired as it is.
func (s *Store) GetRefreshToken(ctx context.Context, h store.Hash) (store.RefreshToken, error) {
	t, err := scanRefresh(s.db.QueryRowContext(ctx, `SELECT `+refreshCols+` FROM refresh_tokens WHERE hash = ?`, h[:]))
	return t, wrap("get refresh token", err)
}

// RotateRefreshToken marks old used and inserts at and next, which belong
// to old's grant (an empty GrantID is filled in; another one is an error).
// A used old token is reuse: the family is revoked, the revocation
// committed, and store.ErrAlreadyUsed returned. A revoked (and unused) old
// token gives store.ErrRevoked, an unknown one store.ErrNotFound.
//
// Rotations of one family serialize on the grant's row lock, and the old
// token's used flag is read with a locking read after that lock is held, so
// of any number of concurrent rotations of one token exactly one finds it
// unused.
func (s *Store) RotateRefreshToken(ctx context.Context, old store.Hash, at store.AccessToken, next store.RefreshToken) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var grant string
		if err := tx.QueryRowContext(ctx, `SELECT grant_id FROM refresh_tokens WHERE hash = ?`, old[:]).Scan(&grant); err != nil {
			return wrap("rotate refresh token", err)
		}
		grantRevoked, err := ensureGrant(ctx, tx, grant, now)
		if err != nil {
			return wrap("rotate refresh token", err)
		}
		var used, revoked bool
		if err := tx.QueryRowContext(ctx, `SELECT used, revoked FROM refresh_tokens WHERE hash = ? FOR UPDATE`, old[:]).
			Scan(&used, &revoked); err != nil {
			return wrap("rotate refresh token", err)
		}
		if used {
			if err := revokeGrant(ctx, tx, grant, now); err != nil {
				return wrap("rotate refresh token", err)
			}
			return commitThen{fmt.Errorf("mysql: rotate refresh token: %w", store.ErrAlreadyUsed)}
		}
		if revoked || grantRevoked {
			return fmt.Errorf("mysql: rotate refresh token: %w", store.ErrRevoked)
		}
		if err := sameGrant(grant, &at.GrantID, &next.GrantID); err != nil {
			return wrap("rotate refresh token", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET used = TRUE WHERE hash = ?`, old[:]); err != nil {
			return wrap("rotate refresh token", err)
		}
		if err := insertAccess(ctx, tx, at, now); err != nil {
			return wrap("rotate refresh token", err)
		}
		return wrap("rotate refresh token", insertRefresh(ctx, tx, next, now))
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
		return fmt.Errorf("mysql: revoke grant: empty grant id: %w", store.ErrNotFound)
	}
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("revoke grant", revokeGrant(ctx, tx, grantID, now))
	})
}

// RevokeUserClientTokens revokes every token whose subject is userID at
// clientID, together with the grants they belong to. Grant rows are locked
// in id order, so concurrent calls cannot deadlock on them.
func (s *Store) RevokeUserClientTokens(ctx context.Context, userID, clientID string) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, revoked, created_at)
			SELECT id, TRUE, ? FROM (
				SELECT grant_id AS id FROM access_tokens WHERE subject = ? AND client_id = ? AND grant_id <> ''
				UNION
				SELECT grant_id AS id FROM refresh_tokens WHERE subject = ? AND client_id = ?
			) g ORDER BY id
			ON DUPLICATE KEY UPDATE revoked = TRUE`, ts(now), userID, clientID, userID, clientID); err != nil {
			return wrap("revoke user client tokens", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = TRUE WHERE NOT revoked AND subject = ? AND client_id = ?`,
			userID, clientID); err != nil {
			return wrap("revoke user client tokens", err)
		}
		_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET revoked = TRUE WHERE NOT revoked AND subject = ? AND client_id = ?`,
			userID, clientID)
		return wrap("revoke user client tokens", err)
	})
}

// CreateSession inserts sess; a zero CreatedAt is set to now.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	sess.CreatedAt = nowOr(sess.CreatedAt, s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO sessions (hash, user_id, auth_time, amr, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?)`,
			sess.Hash[:], sess.UserID, ts(sess.AuthTime), list(sess.AMR), ts(sess.CreatedAt), ts(sess.ExpiresAt))
		return wrap("create session", err)
	})
}

// GetSession returns the session with digest h. An expired session is
// reported as store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, h store.Hash) (store.Session, error) {
	var sess store.Session
	err := s.db.QueryRowContext(ctx, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
		WHERE hash = ? AND expires_at > ?`, h[:], ts(s.now())).
		Scan(hashCol{&sess.Hash}, &sess.UserID, timeCol{&sess.AuthTime}, listCol{&sess.AMR}, timeCol{&sess.CreatedAt}, timeCol{&sess.ExpiresAt})
	if err != nil {
		return store.Session{}, wrap("get session", err)
	}
	return sess, nil
}

// DeleteSession deletes the session with digest h.
func (s *Store) DeleteSession(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("delete session", mustAffect(tx.ExecContext(ctx, `DELETE FROM sessions WHERE hash = ?`, h[:])))
	})
}

// AddSigningKey inserts k; a zero CreatedAt is set to now and a zero
// NotBefore to CreatedAt. A second active key, like a taken id, gives
// store.ErrConflict.
func (s *Store) AddSigningKey(ctx context.Context, k store.SigningKey) error {
	k.CreatedAt = nowOr(k.CreatedAt, s.now())
	k.NotBefore = nowOr(k.NotBefore, k.CreatedAt)
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO signing_keys (id, algorithm, private_der, kek_id, created_at, not_before, active, not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, k.ID, k.Algorithm, k.PrivateDER, k.KEKID, ts(k.CreatedAt), ts(k.NotBefore), k.Active, ts(k.NotAfter))
		return wrap("add signing key", err)
	})
}

// ActivateSigningKey makes id the active key (its NotAfter becomes zero)
// and retires the previously active key, publishing it until notAfter.
// Activating the active key changes nothing. Concurrent activations
// serialize on the locks of every key row (readers pass: plain reads do not
// wait for row locks in InnoDB).
func (s *Store) ActivateSigningKey(ctx context.Context, id string, notAfter time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, active FROM signing_keys ORDER BY id FOR UPDATE`)
		if err != nil {
			return wrap("activate signing key", err)
		}
		found, active := false, false
		for rows.Next() {
			var kid string
			var act bool
			if err := rows.Scan(&kid, &act); err != nil {
				rows.Close()
				return wrap("activate signing key", err)
			}
			if kid == id {
				found, active = true, act
			}
		}
		if err := rows.Close(); err != nil {
			return wrap("activate signing key", err)
		}
		if !found {
			return fmt.Errorf("mysql: activate signing key: %w", store.ErrNotFound)
		}
		if active {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `UPDATE signing_keys SET active = FALSE, not_after = ? WHERE active`, ts(notAfter)); err != nil {
			return wrap("activate signing key", err)
		}
		_, err = tx.ExecContext(ctx, `UPDATE signing_keys SET active = TRUE, not_after = ? WHERE id = ?`, ts(time.Time{}), id)
		return wrap("activate signing key", err)
	})
}

// ListSigningKeys returns the active key and the retired keys published
// after now, newest (by CreatedAt) first.
func (s *Store) ListSigningKeys(ctx context.Context, now time.Time) ([]store.SigningKey, error) {
	keys, err := collect(ctx, s.db, func(r row) (store.SigningKey, error) {
		var k store.SigningKey
		err := r.Scan(&k.ID, &k.Algorithm, &k.PrivateDER, &k.KEKID, timeCol{&k.CreatedAt}, timeCol{&k.NotBefore}, &k.Active, timeCol{&k.NotAfter})
		return k, err
	}, `SELECT id, algorithm, private_der, kek_id, created_at, not_before, active, not_after FROM signing_keys
		WHERE active OR not_after > ? ORDER BY created_at DESC, id DESC`, ts(now))
	return keys, wrap("list signing keys", err)
}

// ResealSigningKey replaces id's key material and KEK id while the row is
// still sealed by fromKEK. The compare-and-swap is one conditional UPDATE:
// InnoDB locks the row and evaluates kek_id on its latest committed
// version, so of concurrent reseals from the same KEK exactly one matches
// and the others, once it commits, match nothing. When nothing matched, a
// read in the same transaction tells an unknown id (store.ErrNotFound) from
// a row sealed by another KEK (store.ErrConflict); it only classifies the
// failure, the swap has already been refused.
func (s *Store) ResealSigningKey(ctx context.Context, id, fromKEK string, material []byte, toKEK string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		// ClientFoundRows: a reseal that writes identical values still
		// counts as matched.
		err := mustAffect(tx.ExecContext(ctx, `UPDATE signing_keys SET private_der = ?, kek_id = ? WHERE id = ? AND kek_id = ?`,
			material, toKEK, id, fromKEK))
		if !errors.Is(err, store.ErrNotFound) {
			return wrap("reseal signing key", err)
		}
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM signing_keys WHERE id = ?`, id).Scan(&one); err != nil {
			return wrap("reseal signing key", err)
		}
		return wrap("reseal signing key", store.ErrConflict)
	})
}

// deleteBatch bounds the grant ids one DELETE names.
const deleteBatch = 500

// DeleteExpired removes auth requests, access tokens, refresh tokens,
// sessions and login attempt counters that expired at or before now (refresh
// tokens stay until then even when used or revoked, for reuse detection),
// and grant rows nothing refers to any more. Grant rows locked by a
// concurrent issuer or revoker are skipped (SKIP LOCKED), not waited for.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`DELETE FROM auth_requests WHERE expires_at <= ?`,
			`DELETE FROM access_tokens WHERE expires_at <= ?`,
			`DELETE FROM refresh_tokens WHERE expires_at <= ?`,
			`DELETE FROM sessions WHERE expires_at <= ?`,
			`DELETE FROM login_attempts WHERE expires_at <= ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, ts(now)); err != nil {
				return wrap("delete expired", err)
			}
		}
		// MySQL cannot DELETE from a table its own subquery reads, so the
		// orphaned grants are locked first and deleted by id.
		ids, err := collect(ctx, tx, func(r row) (any, error) {
			var id []byte
			err := r.Scan(&id)
			return id, err
		}, `SELECT g.id FROM grants g WHERE g.created_at <= ?
			AND NOT EXISTS (SELECT 1 FROM auth_requests a WHERE a.id = g.id)
			AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = g.id)
			AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = g.id)
			FOR UPDATE SKIP LOCKED`, ts(now))
		if err != nil {
			return wrap("delete expired", err)
		}
		for len(ids) > 0 {
			batch := ids[:min(len(ids), deleteBatch)]
			ids = ids[len(batch):]
			q := `DELETE FROM grants WHERE id IN (?` + strings.Repeat(", ?", len(batch)-1) + `)`
			if _, err := tx.ExecContext(ctx, q, batch...); err != nil {
				return wrap("delete expired", err)
			}
		}
		return nil
	})
}
