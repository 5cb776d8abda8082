package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/go-sql-driver/mysql"

	"github.com/meridian-id/meridian/region/store"
)

var _ store.Replication = (*Store)(nil)

// MySQL error numbers of the replication statements.
const (
	errParse            = 1064 // ER_PARSE_ERROR: STOP REPLICA before MySQL 8.0.22 / MariaDB 10.5.1
	errBadSlave         = 1200 // ER_BAD_SLAVE: the server is not configured as a replica
	errSlaveNotRunning  = 1255 // ER_SLAVE_WAS_NOT_RUNNING
	errNoMasterConn     = 1617 // MariaDB: there is no master connection ''
	errNoReplicaChannel = 3074 // MySQL: replication channel does not exist
	errAccessDenied     = 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR: SUPER or an *_ADMIN privilege missing
)

// InRecovery reports whether the server is read-only, as a replica is kept
// until its promotion: @@global.read_only or (MySQL only; MariaDB has no
// such variable) @@global.super_read_only is on. MariaDB 11's other
// read_only values (NO_LOCK, NO_LOCK_NO_ADMIN) are read-only too.
//
// A replica left writable counts as writable: the store cannot tell it
// from a primary, and a node would migrate and write on it.
func (s *Store) InRecovery(ctx context.Context) (bool, error) {
	rows, err := s.db.QueryContext(ctx, `SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only', 'super_read_only')`)
	if err != nil {
		return false, fmt.Errorf("mysql: read_only: %w", err)
	}
	defer rows.Close()
	in, seen := false, false
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return false, fmt.Errorf("mysql: read_only: %w", err)
		}
		seen = seen || strings.EqualFold(name, "read_only")
		switch strings.ToUpper(value) {
		case "OFF", "0", "":
		default:
			in = true
		}
	}
	if err := rows.Err(); err != nil {
		return false, fmt.Errorf("mysql: read_only: %w", err)
	}
	if !seen {
		return false, errors.New("mysql: read_only: the server did not report @@global.read_only")
	}
	return in, nil
}

// Promote makes a read-only replica the writable database: it stops
// replication and forgets the replica's source (STOP REPLICA, RESET
// REPLICA ALL — so a restart of the server does not resume replicating
// from the old primary; "not a replica" is no error), then turns
// read_only (and with it MySQL's super_read_only) off, and checks that the
// server is writable. On a writable server it does nothing.
//
// It needs administrative privileges the store's usual account should not
// have: SUPER, or on MySQL 8 SYSTEM_VARIABLES_ADMIN and
// REPLICATION_SLAVE_ADMIN, on MariaDB 10.5.2+ READ_ONLY ADMIN and
// REPLICATION SLAVE ADMIN. Without them it fails and changes nothing that
// a second run with them would not redo. It does not make the change
// survive a restart of the server: set read_only=OFF in its configuration.
// Only the default replication connection is stopped (not MariaDB's named
// multi-source connections).
func (s *Store) Promote(ctx context.Context) error {
	in, err := s.InRecovery(ctx)
	if err != nil || !in {
		return err
	}
	for _, stmt := range [][2]string{
		{`STOP REPLICA`, `STOP SLAVE`},
		{`RESET REPLICA ALL`, `RESET SLAVE ALL`},
	} {
		if err := s.replicaStatement(ctx, stmt[0], stmt[1]); err != nil {
			return err
		}
	}
	if _, err := s.db.ExecContext(ctx, `SET GLOBAL read_only = OFF`); err != nil {
		return promoteErr("SET GLOBAL read_only = OFF", err)
	}
	in, err = s.InRecovery(ctx)
	if err != nil {
		return err
	}
	if in {
		// MySQL turns super_read_only off with read_only; say so if not.
		return errors.New("mysql: promote: the server is still read-only after SET GLOBAL read_only = OFF")
	}
	return nil
}

// replicaStatement runs stmt, or old (its pre-MySQL 8.0.22 / MariaDB 10.5.1
// spelling) when the server does not know stmt; a server that is no
// replica is no error.
func (s *Store) replicaStatement(ctx context.Context, stmt, old string) error {
	_, err := s.db.ExecContext(ctx, stmt)
	if myErr(err) == errParse {
		stmt = old
		_, err = s.db.ExecContext(ctx, stmt)
	}
	switch myErr(err) {
	case 0:
		if err != nil {
			return promoteErr(stmt, err)
		}
		return nil
	case errBadSlave, errSlaveNotRunning, errNoMasterConn, errNoReplicaChannel:
		return nil
	default:
		return promoteErr(stmt, err)
	}
}

