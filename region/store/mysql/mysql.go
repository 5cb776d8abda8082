// Package mysql is the MySQL/MariaDB backend of store.Store, for regional
// nodes that share one MySQL 8.0+ or MariaDB 10.6+ database.
//
// It mirrors the PostgreSQL backend. Every multi-statement method runs in
// one InnoDB transaction at READ COMMITTED (set on every connection the
// store opens, whatever the server default), and its races are settled by
// row locks, never by what a snapshot happened to show: a code is redeemed
// by a conditional UPDATE, and everything that issues or revokes tokens of
// a grant first locks that grant's row (INSERT ... ON DUPLICATE KEY UPDATE,
// then SELECT ... FOR UPDATE), so exactly one of several concurrent
// redemptions or rotations wins and a revocation can never miss a token
// that is being issued at the same moment. Transactions that InnoDB rolls
// back as deadlock victims are retried.
//
// The store uses the database the DSN names. Migrate is safe to run from
// several nodes at once: it holds a named lock (GET_LOCK) keyed by the
// database.
package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/meridian-id/meridian/region/store"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Store is a store.Store kept in MySQL or MariaDB. It is safe for
// concurrent use. Create it with Open and bring its schema up to date with
// Migrate.
type Store struct {
	db  *sql.DB
	now func() time.Time
	gc  *store.GroupCommit[*sql.Tx] // token inserts, many per transaction
}

// groupCommitWorkers is how many group commit transactions of token inserts
// a Store runs at once: while one batch waits for its commit (a round trip
// and InnoDB's redo log flush) the next one fills.
const groupCommitWorkers = 2

var _ store.Store = (*Store)(nil)

// sqlMode is the session sql_mode: strict, so an over-long or malformed
// value is an error instead of being truncated or coerced.
const sqlMode = `'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'`

// Open connects to the database named by dsn, either a URL
// mysql://user:password@host:port/database?param=value or a
// go-sql-driver/mysql DSN (user:password@tcp(host:port)/database?...). The
// database must be named. Driver parameters may be given as URL parameters;
// pool_max_conns (default: the number of CPUs, at least 4) bounds the
// connections the Store opens. Whatever the parameters say, sessions run
// with time_zone '+00:00', a strict sql_mode, utf8mb4 and READ COMMITTED.
// Open does not change the schema: call Migrate before first use.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, maxConns, err := parseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	inner, err := mysql.NewConnector(cfg)
	if err != nil {
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	db := sql.OpenDB(readCommitted{inner})
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	// Below the servers' default wait_timeout (8 h) and any proxy's idle cut.
	db.SetConnMaxLifetime(30 * time.Minute)
	db.SetConnMaxIdleTime(5 * time.Minute)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("mysql: open: %w", err)
	}
	st := &Store{db: db, now: now}
	// A batch runs through write: a batch that InnoDB rolled back as a
	// deadlock victim is run again whole (its ops only issue statements).
	st.gc = store.NewGroupCommit(groupCommitWorkers, 0, st.write)
	return st, nil
}

// parseDSN turns dsn into the driver's configuration with the settings the
// store relies on, and the pool size.
func parseDSN(dsn string) (*mysql.Config, int, error) {
	var cfg *mysql.Config
	maxConns := max(4, runtime.NumCPU())
	takePool := func(q url.Values) error {
		if v := q.Get("pool_max_conns"); q.Has("pool_max_conns") {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return fmt.Errorf("pool_max_conns %q: want a positive integer", v)
			}
			maxConns = n
			q.Del("pool_max_conns")
		}
		return nil
	}
	if rest, ok := strings.CutPrefix(dsn, "mysql://"); ok {
		u, err := url.Parse("mysql://" + rest)
		if err != nil {
			// url's error repeats the URL, password included.
			return nil, 0, errors.New("malformed mysql:// URL")
		}
		q := u.Query()
		if err := takePool(q); err != nil {
			return nil, 0, err
		}
		host := u.Host
		if host == "" {
			return nil, 0, errors.New("mysql URL without a host")
		}
		if u.Port() == "" {
			host = net.JoinHostPort(u.Hostname(), "3306")
		}
		db := strings.TrimPrefix(u.Path, "/")
		if strings.Contains(db, "/") {
			return nil, 0, fmt.Errorf("database name %q contains '/'", db)
		}
		cfg, err = mysql.ParseDSN("tcp(" + host + ")/" + db + "?" + q.Encode())
		if err != nil {
			return nil, 0, err
		}
		if u.User != nil {
			cfg.User = u.User.Username()
			cfg.Passwd, _ = u.User.Password()
		}
	} else {
		base, params, _ := strings.Cut(dsn, "?")
		q, err := url.ParseQuery(params)
		if err != nil {
			return nil, 0, err
		}
		if err := takePool(q); err != nil {
			return nil, 0, err
		}
		if cfg, err = mysql.ParseDSN(base + "?" + q.Encode()); err != nil {
			return nil, 0, err
		}
	}
	if cfg.DBName == "" {
		return nil, 0, errors.New("no database named in the DSN")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second // dial timeout; the timeout= parameter sets another
	}
	cfg.ParseTime = true
	cfg.Loc = time.UTC
	// RowsAffected counts matched rows, so revoking an already revoked
	// token is not mistaken for an unknown one.
	cfg.ClientFoundRows = true
	// One round trip per statement instead of prepare, execute, close. The
	// driver escapes arguments itself and refuses to when the connection
	// charset would make that unsafe; utf8mb4 is safe.
	cfg.InterpolateParams = true
	cfg.Collation = "utf8mb4_bin" // utf8mb4, announced in the handshake
	if cfg.Params == nil {
		cfg.Params = map[string]string{}
	}
	cfg.Params["time_zone"] = "'+00:00'"
	cfg.Params["sql_mode"] = sqlMode
	return cfg, maxConns, nil
}

