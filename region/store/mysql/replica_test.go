package mysql_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/mysql"
)

// privateMariaDB starts a throw-away MariaDB server of the test's own (the
// shared server's read_only must not be touched) and returns its port. It
// skips the test when the server binaries are not installed.
func privateMariaDB(t *testing.T, serverID int, args ...string) int {
	t.Helper()
	mariadbd, err1 := exec.LookPath("mariadbd")
	if err1 != nil {
		mariadbd, err1 = exec.LookPath("/usr/sbin/mariadbd")
	}
	install, err2 := exec.LookPath("mariadb-install-db")
	if err1 != nil || err2 != nil {
		t.Skip("mariadbd / mariadb-install-db not installed: no private server for the replication test")
	}
	// The socket path must stay under 108 bytes: not under t.TempDir().
	dir, err := os.MkdirTemp("", "mdb")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(install, "--no-defaults", "--user=root", "--datadir="+data,
		"--auth-root-authentication-method=normal", "--skip-test-db").CombinedOutput(); err != nil {
		t.Fatalf("mariadb-install-db: %v\n%s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := exec.Command(mariadbd, append([]string{"--no-defaults", "--user=root", "--datadir=" + data,
		fmt.Sprintf("--port=%d", port), "--bind-address=127.0.0.1", "--socket=" + filepath.Join(dir, "s"),
		"--pid-file=" + filepath.Join(dir, "pid"), "--log-error=" + filepath.Join(dir, "err.log"),
		"--skip-name-resolve", "--innodb-buffer-pool-size=16M", "--performance-schema=OFF",
		fmt.Sprintf("--server-id=%d", serverID)}, args...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	})
	db := adminDB(t, port, "")
	poll(t, "the private MariaDB to accept connections", func() bool { return db.Ping() == nil })
	return port
}

