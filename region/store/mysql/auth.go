package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

const authCols = `id, client_id, redirect_uri, scopes, state, nonce, response_type, response_mode,
	code_challenge, code_challenge_method, prompt, max_age, login_hint, ui_locales,
	acr_values, user_id, auth_time, amr, done, created_at, expires_at`

func scanAuth(r row) (store.AuthRequest, error) {
	var a store.AuthRequest
	var age *int64
	if err := r.Scan(&a.ID, &a.ClientID, &a.RedirectURI, listCol{&a.Scopes}, &a.State, &a.Nonce, &a.ResponseType, &a.ResponseMode,
		&a.CodeChallenge, &a.CodeChallengeMethod, listCol{&a.Prompt}, &age, &a.LoginHint, listCol{&a.UILocales},
		listCol{&a.ACRValues}, &a.UserID, timeCol{&a.AuthTime}, listCol{&a.AMR}, &a.Done, timeCol{&a.CreatedAt}, timeCol{&a.ExpiresAt}); err != nil {
		return store.AuthRequest{}, err
	}
	var err error
	a.MaxAge, err = unmaxAge(age)
	return a, err
}

// CreateAuthRequest inserts r; a zero CreatedAt is set to now.
func (s *Store) CreateAuthRequest(ctx context.Context, r store.AuthRequest) error {
	r.CreatedAt = nowOr(r.CreatedAt, s.now())
	age, err := maxAge(r.MaxAge)
	if err != nil {
		return wrap("create auth request", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO auth_requests (`+authCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.ID, r.ClientID, r.RedirectURI, list(r.Scopes), r.State, r.Nonce, r.ResponseType, r.ResponseMode,
			r.CodeChallenge, r.CodeChallengeMethod, list(r.Prompt), age, r.LoginHint, list(r.UILocales),
			list(r.ACRValues), r.UserID, ts(r.AuthTime), list(r.AMR), r.Done, ts(r.CreatedAt), ts(r.ExpiresAt))
		return wrap("create auth request", err)
	})
}

// GetAuthRequest returns the request with the given id. An expired request
// is reported as store.ErrNotFound.
func (s *Store) GetAuthRequest(ctx context.Context, id string) (store.AuthRequest, error) {
	r, err := scanAuth(s.db.QueryRowContext(ctx, `SELECT `+authCols+` FROM auth_requests WHERE id = ? AND expires_at > ?`,
		id, ts(s.now())))
	return r, wrap("get auth request", err)
}

// GetAuthRequestByCode returns the unexpired request holding the code
// digest without redeeming it.
func (s *Store) GetAuthRequestByCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	r, err := scanAuth(s.db.QueryRowContext(ctx, `SELECT `+authCols+` FROM auth_requests WHERE code_hash = ? AND expires_at > ?`,
		code[:], ts(s.now())))
	return r, wrap("get auth request by code", err)
}

// CompleteAuthRequest records the authenticated user on the unexpired
// request id. A request whose code was already issued cannot change its
// user: that gives store.ErrConflict.
func (s *Store) CompleteAuthRequest(ctx context.Context, id, userID string, authTime time.Time, amr []string) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var hasCode bool
		if err := tx.QueryRowContext(ctx, `SELECT code_hash IS NOT NULL FROM auth_requests WHERE id = ? AND expires_at > ? FOR UPDATE`,
			id, ts(now)).Scan(&hasCode); err != nil {
			return wrap("complete auth request", err)
		}
		if hasCode {
			return fmt.Errorf("mysql: complete auth request: code already issued: %w", store.ErrConflict)
		}
		_, err := tx.ExecContext(ctx, `UPDATE auth_requests SET user_id = ?, auth_time = ?, amr = ?, done = TRUE WHERE id = ?`,
			userID, ts(authTime), list(amr), id)
		return wrap("complete auth request", err)
	})
}

// SaveCode attaches the digest of the issued code to the completed,
// unexpired request id. A request that is unknown, expired or not completed
// gives store.ErrNotFound; one that already has a code, or a digest that
// another request uses, gives store.ErrConflict.
func (s *Store) SaveCode(ctx context.Context, id string, code store.Hash) error {
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var done, hasCode bool
		if err := tx.QueryRowContext(ctx, `SELECT done, code_hash IS NOT NULL FROM auth_requests WHERE id = ? AND expires_at > ? FOR UPDATE`,
			id, ts(now)).Scan(&done, &hasCode); err != nil {
			return wrap("save code", err)
		}
		if !done {
			return fmt.Errorf("mysql: save code: request not completed: %w", store.ErrNotFound)
		}
		if hasCode {
			return fmt.Errorf("mysql: save code: code already issued: %w", store.ErrConflict)
		}
		_, err := tx.ExecContext(ctx, `UPDATE auth_requests SET code_hash = ? WHERE id = ?`, code[:], id)
		return wrap("save code", err)
	})
}

// RedeemCode marks the code used and returns its request. An unknown code
// or an expired request gives store.ErrNotFound. A code that was already
// redeemed gives store.ErrAlreadyUsed, after committing the revocation of
// the request's grant (its tokens, and any issued later).
//
// The winner is decided by a conditional UPDATE, a locking read of the
// latest committed row: concurrent redemptions queue on the request's row
// lock and re-check code_used once the first commits.
func (s *Store) RedeemCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	now := s.now()
	var r store.AuthRequest
	err := s.write(ctx, func(tx *sql.Tx) error {
		err := mustAffect(tx.ExecContext(ctx, `UPDATE auth_requests SET code_used = TRUE
			WHERE code_hash = ? AND NOT code_used AND expires_at > ?`, code[:], ts(now)))
		if err == nil {
			// The row is ours (locked) until commit.
			r, err = scanAuth(tx.QueryRowContext(ctx, `SELECT `+authCols+` FROM auth_requests WHERE code_hash = ?`, code[:]))
			return wrap("redeem code", err)
		}
		if !errors.Is(err, store.ErrNotFound) {
			return wrap("redeem code", err)
		}
		var id string
		var used bool
		if err := tx.QueryRowContext(ctx, `SELECT id, code_used FROM auth_requests WHERE code_hash = ? FOR UPDATE`, code[:]).
			Scan(&id, &used); err != nil {
			return wrap("redeem code", err)
		}
		if !used {
			return fmt.Errorf("mysql: redeem code: request expired: %w", store.ErrNotFound)
		}
		if err := revokeGrant(ctx, tx, id, now); err != nil {
			return wrap("redeem code", err)
		}
		return commitThen{fmt.Errorf("mysql: redeem code: %w", store.ErrAlreadyUsed)}
	})
	if err != nil {
		return store.AuthRequest{}, err
	}
	return r, nil
}

// DeleteAuthRequest deletes the request id. Deleting a redeemed request
// also forgets its code, so a later replay of the code is no longer
// detected as reuse; let DeleteExpired remove redeemed requests instead.
func (s *Store) DeleteAuthRequest(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return wrap("delete auth request", mustAffect(tx.ExecContext(ctx, `DELETE FROM auth_requests WHERE id = ?`, id)))
	})
}

// ensureGrant locks the grant row of id, creating it if needed, and reports
// whether the grant was revoked. An empty id (client_credentials) has no
// grant. INSERT ... ON DUPLICATE KEY UPDATE takes the row's exclusive lock
// whether it inserts or not; the SELECT ... FOR UPDATE then reads the
// latest committed value under that lock.
func ensureGrant(ctx context.Context, tx *sql.Tx, id string, now time.Time) (revoked bool, err error) {
	if id == "" {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES (?, FALSE, ?)
		ON DUPLICATE KEY UPDATE revoked = revoked`, id, ts(now)); err != nil {
		return false, err
	}
	err = tx.QueryRowContext(ctx, `SELECT revoked FROM grants WHERE id = ? FOR UPDATE`, id).Scan(&revoked)
	return revoked, err
}

// revokeGrant locks the grant row of id, marks it revoked so no further
// token of it can be issued, and revokes all its access and refresh tokens.
// The token updates run after the lock is held, so they see every token a
// concurrent issuer committed.
func revokeGrant(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	if id == "" {
		return errors.New("empty grant id")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES (?, TRUE, ?)
		ON DUPLICATE KEY UPDATE revoked = TRUE`, id, ts(now)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = TRUE WHERE grant_id = ? AND NOT revoked`, id); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET revoked = TRUE WHERE grant_id = ? AND NOT revoked`, id)
	return err
}
