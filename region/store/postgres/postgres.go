// Package postgres is the PostgreSQL backend of store.Store, for regional
// nodes that share one database.
//
// Every multi-statement method runs in one READ COMMITTED transaction whose
// races are settled by row locks: a code is redeemed by a conditional
// UPDATE, and everything that issues or revokes tokens of a grant first
// locks that grant's row in the grants table, so exactly one of several
// concurrent redemptions or rotations wins and a revocation can never miss
// a token that is being issued at the same moment.
//
// The store uses the schema that the connection's search_path names first
// (set it with the URL parameter search_path=...). Migrate is safe to run
// from several nodes at once.
package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/meridian-id/meridian/region/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is a store.Store kept in PostgreSQL. It is safe for concurrent use.
// Create it with Open and bring its schema up to date with Migrate.
type Store struct {
	pool *pgxpool.Pool
	now  func() time.Time
	gc   *store.GroupCommit[pgx.Tx] // token inserts, many per transaction
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url, a PostgreSQL URL or keyword/value
// connection string as pgx accepts it. Runtime parameters such as
// search_path may be given as URL parameters. The parameter pool_max_conns
// (default: the number of CPUs, at least 4) bounds the connections the Store
// opens. Open does not change the schema: call Migrate before first use.
func Open(ctx context.Context, url string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if !strings.Contains(url, "pool_max_conns") {
		cfg.MaxConns = int32(max(4, runtime.NumCPU()))
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "meridian"
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	st := &Store{pool: pool, now: now}
	st.gc = store.NewGroupCommit(groupCommitWorkers, 0, st.writeBatch)
	return st, nil
}

// now is the clock of a Store: UTC, at the microsecond precision PostgreSQL
// keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Close closes the Store's connections.
func (s *Store) Close() error {
	s.gc.Close()
	s.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.read(ctx, func(c *pgx.Conn) error {
		if err := c.Ping(ctx); err != nil {
			return fmt.Errorf("postgres: ping: %w", err)
		}
		return nil
	})
}

// Migrate applies the embedded migrations that schema_migrations does not
// list yet, each in its own transaction, while holding a session advisory
// lock keyed by the schema, so nodes that start at once apply each
// migration exactly once. It is idempotent.
func (s *Store) Migrate(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	defer pc.Release()
	c := pc.Conn()
	const key = `hashtextextended('meridian/region/store/migrate:' || coalesce(current_schema()::text, ''), 0)`
	if _, err := c.Exec(ctx, `SELECT pg_advisory_lock(`+key+`)`); err != nil {
		return fmt.Errorf("postgres: migrate: lock: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := c.Exec(uctx, `SELECT pg_advisory_unlock(`+key+`)`); err != nil {
			// Closing the session is what releases the lock now.
			_ = pc.Hijack().Close(uctx)
		}
	}()
	if _, err := c.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    bigint      NOT NULL PRIMARY KEY,
		name       text        NOT NULL,
		applied_at timestamptz NOT NULL
	)`); err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	rows, err := c.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return fmt.Errorf("postgres: migrate: %w", err)
	}
	applied := map[int64]bool{}
	for _, v := range versions {
		applied[v] = true
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.Version, m.Name, s.now())
			return err
		})
		if err != nil {
			return fmt.Errorf("postgres: migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// commitThen wraps an error that write returns only after committing the
// transaction: a reuse detection must keep its revocation.
type commitThen struct{ err error }

func (c commitThen) Error() string { return c.err.Error() }
func (c commitThen) Unwrap() error { return c.err }

// maxAttempts bounds the retries of a transaction that lost a deadlock or
// serialization race.
const maxAttempts = 3

// write runs fn in one transaction. It commits when fn returns nil or a
// commitThen and rolls back otherwise; a transaction that PostgreSQL
// aborted as a deadlock victim or serialization failure is retried.
func (s *Store) write(ctx context.Context, fn func(tx pgx.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, fn)
		var pe *pgconn.PgError
		if attempt < maxAttempts && errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") {
			continue
		}
		return err
	}
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx pgx.Tx) error) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pc.Release()
	c := pc.Conn()
	tx, err := c.Begin(ctx)
	if err != nil {
		return fmt.Errorf("postgres: begin: %w", err)
	}
	ferr := fn(tx)
	var ct commitThen
	if ferr != nil && !errors.As(ferr, &ct) {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = tx.Rollback(rctx) // on failure release drops the connection
		return ferr
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	if ferr != nil {
		return ct.err
	}
	return nil
}

// read runs fn on a pooled connection outside any explicit transaction.
func (s *Store) read(ctx context.Context, fn func(c *pgx.Conn) error) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer pc.Release()
	c := pc.Conn()
	return fn(c)
}

// mapErr translates no-row and unique-violation errors to the store's.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return store.ErrNotFound
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}

// wrap prefixes err with the operation, translating it with mapErr.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("postgres: %s: %w", op, mapErr(err))
}

// mustAffect returns store.ErrNotFound when tag reports no changed row.
func mustAffect(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// PoolStat is the connection pool's statistics (operator metrics).
func (s *Store) PoolStat() *pgxpool.Stat { return s.pool.Stat() }
