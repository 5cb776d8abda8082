package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReserveAttempt counts one attempt against key in window unless the window
// is full. INSERT … ON CONFLICT DO UPDATE … WHERE locks the counter row and
// re-evaluates the condition on its latest version, so concurrent callers
// on any node never count past limit.
func (s *Store) ReserveAttempt(ctx context.Context, key string, window time.Time, limit int, expires time.Time) (bool, error) {
	if limit <= 0 {
		return false, nil
	}
	var ok bool
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO login_attempts (key, window_start, count, expires_at) VALUES ($1, $2, 1, $3)
			ON CONFLICT (key, window_start) DO UPDATE SET count = login_attempts.count + 1
			WHERE login_attempts.count < $4`, key, window, expires, limit)
		if err != nil {
			return wrap("reserve attempt", err)
		}
		ok = tag.RowsAffected() == 1
		return nil
	})
	return ok, err
}

// ReleaseAttempt takes back one reservation of key in window.
func (s *Store) ReleaseAttempt(ctx context.Context, key string, window time.Time) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `UPDATE login_attempts SET count = count - 1
			WHERE key = $1 AND window_start = $2 AND count > 0`, key, window)
		return wrap("release attempt", err)
	})
}

// CountAttempts returns the count of key in window (zero when absent).
func (s *Store) CountAttempts(ctx context.Context, key string, window time.Time) (int, error) {
	var n int
	err := s.read(ctx, func(c *pgx.Conn) error {
		err := c.QueryRow(ctx, `SELECT count FROM login_attempts WHERE key = $1 AND window_start = $2`, key, window).Scan(&n)
		if errors.Is(err, pgx.ErrNoRows) {
			n = 0
			return nil
		}
		return wrap("count attempts", err)
	})
	return n, err
}

// AcceptTOTPStep records step for userID if it is later than the last one;
// the conditional upsert has exactly one winner per step.
func (s *Store) AcceptTOTPStep(ctx context.Context, userID string, step int64) (bool, error) {
	var ok bool
	err := s.write(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `INSERT INTO totp_steps (user_id, last_step) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET last_step = excluded.last_step
			WHERE totp_steps.last_step < excluded.last_step`, userID, step)
		if err != nil {
			return wrap("accept totp step", err)
		}
		ok = tag.RowsAffected() == 1
		return nil
	})
	return ok, err
}
