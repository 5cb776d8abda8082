package sqlite

import (
	"context"
	"database/sql"

	"github.com/meridian-id/meridian/region/store"
)

// SaveFederatedClaims inserts c, or replaces the claims saved for the same
// GrantID.
func (s *Store) SaveFederatedClaims(ctx context.Context, c store.FederatedClaims) error {
	var e enc
	claims := e.claims(c.Claims)
	if e.err != nil {
		return wrap("save federated claims", e.err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES (?, ?, ?, ?)
			ON CONFLICT (grant_id) DO UPDATE SET home_region = excluded.home_region, claims = excluded.claims,
				expires_at = excluded.expires_at`,
			c.GrantID, c.HomeRegion, claims, micros(c.ExpiresAt))
		return wrap("save federated claims", err)
	})
}

// GetFederatedClaims returns the claims saved for grantID; absent or
// expired claims give store.ErrNotFound.
func (s *Store) GetFederatedClaims(ctx context.Context, grantID string) (store.FederatedClaims, error) {
	var c store.FederatedClaims
	var claims string
	var expires int64
	err := s.queryRow(ctx, `SELECT grant_id, home_region, claims, expires_at FROM federated_claims
		WHERE grant_id = ? AND expires_at > ?`, grantID, micros(s.now())).Scan(&c.GrantID, &c.HomeRegion, &claims, &expires)
	if err != nil {
		return store.FederatedClaims{}, wrap("get federated claims", err)
	}
	var d dec
	c.Claims = d.claims(claims)
	c.ExpiresAt = fromMicros(expires)
	if d.err != nil {
		return store.FederatedClaims{}, wrap("get federated claims", d.err)
	}
	return c, nil
}