// readCommitted opens connections with READ COMMITTED as their session
// isolation level. (The system variable's name differs between MySQL,
// transaction_isolation, and MariaDB before 11.1, tx_isolation; the SET
// TRANSACTION statement is the same on both.)
type readCommitted struct{ driver.Connector }

func (c readCommitted) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		conn.Close()
		return nil, errors.New("mysql: driver connection cannot execute statements")
	}
	if _, err := ex.ExecContext(ctx, `SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED`, nil); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// now is the clock of a Store: UTC, at the microsecond precision
// DATETIME(6) keeps.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

// Close closes the Store's connections.
func (s *Store) Close() error {
	s.gc.Close()
	return s.db.Close()
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("mysql: ping: %w", err)
	}
	return nil
}

// migrateLockWait is how long one GET_LOCK call waits before Migrate checks
// its context and asks again.
const migrateLockWait = 1 // second

// Migrate applies the embedded migrations that schema_migrations does not
// list yet, in version order, while holding the named lock
// meridian/migrate/<md5 of the database name> on one session, so nodes that
// start at once apply each migration exactly once and the later ones find
// nothing to do. It is idempotent.
//
// MySQL commits DDL implicitly, so a migration's statements are applied one
// by one and the migration recorded after the last; the statements are
// written to be re-runnable, so after a failure Migrate completes the
// migration on its next run.
func (s *Store) Migrate(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	defer conn.Close()
	var lock string
	if err := conn.QueryRowContext(ctx, `SELECT CONCAT('meridian/migrate/', MD5(DATABASE()))`).Scan(&lock); err != nil {
		return fmt.Errorf("mysql: migrate: lock name: %w", err)
	}
	for {
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, ?)`, lock, migrateLockWait).Scan(&got); err != nil {
			return fmt.Errorf("mysql: migrate: lock: %w", err)
		}
		if !got.Valid {
			return errors.New("mysql: migrate: lock: GET_LOCK failed")
		}
		if got.Int64 == 1 {
			break
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("mysql: migrate: lock: %w", err)
		}
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.ExecContext(uctx, `DO RELEASE_LOCK(?)`, lock); err != nil {
			// Ending the session is what releases the lock now.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
	}()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT      NOT NULL PRIMARY KEY,
		name       TEXT        NOT NULL,
		applied_at DATETIME(6) NOT NULL
	) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	applied := map[int64]bool{}
	rows, err := conn.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("mysql: migrate: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("mysql: migrate: %w", err)
	}
	for _, m := range migs {
		if applied[m.Version] {
			continue
		}
		for _, stmt := range statements(m.SQL) {
			if _, err := conn.ExecContext(ctx, stmt); err != nil {
				return fmt.Errorf("mysql: migration %s: %w", m.Name, err)
			}
		}
		if _, err := conn.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, ts(s.now())); err != nil {
			return fmt.Errorf("mysql: migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// statements splits a migration into its statements: whole-line "--"
// comments are dropped and a statement ends with ';' at the end of a line.
func statements(src string) []string {
	var out []string
	var cur strings.Builder
	for line := range strings.Lines(src) {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		if strings.HasSuffix(trimmed, ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		out = append(out, rest)
	}
	return out
}

// commitThen wraps an error that write returns only after committing the
// transaction: a reuse detection must keep its revocation.
type commitThen struct{ err error }

func (c commitThen) Error() string { return c.err.Error() }
func (c commitThen) Unwrap() error { return c.err }

// maxAttempts bounds the runs of a transaction that InnoDB rolled back as a
// deadlock victim.
const maxAttempts = 5

// MySQL error numbers the store acts on.
const (
	errDupEntry = 1062 // ER_DUP_ENTRY
	errDeadlock = 1213 // ER_LOCK_DEADLOCK: the transaction was rolled back
)

// write runs fn in one transaction. It commits when fn returns nil or a
// commitThen and rolls back otherwise; a transaction that InnoDB rolled
// back as a deadlock victim is run again after a short random pause.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	for attempt := 1; ; attempt++ {
		err := s.writeOnce(ctx, fn)
		var me *mysql.MySQLError
		if attempt < maxAttempts && errors.As(err, &me) && me.Number == errDeadlock {
			pause := time.Duration(rand.Int64N(int64(attempt) * int64(2*time.Millisecond)))
			select {
			case <-ctx.Done():
				return err
			case <-time.After(pause):
			}
			continue
		}
		return err
	}
}

func (s *Store) writeOnce(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("mysql: begin: %w", err)
	}
	ferr := fn(tx)
	var ct commitThen
	if ferr != nil && !errors.As(ferr, &ct) {
		_ = tx.Rollback() // a failed rollback discards the connection
		return ferr
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("mysql: commit: %w", err)
	}
	if ferr != nil {
		return ct.err
	}
	return nil
}

// mapErr translates no-row and duplicate-key errors to the store's.
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var me *mysql.MySQLError
	if errors.As(err, &me) && me.Number == errDupEntry {
		return fmt.Errorf("%w: %w", store.ErrConflict, err)
	}
	return err
}

// wrap prefixes err with the operation, translating it with mapErr.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("mysql: %s: %w", op, mapErr(err))
}

// mustAffect returns store.ErrNotFound when res reports no matched row.
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
