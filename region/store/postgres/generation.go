package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

var _ store.Replication = (*Store)(nil)

// InRecovery reports whether the server is a streaming standby.
func (s *Store) InRecovery(ctx context.Context) (bool, error) {
	var in bool
	err := s.read(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pg_is_in_recovery()`).Scan(&in)
	})
	if err != nil {
		return false, fmt.Errorf("postgres: pg_is_in_recovery: %w", err)
	}
	return in, nil
}

// Promote promotes a standby with pg_promote(wait => true) and checks that
// it left recovery.
func (s *Store) Promote(ctx context.Context) error {
	in, err := s.InRecovery(ctx)
	if err != nil || !in {
		return err
	}
	var ok bool
	err = s.read(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok)
	})
	if err != nil {
		return fmt.Errorf("postgres: pg_promote: %w", err)
	}
	if !ok {
		return fmt.Errorf("postgres: pg_promote: the standby did not leave recovery within 60s")
	}
	return nil
}

// CheckSchema compares schema_migrations with the embedded migrations
// without writing anything, so it runs on a standby.
func (s *Store) CheckSchema(ctx context.Context) error {
	migs, err := store.LoadMigrations(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	var versions []int64
	err = s.read(ctx, func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return nil
		}
		rows, err := c.Query(ctx, `SELECT version FROM schema_migrations`)
		if err != nil {
			return err
		}
		versions, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: check schema: %w", err)
	}
	applied := map[int64]bool{}
	for _, v := range versions {
		applied[v] = true
	}
	for _, m := range migs {
		if !applied[m.Version] {
			return fmt.Errorf("postgres: %w: migration %s is not applied (a standby gets it from its primary)", store.ErrSchemaNotCurrent, m.Name)
		}
	}
	return nil
}

const generationColumns = `generation, holder, fenced_by, fenced_holder, updated_at`

func scanGeneration(row pgx.Row) (store.Generation, error) {
	var g store.Generation
	err := row.Scan(&g.Number, &g.Holder, &g.FencedBy, &g.FencedHolder, &g.UpdatedAt)
	g.UpdatedAt = g.UpdatedAt.UTC()
	return g, err
}

// Generation reads the fencing record.
func (s *Store) Generation(ctx context.Context) (store.Generation, error) {
	var g store.Generation
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		g, err = scanGeneration(c.QueryRow(ctx, `SELECT `+generationColumns+` FROM federation_generation WHERE id = 1`))
		return err
	})
	return g, wrap("generation", err)
}

// ClaimGeneration advances the generation to holder unless holder has it;
// the row lock of the UPDATE serializes concurrent claims.
func (s *Store) ClaimGeneration(ctx context.Context, holder string) (store.Generation, error) {
	var g store.Generation
	err := s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE federation_generation SET generation = generation + 1, holder = $1, updated_at = $2
			WHERE id = 1 AND holder <> $1`, holder, s.now()); err != nil {
			return err
		}
		var err error
		g, err = scanGeneration(tx.QueryRow(ctx, `SELECT `+generationColumns+` FROM federation_generation WHERE id = 1`))
		return err
	})
	return g, wrap("claim generation", err)
}

// Fence records the highest superseding generation.
func (s *Store) Fence(ctx context.Context, by int64, byHolder string) (store.Generation, error) {
	var g store.Generation
	err := s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE federation_generation SET fenced_by = $1, fenced_holder = $2, updated_at = $3
			WHERE id = 1 AND fenced_by < $1`, by, byHolder, s.now()); err != nil {
			return err
		}
		var err error
		g, err = scanGeneration(tx.QueryRow(ctx, `SELECT `+generationColumns+` FROM federation_generation WHERE id = 1`))
		return err
	})
	return g, wrap("fence", err)
}