// adminDB is a root pool on the private server.
func adminDB(t *testing.T, port int, dbName string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", fmt.Sprintf("root@tcp(127.0.0.1:%d)/%s", port, dbName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// poll waits up to 30 s for cond.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func exec1(t *testing.T, db *sql.DB, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestReplicaPromotion runs the DR story on two real MariaDB servers: a
// GTID replica kept read_only is a standby (InRecovery, schema checked
// without writing, no claim, no write), the store's unprivileged account
// cannot promote it, an administrative one can (node.OpenSiteStore and
// node.Promote, what a DR node and `regional promote` run), and the promoted server
// then claims a higher generation that fences the old primary.
func TestReplicaPromotion(t *testing.T) {
	ctx := context.Background()
	pPort := privateMariaDB(t, 1, "--log-bin=bin", "--binlog-format=ROW")
	rPort := privateMariaDB(t, 2, "--read-only=ON")
	primary, replica := adminDB(t, pPort, ""), adminDB(t, rPort, "")
	exec1(t, replica,
		fmt.Sprintf("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=%d, MASTER_USER='root', MASTER_USE_GTID=slave_pos", pPort),
		"START SLAVE")
	exec1(t, primary,
		"CREATE DATABASE meridian CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
		"CREATE USER 'meridian'@'127.0.0.1'",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, DROP, INDEX ON meridian.* TO 'meridian'@'127.0.0.1'")
	url := func(user string, port int) string { return fmt.Sprintf("mysql://%s@127.0.0.1:%d/meridian", user, port) }
	poll(t, "the database to reach the replica", func() bool {
		s, err := mysql.Open(ctx, url("meridian", rPort))
		if err == nil {
			s.Close()
		}
		return err == nil
	})

	r := openURL(t, url("meridian", rPort))
	if in, err := r.InRecovery(ctx); err != nil || !in {
		t.Fatalf("InRecovery on a read_only replica = %v, %v", in, err)
	}
	if err := r.CheckSchema(ctx); !errors.Is(err, store.ErrSchemaNotCurrent) {
		t.Fatalf("CheckSchema on an empty replica = %v, want ErrSchemaNotCurrent", err)
	}

	p := openURL(t, url("meridian", pPort))
	if err := p.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if g, err := p.ClaimGeneration(ctx, "eu.example"); err != nil || g.Number != 1 {
		t.Fatalf("primary's claim = %+v, %v", g, err)
	}
	if err := p.CreateUser(ctx, store.User{ID: "usr-1", Username: "ada"}); err != nil {
		t.Fatal(err)
	}
	poll(t, "the generation to reach the replica", func() bool {
		g, err := r.Generation(ctx)
		return err == nil && g.Holder == "eu.example"
	})
	if err := r.CheckSchema(ctx); err != nil {
		t.Fatalf("CheckSchema on a replica of a migrated primary: %v", err)
	}
	if _, err := r.ClaimGeneration(ctx, "eu-dr.example"); err == nil {
		t.Fatal("a read_only replica took a claim")
	}
	if _, err := r.Fence(ctx, 9, "x"); err == nil {
		t.Fatal("a read_only replica took a fence")
	}
	if err := r.CreateUser(ctx, store.User{ID: "usr-2", Username: "bob"}); err == nil {
		t.Fatal("the store's account wrote to a read_only replica")
	}
	// Even an account that read_only does not stop (root) claims nothing.
	rootR := openURL(t, url("root", rPort))
	if _, err := rootR.ClaimGeneration(ctx, "eu-dr.example"); err == nil {
		t.Fatal("an administrative account claimed the generation on a read_only replica")
	}

	// What a DR node and `regional promote` do with the site's URL.
	site := func(user string) *config.Region {
		return &config.Region{ID: "eu", Site: config.Site{Host: "eu.example", Database: url("meridian", pPort)},
			DR: &config.Site{Host: "eu-dr.example", Database: url(user, rPort)}}
	}
	st, role, err := node.OpenSiteStore(ctx, site("meridian"), true, t.TempDir())
	if err != nil || role != region.RoleStandby {
		t.Fatalf("OpenSiteStore on the replica = %v, %v; want a standby", role, err)
	}
	st.Close()

	// The store's account lacks the privileges: nothing changes.
	if err := r.Promote(ctx); err == nil || !strings.Contains(err.Error(), "administrative account") {
		t.Fatalf("Promote without privileges = %v, want the administrative-account error", err)
	}
	if _, err := node.Promote(ctx, site("meridian"), true, t.TempDir()); err == nil {
		t.Fatal("regional promote with the store's account succeeded")
	}
	if in, err := r.InRecovery(ctx); err != nil || !in {
		t.Fatalf("after a refused Promote: InRecovery = %v, %v", in, err)
	}

	if g, err := node.Promote(ctx, site("root"), true, t.TempDir()); err != nil || g.Number != 2 || g.Holder != "eu-dr.example" {
		t.Fatalf("regional promote with an administrative account = %+v, %v", g, err)
	}
	st, role, err = node.OpenSiteStore(ctx, site("meridian"), true, t.TempDir())
	if err != nil || role != region.RolePrimary {
		t.Fatalf("OpenSiteStore on the promoted server = %v, %v; want a primary", role, err)
	}
	st.Close()
	if err := rootR.Promote(ctx); err != nil {
		t.Fatalf("Promote on the promoted (writable) server: %v", err)
	}
	if in, err := r.InRecovery(ctx); err != nil || in {
		t.Fatalf("after Promote: InRecovery = %v, %v", in, err)
	}
	rows, err := replica.Query("SHOW SLAVE STATUS")
	if err != nil {
		t.Fatal(err)
	}
	left := rows.Next()
	rows.Close()
	if left {
		t.Fatal("a replication connection is left after Promote (RESET SLAVE ALL should have removed it)")
	}
	g, err := r.ClaimGeneration(ctx, "eu-dr.example")
	if err != nil || g.Number != 2 || g.Holder != "eu-dr.example" {
		t.Fatalf("the promoted site's claim again = %+v, %v; want no change", g, err)
	}
	if _, err := r.GetUserByID(ctx, "usr-1"); err != nil {
		t.Fatalf("the promoted server lost a replicated user: %v", err)
	}
	if err := r.CreateUser(ctx, store.User{ID: "usr-2", Username: "bob"}); err != nil {
		t.Fatalf("write to the promoted server: %v", err)
	}

	// The old primary learns the higher generation and records the fence;
	// its writes no longer reach the promoted server.
	if g, err := p.Fence(ctx, g.Number, g.Holder); err != nil || !g.Fenced() || g.Number != 1 {
		t.Fatalf("fencing the old primary = %+v, %v", g, err)
	}
	if g, err := r.Generation(ctx); err != nil || g.Fenced() {
		t.Fatalf("the old primary's fence reached the promoted server: %+v, %v", g, err)
	}
}

func openURL(t *testing.T, u string) *mysql.Store {
	t.Helper()
	s, err := mysql.Open(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
