package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// ReserveAttempt counts one attempt against key in window unless the window
// is full; the single writer connection serializes concurrent callers.
func (s *Store) ReserveAttempt(ctx context.Context, key string, window time.Time, limit int, expires time.Time) (bool, error) {
	if limit <= 0 {
		return false, nil
	}
	var ok bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO login_attempts (key, window_start, count, expires_at) VALUES (?, ?, 1, ?)
			ON CONFLICT (key, window_start) DO UPDATE SET count = login_attempts.count + 1
			WHERE login_attempts.count < ?`, key, micros(window), micros(expires), limit)
		if err != nil {
			return wrap("reserve attempt", err)
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return wrap("reserve attempt", err)
	})
	return ok, err
}

// ReleaseAttempt takes back one reservation of key in window.
func (s *Store) ReleaseAttempt(ctx context.Context, key string, window time.Time) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE login_attempts SET count = count - 1
			WHERE key = ? AND window_start = ? AND count > 0`, key, micros(window))
		return wrap("release attempt", err)
	})
}

// CountAttempts returns the count of key in window (zero when absent).
func (s *Store) CountAttempts(ctx context.Context, key string, window time.Time) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT count FROM login_attempts WHERE key = ? AND window_start = ?`, key, micros(window)).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, wrap("count attempts", err)
}

// AcceptTOTPStep records step for userID if it is later than the last one.
func (s *Store) AcceptTOTPStep(ctx context.Context, userID string, step int64) (bool, error) {
	var ok bool
	err := s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `INSERT INTO totp_steps (user_id, last_step) VALUES (?, ?)
			ON CONFLICT (user_id) DO UPDATE SET last_step = excluded.last_step
			WHERE totp_steps.last_step < excluded.last_step`, userID, step)
		if err != nil {
			return wrap("accept totp step", err)
		}
		n, err := res.RowsAffected()
		ok = n == 1
		return wrap("accept totp step", err)
	})
	return ok, err
}
