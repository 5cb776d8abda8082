// Package testenv finds the real services (Redis, PostgreSQL, MySQL) that tests run
// against. A test that needs a service calls one of these helpers: when the
// service is unreachable the test is skipped on a developer machine and fails
// when CI=true, so CI can never go green by silently skipping coverage.
package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"net"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
)

// RedisAddr returns the address of the machine's Redis (REDIS_ADDR, default
// 127.0.0.1:6379) after checking that it accepts connections.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := getenv("REDIS_ADDR", "127.0.0.1:6379")
	require(t, "Redis", addr)
	return addr
}

// PostgresURL returns a connection URL for the machine's PostgreSQL
// (MERIDIAN_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test)
// after checking that it accepts connections.
func PostgresURL(t testing.TB) string {
	t.Helper()
	raw := getenv("MERIDIAN_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatalf("MERIDIAN_TEST_POSTGRES_URL: %v", err)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "5432")
	}
	require(t, "PostgreSQL", host)
	return raw
}

// InCI reports whether the tests run under CI (CI=true), where a missing
// service is a failure rather than a reason to skip.
func InCI() bool { return os.Getenv("CI") == "true" }

func require(t testing.TB, name, addr string) {
	t.Helper()
	requireNet(t, name, "tcp", addr)
}

func requireNet(t testing.TB, name, network, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		_ = c.Close()
		return
	}
	if InCI() {
		t.Fatalf("%s at %s is required when CI=true: %v", name, addr, err)
	}
	t.Skipf("%s at %s unreachable, skipping (set CI=true to fail instead): %v", name, addr, err)
}

func getenv(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// PostgresSchema creates a schema of its own for one test on the machine's
// PostgreSQL, drops it when the test ends, and returns a connection URL
// whose search_path names it, so tests of many packages can share the
// database concurrently.
func PostgresSchema(t testing.TB) string {
	t.Helper()
	base := PostgresURL(t)
	name := "meridian_test_" + strings.ToLower(rand.Text()[:12])
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, "CREATE SCHEMA "+pgx.Identifier{name}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			t.Errorf("drop schema %s: %v", name, err)
			return
		}
		defer c.Close(context.Background())
		if _, err := c.Exec(context.Background(), "DROP SCHEMA "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", name, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// MySQLDSN returns a go-sql-driver/mysql DSN for the machine's MySQL or
// MariaDB (MERIDIAN_TEST_MYSQL_DSN, default root@tcp(127.0.0.1:3306)/test)
// after checking that it accepts connections.
func MySQLDSN(t testing.TB) string {
	t.Helper()
	dsn := getenv("MERIDIAN_TEST_MYSQL_DSN", "root@tcp(127.0.0.1:3306)/test")
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatalf("MERIDIAN_TEST_MYSQL_DSN: %v", err)
	}
	requireNet(t, "MySQL", cfg.Net, cfg.Addr)
	return dsn
}

// MySQLDatabase creates a database of its own for one test on the
// machine's MySQL/MariaDB (meridian_test_<random>), drops it when the test
// ends, and returns a DSN that names it, so tests of many packages can
// share the server concurrently.
func MySQLDatabase(t testing.TB) string {
	t.Helper()
	base := MySQLDSN(t)
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatal(err)
	}
	name := "meridian_test_" + strings.ToLower(rand.Text()[:12])
	admin, err := sql.Open("mysql", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE DATABASE `" + name + "` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		c, err := sql.Open("mysql", base)
		if err != nil {
			t.Errorf("drop database %s: %v", name, err)
			return
		}
		defer c.Close()
		if _, err := c.Exec("DROP DATABASE IF EXISTS `" + name + "`"); err != nil {
			t.Errorf("drop database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// MySQLURL is MySQLDatabase as a mysql:// URL (the form the regions file
// takes), for tests that configure a node. The server must be reached over
// TCP.
func MySQLURL(t testing.TB) string {
	t.Helper()
	cfg, err := mysql.ParseDSN(MySQLDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Net != "tcp" {
		t.Fatalf("MERIDIAN_TEST_MYSQL_DSN: a mysql:// URL needs a tcp address, not %s", cfg.Net)
	}
	u := url.URL{Scheme: "mysql", Host: cfg.Addr, Path: "/" + cfg.DBName}
	if cfg.Passwd != "" {
		u.User = url.UserPassword(cfg.User, cfg.Passwd)
	} else {
		u.User = url.User(cfg.User)
	}
	return u.String()
}
