package mysql

import (
	"context"
	"database/sql"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/go-sql-driver/mysql"
)

// MySQL has no INSERT ... ON CONFLICT DO UPDATE ... WHERE, and with
// CLIENT_FOUND_ROWS (which the store sets) an ON DUPLICATE KEY UPDATE that
// leaves the row as it was reports 1 affected row, the same as an insert,
// so the upsert cannot tell whether it counted. Instead each method is a
// conditional UPDATE, an INSERT when there was no row to update and, when
// a concurrent caller inserted the row first (duplicate key), the
// conditional UPDATE once more. Each statement is atomic on its own (an
// InnoDB UPDATE locks the row and evaluates its WHERE on the latest
// committed version), so they run outside a transaction: no statement
// holds a lock while the next one waits for another.

// ReserveAttempt counts one attempt against key in window unless the window
// is full. Only an UPDATE that matched a row under the limit or an INSERT
// of a new counter (count 1) counts, so concurrent callers on any node never
// count past limit.
func (s *Store) ReserveAttempt(ctx context.Context, key string, window time.Time, limit int, expires time.Time) (bool, error) {
	if limit <= 0 {
		return false, nil
	}
	ok, err := s.updateOrInsert(ctx,
		`UPDATE login_attempts SET count = count + 1 WHERE attempt_key = ? AND window_start = ? AND count < ?`,
		[]any{key, ts(window), limit},
		`INSERT INTO login_attempts (attempt_key, window_start, count, expires_at) VALUES (?, ?, 1, ?)`,
		[]any{key, ts(window), ts(expires)})
	return ok, wrap("reserve attempt", err)
}

// ReleaseAttempt takes back one reservation of key in window.
func (s *Store) ReleaseAttempt(ctx context.Context, key string, window time.Time) error {
	_, err := s.exec(ctx, `UPDATE login_attempts SET count = count - 1
		WHERE attempt_key = ? AND window_start = ? AND count > 0`, key, ts(window))
	return wrap("release attempt", err)
}

// CountAttempts returns the count of key in window (zero when absent).
func (s *Store) CountAttempts(ctx context.Context, key string, window time.Time) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count FROM login_attempts WHERE attempt_key = ? AND window_start = ?`, key, ts(window)).Scan(&n)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return n, wrap("count attempts", err)
}

// AcceptTOTPStep records step for userID if it is later than the last one.
// The UPDATE matches only while the recorded step is earlier and the INSERT
// succeeds only for the user's first step, so exactly one of several
// concurrent callers with the same step wins.
func (s *Store) AcceptTOTPStep(ctx context.Context, userID string, step int64) (bool, error) {
	ok, err := s.updateOrInsert(ctx,
		`UPDATE totp_steps SET last_step = ? WHERE user_id = ? AND last_step < ?`,
		[]any{step, userID, step},
		`INSERT INTO totp_steps (user_id, last_step) VALUES (?, ?)`,
		[]any{userID, step})
	return ok, wrap("accept totp step", err)
}

// updateOrInsert runs the conditional update; if it matched no row, the
// insert; if that found the row inserted meanwhile by another caller, the
// update again. It reports whether the update matched or the insert
// inserted.
func (s *Store) updateOrInsert(ctx context.Context, update string, uargs []any, insert string, iargs []any) (bool, error) {
	n, err := s.exec(ctx, update, uargs...)
	if err != nil || n == 1 {
		return n == 1, err
	}
	_, err = s.exec(ctx, insert, iargs...)
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == errDupEntry {
		n, err = s.exec(ctx, update, uargs...)
		return n == 1, err
	}
	return err == nil, err
}

// exec runs one statement on its own (autocommit) and returns the rows it
// matched. A statement that InnoDB rolled back as a deadlock victim is run
// again after a short random pause, as write does.
func (s *Store) exec(ctx context.Context, q string, args ...any) (int64, error) {
	for attempt := 1; ; attempt++ {
		res, err := s.db.ExecContext(ctx, q, args...)
		if err == nil {
			return res.RowsAffected()
		}
		var me *mysql.MySQLError
		if attempt < maxAttempts && errors.As(err, &me) && me.Number == errDeadlock {
			pause := time.Duration(rand.Int64N(int64(attempt) * int64(2*time.Millisecond)))
			select {
			case <-ctx.Done():
				return 0, err
			case <-time.After(pause):
			}
			continue
		}
		return 0, err
	}
}
