package postgres_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/conformance"
	"github.com/meridian-id/meridian/region/store/postgres"
)

// schema gives each test a schema of its own on the real PostgreSQL.
func schema(t testing.TB) string { return testenv.PostgresSchema(t) }

// open opens a Store on dsn, closed when the test ends (before its schema
// is dropped), and migrates it.
func open(t testing.TB, dsn string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if err := s.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) store.Store { return open(t, schema(t)) })
}

func countMigrations(t *testing.T, dsn string) int {
	t.Helper()
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(t.Context())
	var n int
	if err := c.QueryRow(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := t.Context()
	dsn := schema(t)
	s := open(t, dsn)
	if err := s.CreateUser(ctx, store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
	want := countMigrations(t, dsn)
	if want == 0 {
		t.Fatal("no migration recorded")
	}
	for range 3 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("re-running Migrate: %v", err)
		}
	}
	if got := countMigrations(t, dsn); got != want {
		t.Fatalf("%d migrations recorded after re-running Migrate, want %d", got, want)
	}
	if _, err := s.GetUserByID(ctx, "usr-1"); err != nil {
		t.Fatalf("data lost by re-running Migrate: %v", err)
	}
}

// TestConcurrentMigrate starts several nodes on one empty schema at once.
func TestConcurrentMigrate(t *testing.T) {
	ctx := t.Context()
	dsn := schema(t)
	const nodes = 6
	stores := make([]*postgres.Store, nodes)
	for i := range stores {
		s, err := postgres.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores[i] = s
	}
	errs := make([]error, nodes)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.Migrate(ctx)
		}()
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	ref := schema(t) // migrated alone, for the expected count
	open(t, ref)
	if got, want := countMigrations(t, dsn), countMigrations(t, ref); got != want {
		t.Fatalf("%d migrations recorded, want %d", got, want)
	}
	if err := stores[nodes-1].CreateUser(ctx, store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
}

// TestSharedDatabase runs two Stores (two nodes) on one schema: what one
// commits the other sees, and a code redeemed through one is reuse for the
// other.
func TestSharedDatabase(t *testing.T) {
	ctx := t.Context()
	dsn := schema(t)
	a, b := open(t, dsn), open(t, dsn)
	r := store.AuthRequest{ID: "ar-1", ClientID: "cli", UserID: "usr", Done: true, ExpiresAt: time.Now().Add(time.Minute)}
	if err := a.CreateAuthRequest(ctx, r); err != nil {
		t.Fatal(err)
	}
	code := store.Digest("code")
	if err := b.SaveCode(ctx, r.ID, code); err != nil {
		t.Fatal(err)
	}
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 10 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.RedeemCode(ctx, code); err == nil {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d redemptions across two nodes succeeded, want 1", n)
	}
}

func TestOpenErrors(t *testing.T) {
	dsn := schema(t)
	if _, err := postgres.Open(t.Context(), "postgres://%zz"); err == nil {
		t.Fatal("Open of a malformed URL succeeded")
	}
	u, _ := url.Parse(dsn)
	q := u.Query()
	q.Set("pool_max_conns", "0")
	u.RawQuery = q.Encode()
	if _, err := postgres.Open(t.Context(), u.String()); err == nil {
		t.Fatal("Open with pool_max_conns=0 succeeded")
	}
	q.Set("pool_max_conns", "2")
	u.RawQuery = q.Encode()
	s := open(t, u.String())
	// More concurrent callers than connections queue instead of failing.
	var wg sync.WaitGroup
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.CreateUser(t.Context(), store.User{ID: fmt.Sprint("usr-", i), Username: fmt.Sprint("user-", i)})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Ping(ctx); err == nil {
		t.Fatal("Ping with a cancelled context succeeded")
	}
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping after a cancelled call: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(t.Context()); err == nil {
		t.Fatal("Ping after Close succeeded")
	}
}

func BenchmarkCreateAccessToken(b *testing.B) {
	conformance.BenchmarkCreateAccessToken(b, func(b testing.TB) store.Store { return open(b, schema(b)) })
}

func BenchmarkGetAccessToken(b *testing.B) {
	conformance.BenchmarkGetAccessToken(b, func(b testing.TB) store.Store { return open(b, schema(b)) })
}

// TestDropFederatedClaims runs migration 0012 over rows written before it.
func TestDropFederatedClaims(t *testing.T) {
	dsn := schema(t)
	s := open(t, dsn)
	c, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := c.Exec(t.Context(), q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	create, err := os.ReadFile("migrations/0002_federated_claims.sql")
	if err != nil {
		t.Fatal(err)
	}
	drop, err := os.ReadFile("migrations/0012_drop_federated_claims.sql")
	if err != nil {
		t.Fatal(err)
	}
	conformance.FederatedClaimsMigration(t, s, func(grant, home string) {
		exec(string(create)) // the table as 0002 made it (0012 dropped it)
		exec(`INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES ($1, $2, $3, $4)`,
			grant, home, `{"email":"someone@example.org"}`, time.Now().Add(time.Hour))
	}, func() { exec(string(drop)) }, func() bool {
		var n int
		if err := c.QueryRow(t.Context(), `SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'federated_claims'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}
