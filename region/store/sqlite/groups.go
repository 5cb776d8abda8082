package sqlite

import (
	"context"
	"database/sql"

	"github.com/meridian-id/meridian/region/store"
)

// nullable stores an empty string as NULL (a unique column that may be unset).
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

const groupCols = `id, display_name, external_id, created_at, updated_at, version`

func scanGroup(sc scanner) (store.Group, error) {
	var g store.Group
	var created, updated int64
	if err := sc.Scan(&g.ID, &g.DisplayName, &g.ExternalID, &created, &updated, &g.Version); err != nil {
		return store.Group{}, err
	}
	g.CreatedAt, g.UpdatedAt = fromMicros(created), fromMicros(updated)
	return g, nil
}

// members returns the sorted member ids of every group, by group id.
func (s *Store) members(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, where string, args ...any) (map[string][]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT group_id, member_id FROM scim_group_members `+where+` ORDER BY group_id, member_id`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return store.ScanMembers(rows)
}

func insertMembers(ctx context.Context, tx *sql.Tx, id string, members []string) error {
	for _, m := range store.MemberSet(members) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO scim_group_members (group_id, member_id) VALUES (?, ?)`, id, m); err != nil {
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
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO scim_groups (`+groupCols+`) VALUES (?, ?, ?, ?, ?, 1)`,
			g.ID, g.DisplayName, g.ExternalID, micros(g.CreatedAt), micros(g.UpdatedAt)); err != nil {
			return wrap("create group", err)
		}
		return wrap("create group", insertMembers(ctx, tx, g.ID, g.Members))
	})
}

// GetGroup returns the group with the given id and its members.
func (s *Store) GetGroup(ctx context.Context, id string) (store.Group, error) {
	g, err := scanGroup(s.queryRow(ctx, `SELECT `+groupCols+` FROM scim_groups WHERE id = ?`, id))
	if err != nil {
		return store.Group{}, wrap("get group", err)
	}
	ms, err := s.members(ctx, s.r, `WHERE group_id = ?`, id)
	g.Members = ms[id]
	return g, wrap("get group", err)
}

// ListGroups returns every group with its members, ordered by display name.
func (s *Store) ListGroups(ctx context.Context) ([]store.Group, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT `+groupCols+` FROM scim_groups ORDER BY display_name`)
	if err != nil {
		return nil, wrap("list groups", err)
	}
	var out []store.Group
	for rows.Next() {
		g, err := scanGroup(rows)
		if err != nil {
			rows.Close()
			return nil, wrap("list groups", err)
		}
		out = append(out, g)
	}
	if err := rows.Err(); err != nil {
		rows.Close()
		return nil, wrap("list groups", err)
	}
	rows.Close()
	ms, err := s.members(ctx, s.r, ``)
	for i := range out {
		out[i].Members = ms[out[i].ID]
	}
	return out, wrap("list groups", err)
}

// UpdateGroup replaces g's display name, external id and members (the
// creation time is kept). A non-zero g.Version must match the stored one
// (else store.ErrStale); the version is then incremented. A zero UpdatedAt
// is set to now.
func (s *Store) UpdateGroup(ctx context.Context, g store.Group) error {
	g.UpdatedAt = nowOr(g.UpdatedAt, s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		var version int64
		if err := tx.QueryRowContext(ctx, `SELECT version FROM scim_groups WHERE id = ?`, g.ID).Scan(&version); err != nil {
			return wrap("update group", err)
		}
		if g.Version != 0 && g.Version != version {
			return wrap("update group", store.ErrStale)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE scim_groups SET display_name = ?, external_id = ?, updated_at = ?, version = version + 1 WHERE id = ?`,
			g.DisplayName, g.ExternalID, micros(g.UpdatedAt), g.ID); err != nil {
			return wrap("update group", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM scim_group_members WHERE group_id = ?`, g.ID); err != nil {
			return wrap("update group", err)
		}
		return wrap("update group", insertMembers(ctx, tx, g.ID, g.Members))
	})
}

// DeleteGroup deletes the group with the given id and its memberships.
func (s *Store) DeleteGroup(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM scim_groups WHERE id = ?`, id)
		if err == nil {
			err = mustAffect(res)
		}
		if err != nil {
			return wrap("delete group", err)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM scim_group_members WHERE group_id = ?`, id)
		return wrap("delete group", err)
	})
}

// RevokeUserTokens revokes every token of the user and ends their sessions.
func (s *Store) RevokeUserTokens(ctx context.Context, userID string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		for _, q := range []string{
			`UPDATE access_tokens SET revoked = 1 WHERE subject = ?`,
			`UPDATE refresh_tokens SET revoked = 1 WHERE subject = ?`,
			`DELETE FROM sessions WHERE user_id = ?`,
		} {
			if _, err := tx.ExecContext(ctx, q, userID); err != nil {
				return wrap("revoke user tokens", err)
			}
		}
		return nil
	})
}
