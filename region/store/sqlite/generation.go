package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/meridian-id/meridian/region/store"
)

var _ store.Replication = (*Store)(nil)

// InRecovery is always false: a SQLite file has no standby.
func (s *Store) InRecovery(context.Context) (bool, error) { return false, nil }

// Promote does nothing: a SQLite file is always writable.
func (s *Store) Promote(context.Context) error { return nil }

// CheckSchema compares schema_migrations with the embedded migrations.
func (s *Store) CheckSchema(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	applied := map[int64]bool{}
	rows, err := s.r.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err == nil {
		defer rows.Close()
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				return fmt.Errorf("sqlite: check schema: %w", err)
			}
			applied[v] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("sqlite: check schema: %w", err)
		}
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return fmt.Errorf("sqlite: %w: migration %s is not applied", store.ErrSchemaNotCurrent, m.Name)
		}
	}
	return nil
}

const generationQuery = `SELECT generation, holder, fenced_by, fenced_holder, updated_at FROM federation_generation WHERE id = 1`

type rowScanner interface{ Scan(...any) error }

func scanGeneration(row rowScanner) (store.Generation, error) {
	var g store.Generation
	var at int64
	err := row.Scan(&g.Number, &g.Holder, &g.FencedBy, &g.FencedHolder, &at)
	g.UpdatedAt = fromMicros(at)
	return g, err
}

// Generation reads the fencing record.
func (s *Store) Generation(ctx context.Context) (store.Generation, error) {
	g, err := scanGeneration(s.r.QueryRowContext(ctx, generationQuery))
	return g, wrap("generation", err)
}

// ClaimGeneration advances the generation to holder unless holder has it.
func (s *Store) ClaimGeneration(ctx context.Context, holder string) (store.Generation, error) {
	var g store.Generation
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE federation_generation SET generation = generation + 1, holder = ?, updated_at = ?
			WHERE id = 1 AND holder <> ?`, holder, micros(s.now()), holder); err != nil {
			return err
		}
		var err error
		g, err = scanGeneration(tx.QueryRowContext(ctx, generationQuery))
		return err
	})
	return g, wrap("claim generation", err)
}

// Fence records the highest superseding generation.
func (s *Store) Fence(ctx context.Context, by int64, byHolder string) (store.Generation, error) {
	var g store.Generation
	err := s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `UPDATE federation_generation SET fenced_by = ?, fenced_holder = ?, updated_at = ?
			WHERE id = 1 AND fenced_by < ?`, by, byHolder, micros(s.now()), by); err != nil {
			return err
		}
		var err error
		g, err = scanGeneration(tx.QueryRowContext(ctx, generationQuery))
		return err
	})
	return g, wrap("fence", err)
}
