package sqlite

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

func scanAuth(sc scanner) (store.AuthRequest, error) {
	var r store.AuthRequest
	var scopes, prompt, locales, acr, amr string
	var age sql.NullInt64
	var authTime, created, expires int64
	if err := sc.Scan(&r.ID, &r.ClientID, &r.RedirectURI, &scopes, &r.State, &r.Nonce, &r.ResponseType, &r.ResponseMode,
		&r.CodeChallenge, &r.CodeChallengeMethod, &prompt, &age, &r.LoginHint, &locales,
		&acr, &r.UserID, &authTime, &amr, &r.Done, &created, &expires); err != nil {
		return store.AuthRequest{}, err
	}
	var d dec
	r.Scopes = d.list(scopes)
	r.Prompt = d.list(prompt)
	r.UILocales = d.list(locales)
	r.ACRValues = d.list(acr)
	r.AMR = d.list(amr)
	if age.Valid {
		if age.Int64 < 0 {
			d.fail(fmt.Errorf("negative max_age %d", age.Int64))
		} else {
			v := uint(age.Int64)
			r.MaxAge = &v
		}
	}
	r.AuthTime = fromMicros(authTime)
	r.CreatedAt = fromMicros(created)
	r.ExpiresAt = fromMicros(expires)
	return r, d.err
}

// CreateAuthRequest inserts r; a zero CreatedAt is set to now.
func (s *Store) CreateAuthRequest(ctx context.Context, r store.AuthRequest) error {
	r.CreatedAt = nowOr(r.CreatedAt, s.now())
	age, err := maxAge(r.MaxAge)
	if err != nil {
		return wrap("create auth request", err)
	}
	var e enc
	args := []any{r.ID, r.ClientID, r.RedirectURI, e.list(r.Scopes), r.State, r.Nonce, r.ResponseType, r.ResponseMode,
		r.CodeChallenge, r.CodeChallengeMethod, e.list(r.Prompt), age, r.LoginHint, e.list(r.UILocales),
		e.list(r.ACRValues), r.UserID, micros(r.AuthTime), e.list(r.AMR), r.Done, micros(r.CreatedAt), micros(r.ExpiresAt)}
	if e.err != nil {
		return wrap("create auth request", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO auth_requests (`+authCols+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, args...)
		return wrap("create auth request", err)
	})
}

// GetAuthRequest returns the request with the given id. An expired request
// is reported as store.ErrNotFound.
func (s *Store) GetAuthRequest(ctx context.Context, id string) (store.AuthRequest, error) {
	r, err := scanAuth(s.queryRow(ctx,
		`SELECT `+authCols+` FROM auth_requests WHERE id = ? AND expires_at > ?`, id, micros(s.now())))
	return r, wrap("get auth request", err)
}

// GetAuthRequestByCode returns the unexpired request holding the code
// digest without redeeming it.
func (s *Store) GetAuthRequestByCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	r, err := scanAuth(s.queryRow(ctx,
		`SELECT `+authCols+` FROM auth_requests WHERE code_hash = ? AND expires_at > ?`, code[:], micros(s.now())))
	return r, wrap("get auth request by code", err)
}

// CompleteAuthRequest records the authenticated user on the unexpired
// request id. A request whose code was already issued cannot change its
// user: that gives store.ErrConflict.
func (s *Store) CompleteAuthRequest(ctx context.Context, id, userID string, authTime time.Time, amr []string) error {
	var e enc
	amrJSON := e.list(amr)
	if e.err != nil {
		return wrap("complete auth request", e.err)
	}
	now := s.now()
	return s.write(ctx, func(tx *sql.Tx) error {
		var hasCode bool
		err := tx.QueryRowContext(ctx, `SELECT code_hash IS NOT NULL FROM auth_requests WHERE id = ? AND expires_at > ?`,
			id, micros(now)).Scan(&hasCode)
		if err != nil {
			return wrap("complete auth request", err)
		}
		if hasCode {
			return fmt.Errorf("sqlite: complete auth request: code already issued: %w", store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, `UPDATE auth_requests SET user_id = ?, auth_time = ?, amr = ?, done = 1 WHERE id = ?`,
			userID, micros(authTime), amrJSON, id)
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
		err := tx.QueryRowContext(ctx, `SELECT done, code_hash IS NOT NULL FROM auth_requests WHERE id = ? AND expires_at > ?`,
			id, micros(now)).Scan(&done, &hasCode)
		if err != nil {
			return wrap("save code", err)
		}
		if !done {
			return fmt.Errorf("sqlite: save code: request not completed: %w", store.ErrNotFound)
		}
		if hasCode {
			return fmt.Errorf("sqlite: save code: code already issued: %w", store.ErrConflict)
		}
		_, err = tx.ExecContext(ctx, `UPDATE auth_requests SET code_hash = ? WHERE id = ?`, code[:], id)
		return wrap("save code", err)
	})
}

// RedeemCode marks the code used and returns its request. An unknown code
// or an expired request gives store.ErrNotFound. A code that was already
// redeemed gives store.ErrAlreadyUsed, after committing the revocation of
// the request's grant (its tokens, and any issued later).
func (s *Store) RedeemCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	now := s.now()
	var r store.AuthRequest
	err := s.write(ctx, func(tx *sql.Tx) error {
		var used bool
		var expires int64
		var id string
		err := tx.QueryRowContext(ctx, `SELECT id, code_used, expires_at FROM auth_requests WHERE code_hash = ?`, code[:]).
			Scan(&id, &used, &expires)
		if err != nil {
			return wrap("redeem code", err)
		}
		if used {
			if err := revokeGrant(ctx, tx, id, now); err != nil {
				return wrap("redeem code", err)
			}
			return commitThen{fmt.Errorf("sqlite: redeem code: %w", store.ErrAlreadyUsed)}
		}
		if expires <= micros(now) {
			return fmt.Errorf("sqlite: redeem code: request expired: %w", store.ErrNotFound)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE auth_requests SET code_used = 1 WHERE id = ?`, id); err != nil {
			return wrap("redeem code", err)
		}
		r, err = scanAuth(tx.QueryRowContext(ctx, `SELECT `+authCols+` FROM auth_requests WHERE id = ?`, id))
		return wrap("redeem code", err)
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
		res, err := tx.ExecContext(ctx, `DELETE FROM auth_requests WHERE id = ?`, id)
		if err == nil {
			err = mustAffect(res)
		}
		return wrap("delete auth request", err)
	})
}

// ensureGrant makes sure the grant row of id exists and reports whether the
// grant was revoked. An empty id (client_credentials) has no grant.
func ensureGrant(ctx context.Context, tx *sql.Tx, id string, now time.Time) (revoked bool, err error) {
	if id == "" {
		return false, nil
	}
	err = tx.QueryRowContext(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES (?, 0, ?)
		ON CONFLICT (id) DO UPDATE SET revoked = grants.revoked RETURNING revoked`, id, micros(now)).Scan(&revoked)
	return revoked, err
}

// revokeGrant marks the grant id revoked, so no further token of it can be
// issued, and revokes all its access and refresh tokens.
func revokeGrant(ctx context.Context, tx *sql.Tx, id string, now time.Time) error {
	if id == "" {
		return errors.New("empty grant id")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES (?, 1, ?)
		ON CONFLICT (id) DO UPDATE SET revoked = 1`, id, micros(now)); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE access_tokens SET revoked = 1 WHERE grant_id = ? AND revoked = 0`, id); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE refresh_tokens SET revoked = 1 WHERE grant_id = ? AND revoked = 0`, id)
	return err
}
