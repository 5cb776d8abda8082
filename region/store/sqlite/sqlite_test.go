package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/conformance"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

func open(t testing.TB, path string) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path)
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
	conformance.Run(t, func(t *testing.T) store.Store {
		return open(t, filepath.Join(t.TempDir(), "meridian.db"))
	})
}

// countMigrations reads schema_migrations through a separate connection.
func countMigrations(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "m.db")
	s := open(t, path)
	u := store.User{ID: "usr-1", Username: "ada", PasswordHash: "x"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	want := countMigrations(t, path)
	if want == 0 {
		t.Fatal("no migration recorded")
	}
	for range 3 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("second Migrate: %v", err)
		}
	}
	if got := countMigrations(t, path); got != want {
		t.Fatalf("%d migrations recorded after re-running Migrate, want %d", got, want)
	}
	if _, err := s.GetUserByID(ctx, u.ID); err != nil {
		t.Fatalf("data lost by re-running Migrate: %v", err)
	}
}

// TestConcurrentMigrate opens one file from several Stores (as several
// processes would) and migrates them all at once.
func TestConcurrentMigrate(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "m.db")
	const n = 4
	stores := make([]*sqlite.Store, n)
	for i := range stores {
		s, err := sqlite.Open(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		stores[i] = s
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range stores {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = s.Migrate(ctx)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := stores[0].CreateUser(ctx, store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
}

// TestReopen checks that what a Store committed is there for the next Store
// that opens the file.
func TestReopen(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "durable.db")
	s, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	u := store.User{ID: "usr-1", Username: "ada", PasswordHash: "h", Claims: map[string]string{"name": "Ada"}}
	at := store.AccessToken{Hash: store.Digest("tok"), ClientID: "cli", Subject: "usr-1", GrantID: "g-1",
		ExpiresAt: time.Now().Add(time.Hour)}
	rt := store.RefreshToken{Hash: store.Digest("ref"), GrantID: "g-1", ClientID: "cli", Subject: "usr-1",
		ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTokens(ctx, at, &rt); err != nil {
		t.Fatal(err)
	}
	next := store.RefreshToken{Hash: store.Digest("ref2"), ClientID: "cli", Subject: "usr-1", ExpiresAt: time.Now().Add(time.Hour)}
	if err := s.RotateRefreshToken(ctx, rt.Hash, store.AccessToken{Hash: store.Digest("tok2"), ExpiresAt: time.Now().Add(time.Hour)}, next); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := open(t, path) // Migrate on an up-to-date file is a no-op
	got, err := s2.GetUserByUsername(ctx, "ada")
	if err != nil {
		t.Fatalf("user lost across reopen: %v", err)
	}
	if got.Claims["name"] != "Ada" {
		t.Fatalf("claims %v after reopen", got.Claims)
	}
	old, err := s2.GetRefreshToken(ctx, rt.Hash)
	if err != nil || !old.Used {
		t.Fatalf("rotated token after reopen: %+v, %v", old, err)
	}
	if _, err := s2.GetRefreshToken(ctx, next.Hash); err != nil {
		t.Fatalf("successor lost across reopen: %v", err)
	}
	if e, err := s2.PendingOutbox(ctx, 10); err != nil || len(e) != 1 {
		t.Fatalf("outbox after reopen: %+v, %v", e, err)
	}
}

// TestNoBusyAcrossStores writes from two Stores on one file at once, as two
// processes would: BEGIN IMMEDIATE and busy_timeout make them wait for each
// other instead of failing with SQLITE_BUSY.
func TestNoBusyAcrossStores(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "shared.db")
	a := open(t, path)
	b := open(t, path)
	const workers, each = 8, 25
	var failures atomic.Int64
	var firstErr sync.Once
	var wg sync.WaitGroup
	for w := range workers {
		s := a
		if w%2 == 1 {
			s = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Rotation and revocation read before they write: the
				// pattern that fails with SQLITE_BUSY under deferred BEGIN.
				g := fmt.Sprintf("g-%d-%d", w, i)
				exp := time.Now().Add(time.Hour)
				at := store.AccessToken{Hash: store.Digest(g), ClientID: "cli", Subject: "usr", GrantID: g, ExpiresAt: exp}
				rt := store.RefreshToken{Hash: store.Digest("r" + g), GrantID: g, ClientID: "cli", Subject: "usr", ExpiresAt: exp}
				next := store.RefreshToken{Hash: store.Digest("n" + g), ClientID: "cli", Subject: "usr", ExpiresAt: exp}
				err := s.CreateTokens(ctx, at, &rt)
				if err == nil {
					_, err = s.GetAccessToken(ctx, at.Hash)
				}
				if err == nil {
					err = s.RotateRefreshToken(ctx, rt.Hash, store.AccessToken{Hash: store.Digest("a" + g), ExpiresAt: exp}, next)
				}
				if err == nil {
					err = s.RevokeRefreshToken(ctx, next.Hash)
				}
				if err != nil {
					failures.Add(1)
					firstErr.Do(func() { t.Errorf("write from worker %d: %v", w, err) })
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d operations failed", n, workers*each)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := sqlite.Open(t.Context(), ""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
	if _, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "missing-dir", "x.db")); err == nil {
		t.Fatal("Open in a missing directory succeeded")
	}
	odd := filepath.Join(t.TempDir(), "odd ?#% name.db")
	s := open(t, odd)
	for _, f := range []string{odd, odd + "-wal"} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if mode := fi.Mode().Perm(); mode&0o077 != 0 {
			t.Fatalf("%s has mode %v, want no access for group and others", filepath.Base(f), mode)
		}
	}
	if err := s.CreateUser(t.Context(), store.User{ID: "u", Username: "u"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.CreateUser(ctx, store.User{ID: "v", Username: "v"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("write with a cancelled context: %v", err)
	}
}

func BenchmarkCreateAccessToken(b *testing.B) {
	conformance.BenchmarkCreateAccessToken(b, func(b testing.TB) store.Store { return open(b, filepath.Join(b.TempDir(), "bench.db")) })
}

func BenchmarkGetAccessToken(b *testing.B) {
	conformance.BenchmarkGetAccessToken(b, func(b testing.TB) store.Store { return open(b, filepath.Join(b.TempDir(), "bench.db")) })
}

// TestDropFederatedClaims runs migration 0012 over rows written before it.
func TestDropFederatedClaims(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meridian.db")
	s := open(t, path)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
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
		exec(`INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES (?, ?, ?, ?)`,
			grant, home, `{"email":"someone@example.org"}`, time.Now().Add(time.Hour).UnixMicro())
	}, func() { exec(string(drop)) }, func() bool {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM sqlite_master WHERE name = 'federated_claims'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}

// TestCloseTwice: a store closed by a test that takes its database down
// and again by its cleanup must not panic, and its calls fail afterwards.
func TestCloseTwice(t *testing.T) {
	s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "twice.db"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s.Close()
	if err := s.Ping(context.Background()); err == nil {
		t.Fatal("ping after Close succeeded")
	}
}

// TestTokenLookupsUseIndexes: every way the store finds tokens (by digest,
// grant, subject, client, expiry) reads an index, never the whole table:
// a region holds millions of tokens and these run in the single writer's
// transaction. 0018 rebuilt access_tokens without the client_id index
// DeleteClient reads; 0019 restores it.
func TestTokenLookupsUseIndexes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meridian.db")
	open(t, path)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, table := range []string{"access_tokens", "refresh_tokens"} {
		for _, where := range []string{
			"hash = ?",
			"grant_id = ? AND revoked = 0",
			"subject = ?",
			"revoked = 0 AND subject = ? AND client_id = ?",
			"client_id = ? AND revoked = 0",
			"expires_at <= ?",
		} {
			q := "EXPLAIN QUERY PLAN UPDATE " + table + " SET revoked = 1 WHERE " + where
			rows, err := db.QueryContext(t.Context(), q, "x", "y")
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			var plan []string
			for rows.Next() {
				var id, parent, unused int
				var detail string
				if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
					t.Fatal(err)
				}
				plan = append(plan, detail)
			}
			rows.Close()
			if len(plan) == 0 || !strings.Contains(strings.Join(plan, "; "), "USING") {
				t.Errorf("%s WHERE %s: plan %q reads no index", table, where, plan)
			}
		}
	}
}
