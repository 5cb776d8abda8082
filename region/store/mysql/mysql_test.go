package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/conformance"
	"github.com/meridian-id/meridian/region/store/mysql"
)

// database gives each test a database of its own on the real MySQL/MariaDB.
func database(t testing.TB) string { return testenv.MySQLDatabase(t) }

// open opens a Store on dsn, closed when the test ends (before its
// database is dropped), and migrates it.
func open(t testing.TB, dsn string) *mysql.Store {
	t.Helper()
	s, err := mysql.Open(context.Background(), dsn)
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
	conformance.Run(t, func(t *testing.T) store.Store { return open(t, database(t)) })
}

// rawDB opens a plain driver connection pool on dsn for inspecting tables.
func rawDB(t *testing.T, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func countMigrations(t *testing.T, dsn string) int {
	t.Helper()
	var n int
	if err := rawDB(t, dsn).QueryRowContext(t.Context(), `SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMigrateIdempotent(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
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

// TestMigrateResumes: MySQL commits DDL implicitly, so a migration that
// died half-way leaves some of its tables behind without being recorded.
// The next Migrate must complete it.
func TestMigrateResumes(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
	open(t, dsn)
	db := rawDB(t, dsn)
	for _, q := range []string{
		`DROP TABLE totp_steps`,
		`DROP TABLE signing_keys`,
		`DELETE FROM schema_migrations`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	if err := s.AddSigningKey(ctx, store.SigningKey{ID: "k1", Algorithm: "ES256", PrivateDER: []byte{1}, Active: true}); err != nil {
		t.Fatal(err)
	}
	// totp_steps, dropped above, is back.
	if err := s.CreateUser(ctx, store.User{ID: "usr-1", Username: "ada", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcceptTOTPStep(ctx, "usr-1", 1); err != nil || !ok {
		t.Fatalf("totp_steps after the resumed migration: %v %v", ok, err)
	}
}

// TestConcurrentMigrate starts several nodes on one empty database at once:
// the named lock serializes them and each migration is applied once.
func TestConcurrentMigrate(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
	const nodes = 6
	stores := make([]*mysql.Store, nodes)
	for i := range stores {
		s, err := mysql.Open(ctx, dsn)
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
	ref := database(t) // migrated alone, for the expected count
	open(t, ref)
	if got, want := countMigrations(t, dsn), countMigrations(t, ref); got != want {
		t.Fatalf("%d migrations recorded, want %d", got, want)
	}
	if err := stores[nodes-1].CreateUser(ctx, store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateWaitsForLock: while another session holds the migration lock,
// Migrate waits, and gives up when its context ends.
func TestMigrateWaitsForLock(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
	s := open(t, dsn)
	db := rawDB(t, dsn)
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got int
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(CONCAT('meridian/migrate/', MD5(DATABASE())), 0)`).Scan(&got); err != nil || got != 1 {
		t.Fatalf("taking the lock: %v, %d", err, got)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if err := s.Migrate(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Migrate while the lock is held = %v, want the context's deadline", err)
	}
	if _, err := conn.ExecContext(ctx, `DO RELEASE_LOCK(CONCAT('meridian/migrate/', MD5(DATABASE())))`); err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate after the lock was released: %v", err)
	}
}

// TestSharedDatabase runs two Stores (two nodes) on one database: what one
// commits the other sees, and a code redeemed through one is reuse for the
// other.
func TestSharedDatabase(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
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

// TestByteKeys: ids, usernames and digests compare as bytes. utf8mb4_bin
// alone would treat "ada" and "ada " as equal (PAD SPACE on MariaDB and
// MySQL 5.7) and "Ada" and "ada" as distinct; VARBINARY keys make both
// distinct, as in SQLite and PostgreSQL.
func TestByteKeys(t *testing.T) {
	ctx := t.Context()
	s := open(t, database(t))
	for i, name := range []string{"ada", "ada ", "Ada", "ädä"} {
		if err := s.CreateUser(ctx, store.User{ID: fmt.Sprint("usr-", i), Username: name}); err != nil {
			t.Fatalf("CreateUser(%q): %v", name, err)
		}
	}
	for i, name := range []string{"ada", "ada ", "Ada", "ädä"} {
		u, err := s.GetUserByUsername(ctx, name)
		if err != nil || u.ID != fmt.Sprint("usr-", i) {
			t.Fatalf("GetUserByUsername(%q) = %q, %v; want usr-%d", name, u.ID, err, i)
		}
	}
	if _, err := s.GetUserByUsername(ctx, "ada  "); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf(`GetUserByUsername("ada  ") = %v, want ErrNotFound`, err)
	}
	users, err := s.ListUsers(ctx, "", 10)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.Username)
	}
	if got, want := strings.Join(names, "|"), "Ada|ada|ada |ädä"; got != want {
		t.Fatalf("ListUsers order %q, want byte order %q", got, want)
	}
}

