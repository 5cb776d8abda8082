package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

const accessCols = `hash, client_id, subject, audience, scopes, grant_id, format, auth_time, amr, created_at, expires_at, revoked`

func scanAccess(row pgx.Row) (store.AccessToken, error) {
	var t store.AccessToken
	var h []byte
	if err := row.Scan(&h, &t.ClientID, &t.Subject, &t.Audience, &t.Scopes, &t.GrantID, &t.Format,
		&t.AuthTime, &t.AMR, &t.CreatedAt, &t.ExpiresAt, &t.Revoked); err != nil {
		return store.AccessToken{}, err
	}
	t.Audience, t.Scopes, t.AMR = unlist(t.Audience), unlist(t.Scopes), unlist(t.AMR)
	t.AuthTime, t.CreatedAt, t.ExpiresAt = utc(t.AuthTime), utc(t.CreatedAt), utc(t.ExpiresAt)
	var err error
	t.Hash, err = hash(h)
	return t, err
}

const refreshCols = `hash, grant_id, client_id, subject, audience, scopes, auth_time, amr, created_at, expires_at, used, revoked`

func scanRefresh(row pgx.Row) (store.RefreshToken, error) {
	var t store.RefreshToken
	var h []byte
	if err := row.Scan(&h, &t.GrantID, &t.ClientID, &t.Subject, &t.Audience, &t.Scopes,
		&t.AuthTime, &t.AMR, &t.CreatedAt, &t.ExpiresAt, &t.Used, &t.Revoked); err != nil {
		return store.RefreshToken{}, err
	}
	t.Audience, t.Scopes, t.AMR = unlist(t.Audience), unlist(t.Scopes), unlist(t.AMR)
	t.AuthTime, t.CreatedAt, t.ExpiresAt = utc(t.AuthTime), utc(t.CreatedAt), utc(t.ExpiresAt)
	var err error
	t.Hash, err = hash(h)
	return t, err
}

// insertAccess inserts t after locking its grant and checking that it was
// not revoked.
func insertAccess(ctx context.Context, tx pgx.Tx, t store.AccessToken, now time.Time) error {
	revoked, err := ensureGrant(ctx, tx, t.GrantID, now)
	if err != nil {
		return err
	}
	if revoked {
		return fmt.Errorf("grant %q: %w", t.GrantID, store.ErrRevoked)
	}
	_, err = tx.Exec(ctx, insertAccessSQL, accessArgs(t, now)...)
	return err
}

const insertAccessSQL = `INSERT INTO access_tokens (` + accessCols + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`

func accessArgs(t store.AccessToken, now time.Time) []any {
	return []any{t.Hash[:], t.ClientID, t.Subject, list(t.Audience), list(t.Scopes), t.GrantID, t.Format,
		t.AuthTime, list(t.AMR), nowOr(t.CreatedAt, now), t.ExpiresAt, t.Revoked}
}

// insertRefresh inserts t after locking its grant and checking that it was
// not revoked.
func insertRefresh(ctx context.Context, tx pgx.Tx, t store.RefreshToken, now time.Time) error {
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
	_, err = tx.Exec(ctx, `INSERT INTO refresh_tokens (`+refreshCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
		t.Hash[:], t.GrantID, t.ClientID, t.Subject, list(t.Audience), list(t.Scopes),
		t.AuthTime, list(t.AMR), nowOr(t.CreatedAt, now), t.ExpiresAt, t.Used, t.Revoked)
	return err
}

// CreateAccessToken inserts t; a zero CreatedAt is set to now. A token of a
// revoked grant gives store.ErrRevoked.
func (s *Store) CreateAccessToken(ctx context.Context, t store.AccessToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx pgx.Tx) error {
		if bt, ok := tx.(*batchTx); ok && t.GrantID == "" {
			// No grant to check: the insert joins the batch's pipeline.
			bt.queue("create access token", insertAccessSQL, accessArgs(t, now)...)
			return nil
		}
		return wrap("create access token", insertAccess(ctx, tx, t, now))
	})
}

// GetAccessToken returns the access token with digest h, revoked or expired
// as it is.
func (s *Store) GetAccessToken(ctx context.Context, h store.Hash) (store.AccessToken, error) {
	var t store.AccessToken
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		t, err = scanAccess(c.QueryRow(ctx, `SELECT `+accessCols+` FROM access_tokens WHERE hash = $1`, h[:]))
		return wrap("get access token", err)
	})
	return t, err
}

// RevokeAccessToken revokes the access token with digest h.
func (s *Store) RevokeAccessToken(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("revoke access token", mustAffect(tx.Exec(ctx, `UPDATE access_tokens SET revoked = true WHERE hash = $1`, h[:])))
	})
}

// CreateTokens inserts at and, when rt is non-nil, rt in one transaction.
// Tokens of a revoked grant give store.ErrRevoked and nothing is written.
func (s *Store) CreateTokens(ctx context.Context, at store.AccessToken, rt *store.RefreshToken) error {
	now := s.now()
	return s.gc.Do(ctx, func(tx pgx.Tx) error {
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
	var t store.RefreshToken
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		t, err = scanRefresh(c.QueryRow(ctx, `SELECT `+refreshCols+` FROM refresh_tokens WHERE hash = $1`, h[:]))
		return wrap("get refresh token", err)
	})
	return t, err
}

// RotateRefreshToken marks old used and inserts at and next, which belong
// to old's grant (an empty GrantID is filled in; another one is an error).
// A used old token is reuse: the family is revoked, the revocation
// committed, and store.ErrAlreadyUsed returned. A revoked (and unused) old
// token gives store.ErrRevoked, an unknown one store.ErrNotFound.
//
// Rotations of one family serialize on the grant's row lock, so of any
// number of concurrent rotations of one token exactly one finds it unused.
func (s *Store) RotateRefreshToken(ctx context.Context, old store.Hash, at store.AccessToken, next store.RefreshToken) error {
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		var grant string
		if err := tx.QueryRow(ctx, `SELECT grant_id FROM refresh_tokens WHERE hash = $1`, old[:]).Scan(&grant); err != nil {
			return wrap("rotate refresh token", err)
		}
		grantRevoked, err := ensureGrant(ctx, tx, grant, now)
		if err != nil {
			return wrap("rotate refresh token", err)
		}
		var used, revoked bool
		if err := tx.QueryRow(ctx, `SELECT used, revoked FROM refresh_tokens WHERE hash = $1 FOR UPDATE`, old[:]).
			Scan(&used, &revoked); err != nil {
			return wrap("rotate refresh token", err)
		}
		if used {
			if err := revokeGrant(ctx, tx, grant, now); err != nil {
				return wrap("rotate refresh token", err)
			}
			return commitThen{fmt.Errorf("postgres: rotate refresh token: %w", store.ErrAlreadyUsed)}
		}
		if revoked || grantRevoked {
			return fmt.Errorf("postgres: rotate refresh token: %w", store.ErrRevoked)
		}
		if err := sameGrant(grant, &at.GrantID, &next.GrantID); err != nil {
			return wrap("rotate refresh token", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE refresh_tokens SET used = true WHERE hash = $1`, old[:]); err != nil {
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
	return s.write(ctx, func(tx pgx.Tx) error {
		var grant string
		if err := tx.QueryRow(ctx, `SELECT grant_id FROM refresh_tokens WHERE hash = $1`, h[:]).Scan(&grant); err != nil {
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
		return fmt.Errorf("postgres: revoke grant: empty grant id: %w", store.ErrNotFound)
	}
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("revoke grant", revokeGrant(ctx, tx, grantID, now))
	})
}

