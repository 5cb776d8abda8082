package region_test

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// twoStores opens two stores on one database, as two nodes of a region hold.
type twoStores func(t *testing.T) (store.Store, store.Store)

func twoSQLite(t *testing.T) (store.Store, store.Store) {
	path := filepath.Join(t.TempDir(), "region.db")
	open := func() store.Store {
		s, err := sqlite.Open(context.Background(), path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open()
}

func twoPostgres(t *testing.T) (store.Store, store.Store) {
	dsn := testenv.PostgresSchema(t)
	open := func() store.Store {
		s, err := postgres.Open(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	return open(), open()
}

func introspectActive(t *testing.T, n *testProvider, token string, c region.RegisteredClient) bool {
	t.Helper()
	status, _, body := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {token}}, c.ID, c.Secret)
	if status != 200 {
		t.Fatalf("introspect at %s: status %d", n.URL, status)
	}
	active, ok := body["active"].(bool)
	if !ok {
		t.Fatalf("introspect at %s: no active member in %v", n.URL, body)
	}
	return active
}

// TestRevocationBoundAcrossNodes: introspection answers from a short-lived
// cache of token lookups, and a token revoked at node A of a region is
// inactive at node B of the same database once region.TokenCacheTTL has
// passed since the revocation returned, and at A at once.
func TestRevocationBoundAcrossNodes(t *testing.T) {
	for _, tc := range []struct {
		name string
		open twoStores
	}{
		{"sqlite", twoSQLite},
		{"postgres", twoPostgres},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stA, stB := tc.open(t)
			a := startProvider(t, "eu", stA)
			b := startProvider(t, "eu", stB)
			c, err := region.CreateClient(t.Context(), stA, a.Codec, "eu", region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}})
			if err != nil {
				t.Fatal(err)
			}
			status, _, m := postForm(t, a.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, c.ID, c.Secret)
			if status != 200 {
				t.Fatalf("token at A: status %d", status)
			}
			tok := m["access_token"].(string)
			// Both nodes look the token up (and cache the lookup).
			for range 3 {
				if !introspectActive(t, a, tok, c) || !introspectActive(t, b, tok, c) {
					t.Fatal("fresh token inactive")
				}
			}
			if status, _, _ := postForm(t, a.URL+"/revoke", url.Values{"token": {tok}}, c.ID, c.Secret); status != 200 {
				t.Fatalf("revoke at A: status %d", status)
			}
			revoked := time.Now()
			if introspectActive(t, a, tok, c) {
				t.Fatal("revoked token active at the revoking node")
			}
			// The bound: every lookup B may still answer from was made
			// before the revocation returned, so once TokenCacheTTL has
			// passed since then B must read the revocation.
			time.Sleep(time.Until(revoked.Add(region.TokenCacheTTL)))
			if introspectActive(t, b, tok, c) {
				t.Fatalf("revoked token still active at node B %v after the revocation (bound %v)", time.Since(revoked), region.TokenCacheTTL)
			}
			if introspectActive(t, a, tok, c) {
				t.Fatal("revoked token active at A")
			}
		})
	}
}
