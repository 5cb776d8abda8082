package mysql

import (
	"context"
	"database/sql"

	"github.com/meridian-id/meridian/region/store"
)

// SaveFederatedClaims inserts c, or replaces the claims saved for the same
// GrantID.
func (s *Store) SaveFederatedClaims(ctx context.Context, c store.FederatedClaims) error {
	cl, err := claims(c.Claims)
	if err != nil {
		return wrap("save federated claims", err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES (?, ?, ?, ?)
			ON DUPLICATE KEY UPDATE home_region = VALUES(home_region), claims = VALUES(claims), expires_at = VALUES(expires_at)`,
			c.GrantID, c.HomeRegion, cl, ts(c.ExpiresAt))
		return wrap("save federated claims", err)
	})
}

// GetFederatedClaims returns the claims saved for grantID; absent or
// expired claims give store.ErrNotFound.
func (s *Store) GetFederatedClaims(ctx context.Context, grantID string) (store.FederatedClaims, error) {
	var c store.FederatedClaims
	var cl []byte
	err := s.db.QueryRowContext(ctx, `SELECT grant_id, home_region, claims, expires_at FROM federated_claims
		WHERE grant_id = ? AND expires_at > ?`, grantID, ts(s.now())).Scan(&c.GrantID, &c.HomeRegion, &cl, timeCol{&c.ExpiresAt})
	if err != nil {
		return store.FederatedClaims{}, wrap("get federated claims", err)
	}
	if c.Claims, err = unclaims(cl); err != nil {
		return store.FederatedClaims{}, wrap("get federated claims", err)
	}
	return c, nil
}
