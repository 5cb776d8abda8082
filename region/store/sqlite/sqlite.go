// Package sqlite is the embedded SQLite backend of store.Store, for a
// regional node that runs without an external database.
//
// The database is one file in WAL mode with synchronous=FULL, so a method
// that returned nil has reached stable storage. All writes go through a
// single connection (database/sql queues callers for it) and every write
// transaction starts with BEGIN IMMEDIATE, so writers of one Store never see
// SQLITE_BUSY and a second process on the same file waits on busy_timeout
// instead of failing. Reads use a separate pool of read-only connections,
// which WAL lets run alongside the writer.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/meridian-id/meridian/region/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Page cache per connection (SQLite's default is 2 MiB). Token inserts land
// on random pages of the token table and its indexes (the key is a digest):
// once those outgrow the writer's cache every insert re-reads pages from the
// file (a pread each, most of the writer's kernel time under load).
const (
	writerCacheKiB = 32 << 10
	readerCacheKiB = 8 << 10
)

// commitGather is how long the single writer may wait for a group commit
// batch to fill under steady concurrency (store.GroupCommit). A commit
// writes every page it touched as a WAL frame (two pwrites and a checksum
// each) and fsyncs: gathering the callers of the previous batch into one
// transaction writes the shared pages (table end, append-only indexes,
// page 1) once for all of them. Measured on a 2-core machine with 32
// connections issuing client_credentials tokens: +14-18 % tokens/s, p50
// down, with 300 us; 1 ms gathered no more. At most ~1 ms is added (Go's
// timer resolution when the process is otherwise idle) to one batch when
// the load drops.
const commitGather = 300 * time.Microsecond

// busyTimeout is how long a connection waits for a lock held by another
// process before it reports SQLITE_BUSY.
const busyTimeout = 10 * time.Second

// Store is a store.Store kept in one SQLite file. It is safe for concurrent
// use. Create it with Open and bring its schema up to date with Migrate.
type Store struct {
	w     *sql.DB // exactly one connection: every write transaction
	r     *sql.DB // read-only connections
	now   func() time.Time
	stmts sync.Map                    // query -> *sql.Stmt on r: hot reads skip SQL parsing
	gc    *store.GroupCommit[*sql.Tx] // token inserts, many per transaction
	wst   sync.Map                    // query -> *sql.Stmt on w: hot inserts (batch.go)
	ckpt  *checkpointer               // WAL checkpoints off the commit path (checkpoint.go)
}

// queryRow runs a read through a statement prepared once per query text;
// parsing dominated the introspection path before.
func (s *Store) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if st, ok := s.stmts.Load(query); ok {
		return st.(*sql.Stmt).QueryRowContext(ctx, args...)
	}
	st, err := s.r.PrepareContext(ctx, query)
	if err != nil {
		return s.r.QueryRowContext(ctx, query, args...)
	}
	if prev, loaded := s.stmts.LoadOrStore(query, st); loaded {
		st.Close()
		st = prev.(*sql.Stmt)
	}
	return st.QueryRowContext(ctx, args...)
}

var _ store.Store = (*Store)(nil)

// Open opens the SQLite database file at path, creating it with mode 0600
// if it does not exist (its directory must), in WAL mode with
// synchronous=FULL, foreign keys on and a busy timeout. It does not change
// the schema: call Migrate before first use.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("sqlite: open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	// The file holds password hashes and private signing keys: create it
	// readable by its owner only (SQLite gives -wal and -shm the same mode).
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	w, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	// The writer connects first: it creates the file and switches it to WAL,
	// which is persistent, before any reader connects.
	var mode string
	if err := w.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: journal_mode is %q, want wal", path, mode)
	}
	r, err := sql.Open("sqlite", dsn(abs, true))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	c, err := sql.Open("sqlite", dsn(abs, false))
	if err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %q: %w", path, err)
	}
	c.SetMaxOpenConns(1)
	c.SetMaxIdleConns(1)
	st := &Store{w: w, r: r, now: now, ckpt: startCheckpointer(c)}
	st.gc = store.NewGroupCommit(1, commitGather, st.write)
	return st, nil
}

// now is the clock of a Store: UTC, at the microsecond precision the
// database keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// dsn builds the modernc.org/sqlite data source name for the file at the
// absolute path abs, for the writer or a reader connection.
func dsn(abs string, reader bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout("+strconv.FormatInt(busyTimeout.Milliseconds(), 10)+")")
	q.Add("_pragma", "foreign_keys(1)")
	if reader {
		q.Add("_pragma", "query_only(1)")
		q.Add("_pragma", "cache_size("+strconv.Itoa(-readerCacheKiB)+")")
	} else {
		q.Add("_pragma", "cache_size("+strconv.Itoa(-writerCacheKiB)+")")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(FULL)")
		q.Add("_pragma", "wal_autocheckpoint(0)") // checkpoint.go
		q.Set("_txlock", "immediate")
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(abs), RawQuery: q.Encode()}
	return u.String()
}

// Close closes the database. Calls in flight may fail.
func (s *Store) Close() error {
	s.gc.Close()
	s.wst.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	s.stmts.Range(func(_, st any) bool { st.(*sql.Stmt).Close(); return true })
	return errors.Join(s.ckpt.close(), s.r.Close(), s.w.Close())
}

// Ping checks that both the writer and a reader connection answer.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.w.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping writer: %w", err)
	}
	if err := s.r.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlite: ping reader: %w", err)
	}
	return nil
}

// Migrate applies the embedded migrations that schema_migrations does not
// list yet, all in one write transaction, so concurrent callers (even in
// other processes) apply each migration exactly once. It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	if err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    INTEGER NOT NULL PRIMARY KEY,
			name       TEXT    NOT NULL,
			applied_at INTEGER NOT NULL
		) STRICT`); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		applied := map[int64]bool{}
		rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				_ = rows.Close()
				return fmt.Errorf("sqlite: migrate: %w", err)
			}
			applied[v] = true
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
		for _, m := range migs {
			if applied[m.Version] {
				continue
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
			}
			if _, err := tx.ExecContext(ctx,
				`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.Version, m.Name, s.now().UnixMicro()); err != nil {
				return fmt.Errorf("sqlite: migration %s: %w", m.Name, err)
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return s.prepareWrites(ctx)
}

// commitThen wraps an error that write returns only after committing the
// transaction: a reuse detection must keep its revocation.
type commitThen struct{ err error }

func (c commitThen) Error() string { return c.err.Error() }
func (c commitThen) Unwrap() error { return c.err }

// write runs fn in one write transaction (BEGIN IMMEDIATE on the writer
// connection). It commits when fn returns nil or a commitThen, and rolls
// back otherwise.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	ferr := fn(tx)
	var ct commitThen
	if ferr != nil && !errors.As(ferr, &ct) {
		_ = tx.Rollback()
		return ferr
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	s.ckpt.committed()
	if ferr != nil {
		return ct.err
	}
	return nil
}

// mapErr translates constraint and no-row errors to the store's errors.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%w: %w", store.ErrConflict, err)
		}
	}
	return err
}

// wrap prefixes err with the operation, translating it with mapErr.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("sqlite: %s: %w", op, mapErr(err))
}

// mustAffect returns store.ErrNotFound when res changed no row.
func mustAffect(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }
