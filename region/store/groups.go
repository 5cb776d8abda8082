package store

import "slices"

// MemberRows is what ScanMembers reads: a query's rows of (group id,
// member id), as *sql.Rows and pgx.Rows both provide. The caller closes
// them.
type MemberRows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanMembers collects rows of (group id, member id) into the member ids of
// each group, in the rows' order. Every backend's group queries read their
// memberships through it.
func ScanMembers(rows MemberRows) (map[string][]string, error) {
	out := map[string][]string{}
	for rows.Next() {
		var g, m string
		if err := rows.Scan(&g, &m); err != nil {
			return nil, err
		}
		out[g] = append(out[g], m)
	}
	return out, rows.Err()
}

// MemberSet returns the member ids a group stores for members: sorted,
// without duplicates, in a new slice (members is left as it is).
func MemberSet(members []string) []string {
	ms := slices.Clone(members)
	slices.Sort(ms)
	return slices.Compact(ms)
}
