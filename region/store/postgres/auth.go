package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

const authCols = `id, client_id, redirect_uri, scopes, state, nonce, response_type, response_mode,
	code_challenge, code_challenge_method, prompt, max_age, login_hint, ui_locales,
	acr_values, user_id, auth_time, amr, done, created_at, expires_at`

func scanAuth(row pgx.Row) (store.AuthRequest, error) {
	var r store.AuthRequest
	var age *int64
	if err := row.Scan(&r.ID, &r.ClientID, &r.RedirectURI, &r.Scopes, &r.State, &r.Nonce, &r.ResponseType, &r.ResponseMode,
		&r.CodeChallenge, &r.CodeChallengeMethod, &r.Prompt, &age, &r.LoginHint, &r.UILocales,
		&r.ACRValues, &r.UserID, &r.AuthTime, &r.AMR, &r.Done, &r.CreatedAt, &r.ExpiresAt); err != nil {
		return store.AuthRequest{}, err
	}
	r.Scopes, r.Prompt, r.UILocales, r.AMR = unlist(r.Scopes), unlist(r.Prompt), unlist(r.UILocales), unlist(r.AMR)
	r.ACRValues = unlist(r.ACRValues)
	r.AuthTime, r.CreatedAt, r.ExpiresAt = utc(r.AuthTime), utc(r.CreatedAt), utc(r.ExpiresAt)
	var err error
	r.MaxAge, err = unmaxAge(age)
	return r, err
}

// CreateAuthRequest inserts r; a zero CreatedAt is set to now.
func (s *Store) CreateAuthRequest(ctx context.Context, r store.AuthRequest) error {
	r.CreatedAt = nowOr(r.CreatedAt, s.now())
	age, err := maxAge(r.MaxAge)
	if err != nil {
		return wrap("create auth request", err)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO auth_requests (`+authCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)`,
			r.ID, r.ClientID, r.RedirectURI, list(r.Scopes), r.State, r.Nonce, r.ResponseType, r.ResponseMode,
			r.CodeChallenge, r.CodeChallengeMethod, list(r.Prompt), age, r.LoginHint, list(r.UILocales),
			list(r.ACRValues), r.UserID, r.AuthTime, list(r.AMR), r.Done, r.CreatedAt, r.ExpiresAt)
		return wrap("create auth request", err)
	})
}

// GetAuthRequest returns the request with the given id. An expired request
// is reported as store.ErrNotFound.
func (s *Store) GetAuthRequest(ctx context.Context, id string) (store.AuthRequest, error) {
	var r store.AuthRequest
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		r, err = scanAuth(c.QueryRow(ctx, `SELECT `+authCols+` FROM auth_requests WHERE id = $1 AND expires_at > $2`, id, s.now()))
		return wrap("get auth request", err)
	})
	return r, err
}

// GetAuthRequestByCode returns the unexpired request holding the code
// digest without redeeming it.
func (s *Store) GetAuthRequestByCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	var r store.AuthRequest
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		r, err = scanAuth(c.QueryRow(ctx, `SELECT `+authCols+` FROM auth_requests WHERE code_hash = $1 AND expires_at > $2`, code[:], s.now()))
		return wrap("get auth request by code", err)
	})
	return r, err
}

// CompleteAuthRequest records the authenticated user on the unexpired
// request id. A request whose code was already issued cannot change its
// user: that gives store.ErrConflict.
func (s *Store) CompleteAuthRequest(ctx context.Context, id, userID string, authTime time.Time, amr []string) error {
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		var hasCode bool
		if err := tx.QueryRow(ctx, `SELECT code_hash IS NOT NULL FROM auth_requests WHERE id = $1 AND expires_at > $2 FOR UPDATE`,
			id, now).Scan(&hasCode); err != nil {
			return wrap("complete auth request", err)
		}
		if hasCode {
			return fmt.Errorf("postgres: complete auth request: code already issued: %w", store.ErrConflict)
		}
		_, err := tx.Exec(ctx, `UPDATE auth_requests SET user_id = $1, auth_time = $2, amr = $3, done = true WHERE id = $4`,
			userID, authTime, list(amr), id)
		return wrap("complete auth request", err)
	})
}

