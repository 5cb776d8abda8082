package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

// nullable stores an empty string as NULL (a unique column that may be unset).
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

const groupCols = `id, display_name, external_id, created_at, updated_at, version`

func scanGroup(row pgx.Row) (store.Group, error) {
	var g store.Group
	if err := row.Scan(&g.ID, &g.DisplayName, &g.ExternalID, &g.CreatedAt, &g.UpdatedAt, &g.Version); err != nil {
		return store.Group{}, err
	}
	g.CreatedAt, g.UpdatedAt = utc(g.CreatedAt), utc(g.UpdatedAt)
	return g, nil
}

// members returns the sorted member ids of the groups the query selects, by group id.
func members(ctx context.Context, c *pgx.Conn, where string, args ...any) (map[string][]string, error) {
	rows, err := c.Query(ctx, `SELECT group_id, member_id FROM scim_group_members `+where+` ORDER BY group_id, member_id COLLATE "C"`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return store.ScanMembers(rows)
}

func insertMembers(ctx context.Context, tx pgx.Tx, id string, ms []string) error {
	for _, m := range store.MemberSet(ms) {
		if _, err := tx.Exec(ctx, `INSERT INTO scim_group_members (group_id, member_id) VALUES ($1, $2)`, id, m); err != nil {
			return err
		}
	}
	return nil
}

// CreateGroup inserts g with version 1; a zero CreatedAt is set to now and
// a zero UpdatedAt to CreatedAt. A taken id or display name gives
// store.ErrConflict.
func (s *Store) CreateGroup(ctx context.Context, g store.Group) error {
	g.CreatedAt = nowOr(g.CreatedAt, s.now())
	g.UpdatedAt = nowOr(g.UpdatedAt, g.CreatedAt)
	return s.write(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO scim_groups (`+groupCols+`) VALUES ($1, $2, $3, $4, $5, 1)`,
			g.ID, g.DisplayName, g.ExternalID, g.CreatedAt, g.UpdatedAt); err != nil {
			return wrap("create group", err)
		}
		return wrap("create group", insertMembers(ctx, tx, g.ID, g.Members))
	})
}

// GetGroup returns the group with the given id and its members.
func (s *Store) GetGroup(ctx context.Context, id string) (store.Group, error) {
	var g store.Group
	err := s.read(ctx, func(c *pgx.Conn) error {
		var err error
		if g, err = scanGroup(c.QueryRow(ctx, `SELECT `+groupCols+` FROM scim_groups WHERE id = $1`, id)); err != nil {
			return wrap("get group", err)
		}
		ms, err := members(ctx, c, `WHERE group_id = $1`, id)
		g.Members = ms[id]
		return wrap("get group", err)
	})
	return g, err
}

// ListGroups returns every group with its members, ordered by display name.
func (s *Store) ListGroups(ctx context.Context) ([]store.Group, error) {
	var out []store.Group
	err := s.read(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+groupCols+` FROM scim_groups ORDER BY display_name COLLATE "C"`)
		if err != nil {
			return wrap("list groups", err)
		}
		if out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Group, error) { return scanGroup(r) }); err != nil {
			return wrap("list groups", err)
		}
		ms, err := members(ctx, c, ``)
		for i := range out {
			out[i].Members = ms[out[i].ID]
		}
		return wrap("list groups", err)
	})
	return out, err
}

// UpdateGroup replaces g's display name, external id and members (the
// creation time is kept). A non-zero g.Version must match the stored one
// (else store.ErrStale); the version is then incremented. A zero UpdatedAt
// is set to now.
func (s *Store) UpdateGroup(ctx context.Context, g store.Group) error {
	g.UpdatedAt = nowOr(g.UpdatedAt, s.now())
	return s.write(ctx, func(tx pgx.Tx) error {
		var version int64
		if err := tx.QueryRow(ctx, `SELECT version FROM scim_groups WHERE id = $1 FOR UPDATE`, g.ID).Scan(&version); err != nil {
			return wrap("update group", err)
		}
		if g.Version != 0 && g.Version != version {
			return wrap("update group", store.ErrStale)
		}
		if _, err := tx.Exec(ctx, `UPDATE scim_groups SET display_name = $1, external_id = $2, updated_at = $3, version = version + 1 WHERE id = $4`,
			g.DisplayName, g.ExternalID, g.UpdatedAt, g.ID); err != nil {
			return wrap("update group", err)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM scim_group_members WHERE group_id = $1`, g.ID); err != nil {
			return wrap("update group", err)
		}
		return wrap("update group", insertMembers(ctx, tx, g.ID, g.Members))
	})
}

// DeleteGroup deletes the group with the given id; its memberships go with it.
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		return wrap("delete group", mustAffect(tx.Exec(ctx, `DELETE FROM scim_groups WHERE id = $1`, id)))
	})
}

// RevokeUserTokens revokes every token of the user and ends their sessions.
func (s *Store) RevokeUserTokens(ctx context.Context, userID string) error {
	return s.write(ctx, func(tx pgx.Tx) error {
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = true WHERE subject = $1`,
			`UPDATE refresh_tokens SET revoked = true WHERE subject = $1`,
			`DELETE FROM sessions WHERE user_id = $1`,
		} {
			if _, err := tx.Exec(ctx, q, userID); err != nil {
				return wrap("revoke user tokens", err)
			}
		}
		return nil
	})
}