// TestSessionSettings: whatever the server default (MariaDB's is
// REPEATABLE READ), the store's sessions run at READ COMMITTED in UTC with
// a strict sql_mode, so an over-long value is refused, not truncated.
func TestSessionSettings(t *testing.T) {
	ctx := t.Context()
	s := open(t, database(t))
	long := strings.Repeat("x", 600)
	err := s.CreateUser(ctx, store.User{ID: long, Username: "ada"})
	var me *gomysql.MySQLError
	if !errors.As(err, &me) {
		t.Fatalf("CreateUser with a 600-byte id = %v, want the server's data-too-long error", err)
	}
	if _, err := s.GetUserByUsername(ctx, "ada"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused CreateUser left a user behind: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	dsn := database(t)
	for _, bad := range []string{
		"mysql://%zz",
		"mysql://root@127.0.0.1:3306/", // no database
		"root@tcp(127.0.0.1:3306)/",    // no database
		"mysql://root@/test",           // no host
		"mysql://root@127.0.0.1/test?pool_max_conns=0",
		"mysql://root@127.0.0.1/test?pool_max_conns=x",
	} {
		if s, err := mysql.Open(t.Context(), bad); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	s := open(t, dsn+sep+"pool_max_conns=2")
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

// TestURL opens the store through a mysql:// URL, the form the regions
// file takes.
func TestURL(t *testing.T) {
	s := open(t, testenv.MySQLURL(t))
	if err := s.CreateUser(t.Context(), store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
}

// TestTOTPStepGoesWithUser: MySQL has the record's row deleted by its
// foreign key's ON DELETE CASCADE, so a new account that reuses the id
// starts afresh, and a step of an unknown user is refused, not recorded.
func TestTOTPStepGoesWithUser(t *testing.T) {
	ctx := t.Context()
	s := open(t, database(t))
	u := store.User{ID: "usr-1", Username: "ada"}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcceptTOTPStep(ctx, u.ID, 100); err != nil || !ok {
		t.Fatalf("first step: %v, %v", ok, err)
	}
	if err := s.DeleteUser(ctx, u.Username); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcceptTOTPStep(ctx, u.ID, 100); err == nil || ok {
		t.Fatalf("step of a deleted user: %v, %v; want an error", ok, err)
	}
	if err := s.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.AcceptTOTPStep(ctx, u.ID, 100); err != nil || !ok {
		t.Fatalf("the step after re-creating the user: %v, %v", ok, err)
	}
}

func BenchmarkCreateAccessToken(b *testing.B) {
	conformance.BenchmarkCreateAccessToken(b, func(b testing.TB) store.Store { return open(b, database(b)) })
}

func BenchmarkGetAccessToken(b *testing.B) {
	conformance.BenchmarkGetAccessToken(b, func(b testing.TB) store.Store { return open(b, database(b)) })
}

// TestSigningKeySealingMigration: 0003 adds kek_id and not_before to a
// database whose signing keys predate it (legacy rows read back as
// plaintext, signing from their creation), and re-running it after it died
// before being recorded changes nothing, values set since included.
func TestSigningKeySealingMigration(t *testing.T) {
	ctx := t.Context()
	dsn := database(t)
	open(t, dsn)
	db := rawDB(t, dsn)
	created := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, q := range []string{
		`ALTER TABLE signing_keys DROP COLUMN kek_id, DROP COLUMN not_before`,
		`DELETE FROM schema_migrations WHERE version = 3`,
		`INSERT INTO signing_keys (id, algorithm, private_der, created_at, active, not_after)
			VALUES ('eu-old', 'ES256', 'plain', '2026-01-02 03:04:05.000006', TRUE, '0001-01-01 00:00:00')`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	s := open(t, dsn)
	legacy := store.SigningKey{ID: "eu-old", Algorithm: "ES256", PrivateDER: []byte("plain"), CreatedAt: created, NotBefore: created, Active: true}
	now := created.Add(time.Hour)
	list, err := s.ListSigningKeys(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || !equalKey(list[0], legacy) {
		t.Fatalf("after migrating: %+v, want [%+v]", list, legacy)
	}

	if err := s.ResealSigningKey(ctx, legacy.ID, "", []byte("sealed"), "kek-1"); err != nil {
		t.Fatal(err)
	}
	legacy.PrivateDER, legacy.KEKID = []byte("sealed"), "kek-1"
	next := store.SigningKey{ID: "eu-new", Algorithm: "ES256", PrivateDER: []byte("sealed-new"), KEKID: "kek-1",
		CreatedAt: created.Add(time.Minute), NotBefore: created.Add(10 * time.Minute)}
	if err := s.AddSigningKey(ctx, next); err != nil {
		t.Fatal(err)
	}
	if err := s.ActivateSigningKey(ctx, next.ID, now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	next.Active = true
	legacy.Active, legacy.NotAfter = false, now.Add(time.Hour)

	if _, err := db.ExecContext(ctx, `DELETE FROM schema_migrations WHERE version = 3`); err != nil {
		t.Fatal(err)
	}
	s = open(t, dsn)
	list, err = s.ListSigningKeys(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || !equalKey(list[0], next) || !equalKey(list[1], legacy) {
		t.Fatalf("after re-running the migration: %+v, want [%+v %+v]", list, next, legacy)
	}
}

func equalKey(a, b store.SigningKey) bool {
	return a.ID == b.ID && a.Algorithm == b.Algorithm && string(a.PrivateDER) == string(b.PrivateDER) && a.KEKID == b.KEKID &&
		a.CreatedAt.Equal(b.CreatedAt) && a.NotBefore.Equal(b.NotBefore) && a.Active == b.Active && a.NotAfter.Equal(b.NotAfter)
}

// TestConcurrentReseal: nodes that start at once all try to seal the same
// legacy key; the conditional UPDATE lets exactly one win, the others get
// store.ErrConflict, and the row holds the winner's material and KEK.
func TestConcurrentReseal(t *testing.T) {
	ctx := t.Context()
	s := open(t, database(t))
	if err := s.AddSigningKey(ctx, store.SigningKey{ID: "eu-1", Algorithm: "ES256", PrivateDER: []byte("plain"), Active: true}); err != nil {
		t.Fatal(err)
	}
	const nodes = 8
	errs := make([]error, nodes)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = s.ResealSigningKey(ctx, "eu-1", "", []byte(fmt.Sprintf("sealed-%d", i)), fmt.Sprintf("kek-%d", i))
		}()
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner < 0:
			winner = i
		case err == nil:
			t.Fatalf("nodes %d and %d both resealed the key", winner, i)
		case !errors.Is(err, store.ErrConflict):
			t.Fatalf("node %d: %v, want ErrConflict", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no node resealed the key")
	}
	list, err := s.ListSigningKeys(ctx, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || string(list[0].PrivateDER) != fmt.Sprintf("sealed-%d", winner) || list[0].KEKID != fmt.Sprintf("kek-%d", winner) {
		t.Fatalf("after the race: %+v, want node %d's material and KEK", list, winner)
	}
}

// TestDropFederatedClaims runs migration 0012 over grants, tokens and
// sessions stored before subjects named their home region.
func TestDropFederatedClaims(t *testing.T) {
	dsn := database(t)
	s := open(t, dsn)
	db := rawDB(t, dsn)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(t.Context(), q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	script := func(path string) func() {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return func() {
			for _, q := range strings.Split(string(b), ";\n") {
				var code []string
				for _, l := range strings.Split(q, "\n") {
					if !strings.HasPrefix(strings.TrimSpace(l), "--") {
						code = append(code, l)
					}
				}
				if q := strings.TrimSpace(strings.Join(code, "\n")); q != "" {
					exec(q)
				}
			}
		}
	}
	create, drop := script("migrations/0002_federated_claims.sql"), script("migrations/0012_drop_federated_claims.sql")
	conformance.FederatedClaimsMigration(t, s, func(grant, home string) {
		create()
		exec(`INSERT INTO federated_claims (grant_id, home_region, claims, expires_at) VALUES (?, ?, ?, ?)`,
			grant, home, `{"email":"someone@example.org"}`, time.Now().UTC().Add(time.Hour))
	}, drop, func() bool {
		var n int
		if err := db.QueryRowContext(t.Context(), `SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'federated_claims'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
}