func promoteErr(stmt string, err error) error {
	if myErr(err) == errAccessDenied {
		return fmt.Errorf("mysql: promote: %s needs an administrative account (SUPER or the *_ADMIN privileges, see docs/operations.md): %w", stmt, err)
	}
	return fmt.Errorf("mysql: promote: %s: %w", stmt, err)
}

// myErr is the server's error number of err, 0 when err is nil or not a
// server error.
func myErr(err error) uint16 {
	var me *mysql.MySQLError
	if errors.As(err, &me) {
		return me.Number
	}
	return 0
}

// CheckSchema compares schema_migrations with the embedded migrations
// without writing anything, so it runs on a read-only replica.
func (s *Store) CheckSchema(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	applied := map[int64]bool{}
	var exists bool
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) > 0 FROM information_schema.tables
		WHERE table_schema = DATABASE() AND table_name = 'schema_migrations'`).Scan(&exists)
	if err != nil {
		return fmt.Errorf("mysql: check schema: %w", err)
	}
	if exists {
		rows, err := s.db.QueryContext(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return fmt.Errorf("mysql: check schema: %w", err)
		}
		defer rows.Close()
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				return fmt.Errorf("mysql: check schema: %w", err)
			}
			applied[v] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("mysql: check schema: %w", err)
		}
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return fmt.Errorf("mysql: %w: migration %s is not applied (a replica gets it from its source)", store.ErrSchemaNotCurrent, m.Name)
		}
	}
	return nil
}

const generationColumns = `generation, holder, fenced_by, fenced_holder, updated_at`

type queryRower interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func readGeneration(ctx context.Context, q queryRower) (store.Generation, error) {
	var g store.Generation
	err := q.QueryRowContext(ctx, `SELECT `+generationColumns+` FROM federation_generation WHERE id = 1`).
		Scan(&g.Number, &g.Holder, &g.FencedBy, &g.FencedHolder, timeCol{&g.UpdatedAt})
	return g, err
}

// Generation reads the fencing record.
func (s *Store) Generation(ctx context.Context) (store.Generation, error) {
	g, err := readGeneration(ctx, s.db)
	return g, wrap("generation", err)
}

// errReadOnly is returned by ClaimGeneration and Fence on a read-only
// server: an account with SUPER (or READ_ONLY ADMIN) could write there,
// but a replica must not take part in fencing, as on PostgreSQL, where a
// standby refuses every write.
var errReadOnly = errors.New("the server is read-only (a replica)")

// ClaimGeneration advances the generation to holder unless holder has it.
// The UPDATE's exclusive row lock serializes concurrent claims: at READ
// COMMITTED a claimer that waited for the lock re-reads the committed row,
// finds holder there and changes nothing.
func (s *Store) ClaimGeneration(ctx context.Context, holder string) (store.Generation, error) {
	if in, err := s.InRecovery(ctx); err != nil || in {
		if err == nil {
			err = errReadOnly
		}
		return store.Generation{}, wrap("claim generation", err)
	}
	var g store.Generation
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE federation_generation SET generation = generation + 1, holder = ?, updated_at = ?
			WHERE id = 1 AND holder <> ?`, holder, ts(s.now()), holder); err != nil {
			return err
		}
		var err error
		g, err = readGeneration(ctx, tx)
		return err
	})
	return g, wrap("claim generation", err)
}

// Fence records the highest superseding generation.
func (s *Store) Fence(ctx context.Context, by int64, byHolder string) (store.Generation, error) {
	if in, err := s.InRecovery(ctx); err != nil || in {
		if err == nil {
			err = errReadOnly
		}
		return store.Generation{}, wrap("fence", err)
	}
	var g store.Generation
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE federation_generation SET fenced_by = ?, fenced_holder = ?, updated_at = ?
			WHERE id = 1 AND fenced_by < ?`, by, byHolder, ts(s.now()), by); err != nil {
			return err
		}
		var err error
		g, err = readGeneration(ctx, tx)
		return err
	})
	return g, wrap("fence", err)
}