// RevokeUserClientTokens revokes every token whose subject is userID at
// clientID, together with the grants they belong to. Grant rows are locked
// in id order, so concurrent calls cannot deadlock on them.
func (s *Store) RevokeUserClientTokens(ctx context.Context, userID, clientID string) error {
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO grants (id, revoked, created_at)
			SELECT id, true, $3 FROM (
				SELECT grant_id AS id FROM access_tokens WHERE subject = $1 AND client_id = $2 AND grant_id <> ''
				UNION
				SELECT grant_id AS id FROM refresh_tokens WHERE subject = $1 AND client_id = $2
			) g ORDER BY id
			ON CONFLICT (id) DO UPDATE SET revoked = true`, userID, clientID, now); err != nil {
			return wrap("revoke user client tokens", err)
		}
		if _, err := tx.Exec(ctx, `UPDATE access_tokens SET revoked = true WHERE NOT revoked AND subject = $1 AND client_id = $2`,
			userID, clientID); err != nil {
			return wrap("revoke user client tokens", err)
		}
		_, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked = true WHERE NOT revoked AND subject = $1 AND client_id = $2`,
			userID, clientID)
		return wrap("revoke user client tokens", err)
	})
}

// CreateSession inserts sess; a zero CreatedAt is set to now.
func (s *Store) CreateSession(ctx context.Context, sess store.Session) error {
	sess.CreatedAt = nowOr(sess.CreatedAt, s.now())
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO sessions (hash, user_id, auth_time, amr, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6)`,
			sess.Hash[:], sess.UserID, sess.AuthTime, list(sess.AMR), sess.CreatedAt, sess.ExpiresAt)
		return wrap("create session", err)
	})
}

// GetSession returns the session with digest h. An expired session is
// reported as store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, h store.Hash) (store.Session, error) {
	var sess store.Session
	err := s.read(ctx, func(c *pgx.Conn) error {
		var hb []byte
		err := c.QueryRow(ctx, `SELECT hash, user_id, auth_time, amr, created_at, expires_at FROM sessions
			WHERE hash = $1 AND expires_at > $2`, h[:], s.now()).
			Scan(&hb, &sess.UserID, &sess.AuthTime, &sess.AMR, &sess.CreatedAt, &sess.ExpiresAt)
		if err != nil {
			return wrap("get session", err)
		}
		sess.AMR = unlist(sess.AMR)
		sess.AuthTime, sess.CreatedAt, sess.ExpiresAt = utc(sess.AuthTime), utc(sess.CreatedAt), utc(sess.ExpiresAt)
		sess.Hash, err = hash(hb)
		return wrap("get session", err)
	})
	if err != nil {
		return store.Session{}, err
	}
	return sess, nil
}

// DeleteSession deletes the session with digest h.
func (s *Store) DeleteSession(ctx context.Context, h store.Hash) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("delete session", mustAffect(tx.Exec(ctx, `DELETE FROM sessions WHERE hash = $1`, h[:])))
	})
}

// AddSigningKey inserts k; a zero CreatedAt is set to now. A second active
// key, like a taken id, gives store.ErrConflict.
func (s *Store) AddSigningKey(ctx context.Context, k store.SigningKey) error {
	k.CreatedAt = nowOr(k.CreatedAt, s.now())
	k.NotBefore = nowOr(k.NotBefore, k.CreatedAt)
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO signing_keys (id, algorithm, private_der, kek_id, created_at, not_before, active, not_after)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`, k.ID, k.Algorithm, k.PrivateDER, k.KEKID, k.CreatedAt, k.NotBefore, k.Active, k.NotAfter)
		return wrap("add signing key", err)
	})
}