// SaveCode attaches the digest of the issued code to the completed,
// unexpired request id. A request that is unknown, expired or not completed
// gives store.ErrNotFound; one that already has a code, or a digest that
// another request uses, gives store.ErrConflict.
func (s *Store) SaveCode(ctx context.Context, id string, code store.Hash) error {
	now := s.now()
	return s.write(ctx, func(tx pgx.Tx) error {
		var done, hasCode bool
		if err := tx.QueryRow(ctx, `SELECT done, code_hash IS NOT NULL FROM auth_requests WHERE id = $1 AND expires_at > $2 FOR UPDATE`,
			id, now).Scan(&done, &hasCode); err != nil {
			return wrap("save code", err)
		}
		if !done {
			return fmt.Errorf("postgres: save code: request not completed: %w", store.ErrNotFound)
		}
		if hasCode {
			return fmt.Errorf("postgres: save code: code already issued: %w", store.ErrConflict)
		}
		_, err := tx.Exec(ctx, `UPDATE auth_requests SET code_hash = $1 WHERE id = $2`, code[:], id)
		return wrap("save code", err)
	})
}

// RedeemCode marks the code used and returns its request. An unknown code
// or an expired request gives store.ErrNotFound. A code that was already
// redeemed gives store.ErrAlreadyUsed, after committing the revocation of
// the request's grant (its tokens, and any issued later).
//
// The winner is decided by a conditional UPDATE: concurrent redemptions
// queue on the request's row lock and re-check code_used once the first
// commits.
func (s *Store) RedeemCode(ctx context.Context, code store.Hash) (store.AuthRequest, error) {
	now := s.now()
	var r store.AuthRequest
	err := s.write(ctx, func(tx pgx.Tx) error {
		var err error
		r, err = scanAuth(tx.QueryRow(ctx, `UPDATE auth_requests SET code_used = true
			WHERE code_hash = $1 AND NOT code_used AND expires_at > $2 RETURNING `+authCols, code[:], now))
		if !errors.Is(err, pgx.ErrNoRows) {
			return wrap("redeem code", err)
		}
		var id string
		var used bool
		if err := tx.QueryRow(ctx, `SELECT id, code_used FROM auth_requests WHERE code_hash = $1`, code[:]).Scan(&id, &used); err != nil {
			return wrap("redeem code", err)
		}
		if !used {
			return fmt.Errorf("postgres: redeem code: request expired: %w", store.ErrNotFound)
		}
		if err := revokeGrant(ctx, tx, id, now); err != nil {
			return wrap("redeem code", err)
		}
		return commitThen{fmt.Errorf("postgres: redeem code: %w", store.ErrAlreadyUsed)}
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
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("delete auth request", mustAffect(tx.Exec(ctx, `DELETE FROM auth_requests WHERE id = $1`, id)))
	})
}

// ensureGrant locks the grant row of id, creating it if needed, and reports
// whether the grant was revoked. An empty id (client_credentials) has no
// grant.
func ensureGrant(ctx context.Context, tx pgx.Tx, id string, now time.Time) (revoked bool, err error) {
	if id == "" {
		return false, nil
	}
	err = tx.QueryRow(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES ($1, false, $2)
		ON CONFLICT (id) DO UPDATE SET revoked = grants.revoked RETURNING revoked`, id, now).Scan(&revoked)
	return revoked, err
}

// revokeGrant locks the grant row of id, marks it revoked so no further
// token of it can be issued, and revokes all its access and refresh tokens.
// The token updates run after the lock is held, so they see every token a
// concurrent issuer committed.
func revokeGrant(ctx context.Context, tx pgx.Tx, id string, now time.Time) error {
	if id == "" {
		return errors.New("empty grant id")
	}
	if _, err := tx.Exec(ctx, `INSERT INTO grants (id, revoked, created_at) VALUES ($1, true, $2)
		ON CONFLICT (id) DO UPDATE SET revoked = true`, id, now); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `UPDATE access_tokens SET revoked = true WHERE grant_id = $1 AND NOT revoked`, id); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `UPDATE refresh_tokens SET revoked = true WHERE grant_id = $1 AND NOT revoked`, id)
	return err
}
