// Package embedded is the zero-setup lookup.Store: a single SQLite file
// (pure-Go modernc.org/sqlite, driver "sqlite") in WAL mode with
// synchronous=FULL, so an acknowledged write survives power loss. Entries
// live in
//
//	CREATE TABLE lookup (k BLOB PRIMARY KEY, region TEXT NOT NULL) WITHOUT ROWID
//
// where k is the raw 16-byte lookup.Key.
package embedded

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/meridian-id/meridian/lookup"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// batchSize is the number of rows per statement or transaction chunk in the
// bulk operations (SQLite's default limit is 32766 bound parameters).
const batchSize = 500

// Store is a lookup.Store on one SQLite database file. It is safe for
// concurrent use; writes are serialized by SQLite.
type Store struct {
	db *sql.DB
}

var _ lookup.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and the lookup
// table in it. The caller must Close the Store.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("embedded: empty database path")
	}
	esc := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	dsn := "file:" + esc +
		"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	s := &Store{db: db}
	if err := s.init(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("embedded: open %s: %w", path, err)
	}
	return s, nil
}

func (s *Store) init(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx,
		`CREATE TABLE IF NOT EXISTS lookup (k BLOB PRIMARY KEY, region TEXT NOT NULL) WITHOUT ROWID`); err != nil {
		return err
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, `PRAGMA journal_mode`).Scan(&mode); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("journal_mode is %q, want wal", mode)
	}
	var sync int
	if err := s.db.QueryRowContext(ctx, `PRAGMA synchronous`).Scan(&sync); err != nil {
		return err
	}
	if sync != 2 {
		return fmt.Errorf("synchronous is %d, want 2 (FULL)", sync)
	}
	return nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

// Get implements lookup.Store.
func (s *Store) Get(ctx context.Context, k lookup.Key) (string, error) {
	var r string
	err := s.db.QueryRowContext(ctx, `SELECT region FROM lookup WHERE k = ?`, k[:]).Scan(&r)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("embedded: get %s: %w", k, lookup.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("embedded: get: %w", err)
	}
	return r, nil
}

// GetMany implements lookup.Store with one IN query per chunk of keys.
func (s *Store) GetMany(ctx context.Context, keys []lookup.Key) ([]string, error) {
	out := make([]string, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	idx := make(map[lookup.Key][]int, len(keys))
	for i, k := range keys {
		idx[k] = append(idx[k], i)
	}
	args := make([]any, 0, batchSize)
	for start := 0; start < len(keys); start += batchSize {
		chunk := keys[start:min(start+batchSize, len(keys))]
		args = args[:0]
		for i := range chunk {
			args = append(args, chunk[i][:])
		}
		q := `SELECT k, region FROM lookup WHERE k IN (?` + strings.Repeat(",?", len(chunk)-1) + `)`
		if err := s.query(ctx, q, args, func(e lookup.Entry) error {
			for _, i := range idx[e.Key] {
				out[i] = e.Region
			}
			return nil
		}); err != nil {
			return nil, fmt.Errorf("embedded: get many: %w", err)
		}
	}
	return out, nil
}

// query runs q and calls fn for each (k, region) row.
func (s *Store) query(ctx context.Context, q string, args []any, fn func(lookup.Entry) error) error {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	var (
		kb []byte
		e  lookup.Entry
	)
	for rows.Next() {
		if err := rows.Scan(&kb, &e.Region); err != nil {
			return err
		}
		if len(kb) != lookup.KeySize {
			return fmt.Errorf("corrupt row: key of %d bytes", len(kb))
		}
		copy(e.Key[:], kb)
		if err := fn(e); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Put implements lookup.Store.
func (s *Store) Put(ctx context.Context, k lookup.Key, region string) error {
	if err := lookup.ValidateRegion(region); err != nil {
		return fmt.Errorf("embedded: put: %w", err)
	}
	if _, err := s.db.ExecContext(ctx,
		`INSERT INTO lookup (k, region) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET region = excluded.region`,
		k[:], region); err != nil {
		return fmt.Errorf("embedded: put: %w", err)
	}
	return nil
}

// PutMany implements lookup.Store: all entries are written in one
// transaction, so PutMany is atomic here.
func (s *Store) PutMany(ctx context.Context, entries []lookup.Entry) error {
	for _, e := range entries {
		if err := lookup.ValidateRegion(e.Region); err != nil {
			return fmt.Errorf("embedded: put many: %w", err)
		}
	}
	if len(entries) == 0 {
		return ctx.Err()
	}
	err := s.tx(ctx, `INSERT INTO lookup (k, region) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET region = excluded.region`,
		len(entries), func(i int) []any { return []any{entries[i].Key[:], entries[i].Region} })
	if err != nil {
		return fmt.Errorf("embedded: put many: %w", err)
	}
	return nil
}

// tx executes the prepared statement q n times, with args(i), in one
// transaction.
func (s *Store) tx(ctx context.Context, q string, n int, args func(i int) []any) (err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	st, err := tx.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer st.Close()
	for i := range n {
		if _, err := st.ExecContext(ctx, args(i)...); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// Delete implements lookup.Store.
func (s *Store) Delete(ctx context.Context, k lookup.Key) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM lookup WHERE k = ?`, k[:])
	if err != nil {
		return fmt.Errorf("embedded: delete: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("embedded: delete: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("embedded: delete %s: %w", k, lookup.ErrNotFound)
	}
	return nil
}

// DeleteMany implements lookup.Store in one transaction.
func (s *Store) DeleteMany(ctx context.Context, keys []lookup.Key) error {
	if len(keys) == 0 {
		return ctx.Err()
	}
	if err := s.tx(ctx, `DELETE FROM lookup WHERE k = ?`, len(keys),
		func(i int) []any { return []any{keys[i][:]} }); err != nil {
		return fmt.Errorf("embedded: delete many: %w", err)
	}
	return nil
}

// Scan implements lookup.Store. It pages through the table in key order, so
// no read transaction stays open while fn runs and fn may call the Store.
func (s *Store) Scan(ctx context.Context, fn func(lookup.Entry) error) error {
	var after []byte
	page := make([]lookup.Entry, 0, batchSize)
	for {
		page = page[:0]
		q := `SELECT k, region FROM lookup ORDER BY k LIMIT ?`
		args := []any{batchSize}
		if after != nil {
			q = `SELECT k, region FROM lookup WHERE k > ? ORDER BY k LIMIT ?`
			args = []any{after, batchSize}
		}
		if err := s.query(ctx, q, args, func(e lookup.Entry) error {
			page = append(page, e)
			return nil
		}); err != nil {
			return fmt.Errorf("embedded: scan: %w", err)
		}
		for _, e := range page {
			if err := fn(e); err != nil {
				return fmt.Errorf("embedded: scan: %w", err)
			}
		}
		if len(page) < batchSize {
			return nil
		}
		last := page[len(page)-1].Key
		after = last[:]
	}
}

// Ping implements lookup.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("embedded: ping: %w", err)
	}
	return nil
}