// ActivateSigningKey makes id the active key (its NotAfter becomes zero)
// and retires the previously active key, publishing it until notAfter.
// Activating the active key changes nothing. Concurrent activations are
// serialized by a table lock that still lets readers through.
func (s *Store) ActivateSigningKey(ctx context.Context, id string, notAfter time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE`); err != nil {
			return wrap("activate signing key", err)
		}
		var active bool
		if err := tx.QueryRow(ctx, `SELECT active FROM signing_keys WHERE id = $1`, id).Scan(&active); err != nil {
			return wrap("activate signing key", err)
		}
		if active {
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE signing_keys SET active = false, not_after = $1 WHERE active`, notAfter); err != nil {
			return wrap("activate signing key", err)
		}
		_, err := tx.Exec(ctx, `UPDATE signing_keys SET active = true, not_after = $1 WHERE id = $2`, time.Time{}, id)
		return wrap("activate signing key", err)
	})
}

// ListSigningKeys returns the active key and the retired keys published
// after now, newest (by CreatedAt) first.
func (s *Store) ListSigningKeys(ctx context.Context, now time.Time) ([]store.SigningKey, error) {
	var keys []store.SigningKey
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT id, algorithm, private_der, kek_id, created_at, not_before, active, not_after FROM signing_keys
			WHERE active OR not_after > $1 ORDER BY created_at DESC, id DESC`, now)
		if err != nil {
			return wrap("list signing keys", err)
		}
		keys, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.SigningKey, error) {
			var k store.SigningKey
			err := r.Scan(&k.ID, &k.Algorithm, &k.PrivateDER, &k.KEKID, &k.CreatedAt, &k.NotBefore, &k.Active, &k.NotAfter)
			k.CreatedAt, k.NotBefore, k.NotAfter = utc(k.CreatedAt), utc(k.NotBefore), utc(k.NotAfter)
			return k, err
		})
		return wrap("list signing keys", err)
	})
	return keys, err
}

// ResealSigningKey replaces id's key material and KEK id while the row is
// still sealed by fromKEK; the row lock serializes concurrent reseals.
func (s *Store) ResealSigningKey(ctx context.Context, id, fromKEK string, material []byte, toKEK string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		var cur string
		if err := tx.QueryRow(ctx, `SELECT kek_id FROM signing_keys WHERE id = $1 FOR UPDATE`, id).Scan(&cur); err != nil {
			return wrap("reseal signing key", err)
		}
		if cur != fromKEK {
			return wrap("reseal signing key", store.ErrConflict)
		}
		_, err := tx.Exec(ctx, `UPDATE signing_keys SET private_der = $1, kek_id = $2 WHERE id = $3`, material, toKEK, id)
		return wrap("reseal signing key", err)
	})
}

// DeleteExpired removes auth requests, access tokens, refresh tokens,
// sessions and federated claims that expired at or before now (refresh
// tokens stay until then even when used or revoked, for reuse detection),
// and grant rows nothing refers to any more. Grant rows locked by a
// concurrent issuer or revoker are skipped, not waited for.
func (s *Store) DeleteExpired(ctx context.Context, now time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		for _, q := range []string{
			`DELETE FROM auth_requests WHERE expires_at <= $1`,
			`DELETE FROM access_tokens WHERE expires_at <= $1`,
			`DELETE FROM refresh_tokens WHERE expires_at <= $1`,
			`DELETE FROM sessions WHERE expires_at <= $1`,
			`DELETE FROM login_attempts WHERE expires_at <= $1`,
			`DELETE FROM grants WHERE id IN (
				SELECT g.id FROM grants g WHERE g.created_at <= $1
				AND NOT EXISTS (SELECT 1 FROM auth_requests a WHERE a.id = g.id)
				AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.grant_id = g.id)
				AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.grant_id = g.id)
				FOR UPDATE SKIP LOCKED)`,
		} {
			if _, err := tx.Exec(ctx, q, now); err != nil {
				return wrap("delete expired", err)
			}
		}
		return nil
	})
}
