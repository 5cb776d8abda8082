package postgres

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/region/store"
)

// SaveFederatedClaims inserts c, or replaces the claims saved for the same
// GrantID.
func (s *Store) SaveFederatedClaims(ctx context.Context, c store.FederatedClaims) error {
	cl, err := claims(c.Claims)
	if err != nil {
		return wrap("save federated claims", err)
	}
	return s.write(ctx, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES ($1, $2, $3, $4)
			ON CONFLICT (grant_id) DO UPDATE SET home_region = excluded.home_region, claims = excluded.claims,
				expires_at = excluded.expires_at`,
			c.GrantID, c.HomeRegion, cl, c.ExpiresAt)
		return wrap("save federated claims", err)
	})
}

// GetFederatedClaims returns the claims saved for grantID; absent or
// expired claims give store.ErrNotFound.
func (s *Store) GetFederatedClaims(ctx context.Context, grantID string) (store.FederatedClaims, error) {
	var c store.FederatedClaims
	err := s.read(ctx, func(conn *pgx.Conn) error {
		var cl []byte
		err := conn.QueryRow(ctx, `SELECT grant_id, home_region, claims, expires_at FROM federated_claims
			WHERE grant_id = $1 AND expires_at > $2`, grantID, s.now()).Scan(&c.GrantID, &c.HomeRegion, &cl, &c.ExpiresAt)
		if err != nil {
			return wrap("get federated claims", err)
		}
		c.ExpiresAt = utc(c.ExpiresAt)
		c.Claims, err = unclaims(cl)
		return wrap("get federated claims", err)
	})
	if err != nil {
		return store.FederatedClaims{}, err
	}
	return c, nil
}
