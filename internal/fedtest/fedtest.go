// Package fedtest starts Meridian federations for tests, the way Dex's
// newTestServer and CoreDNS's test.CoreDNSServer serve all their tests.
//
// Start runs the production composition in this process — region/node's
// New and ServeListeners for every site, hub/server's for the hub — from a
// config.Config shaped like configs/regions.yaml (every site on its own
// loopback address, one port for all), with options for DR sites, second
// nodes of any region and of the hub, sites the test starts itself, each site's database (SQLite,
// PostgreSQL, MySQL through internal/testenv), GeoDNS, topology, the hub,
// Redis and recorded spans. WriteConfig is the one writer of
// configs/regions.yaml copies for tests that run the built binaries;
// ConfigFile writes an in-process federation's config for a binary that
// joins it. The small helpers every federation test needs live here too:
// SiteIP, FreePort, Eventually, OpenStore, RandomKey, QuietTelemetry.
package fedtest

import (
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/mysql"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/telemetry"
)

// AppRedirect is the redirect URI of every test application.
const AppRedirect = "http://127.0.0.1:9999/callback"

// Regions are the region ids of every federation a test starts, as in
// configs/regions.yaml.
var Regions = []string{"eu", "us", "ap"}

// siteIPs are the loopback addresses of configs/regions.yaml.
var siteIPs = map[string]string{
	"edge": "127.0.0.1", "hub": "127.0.0.10",
	"eu": "127.0.0.11", "us": "127.0.0.12", "ap": "127.0.0.13",
	"eu/dr": "127.0.0.21", "us/dr": "127.0.0.22", "ap/dr": "127.0.0.23",
	"eu/2": "127.0.0.31", "us/2": "127.0.0.32", "ap/2": "127.0.0.33", "hub/2": "127.0.0.30",
}

// SiteIP is the loopback address of a site as configs/regions.yaml places
// it: "eu", "us", "ap", their DR sites "eu/dr", "us/dr", "ap/dr", "hub",
// "edge" (127.0.0.1), and the second nodes "eu/2" (127.0.0.31), "us/2",
// "ap/2" and "hub/2" (127.0.0.30) of Options.Node2 and Options.SecondNodes.
func SiteIP(site string) string {
	ip, ok := siteIPs[site]
	if !ok {
		panic("fedtest: unknown site " + site)
	}
	return ip
}

// FreePort finds a port free for TCP and UDP on the address of every site.
func FreePort(t testing.TB) int { return FreePorts(t, 1)[0] }

// FreePorts finds n distinct ports, each free for TCP and UDP on the
// address of every site.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var out []int
	for tries := 0; len(out) < n; tries++ {
		if tries > 50*n {
			t.Fatal("fedtest: no port free on every site address")
		}
		ln, err := net.Listen("tcp", "127.0.0.11:0")
		if err != nil {
			t.Fatal(err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if free(p) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func free(port int) bool {
	for _, ip := range siteIPs {
		addr := net.JoinHostPort(ip, strconv.Itoa(port))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return false
		}
		l.Close()
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}

// Eventually polls cond until it holds, failing the test after 15 seconds.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	EventuallyWithin(t, 15*time.Second, what, cond)
}

// EventuallyWithin polls cond every 15ms until it holds, failing the test
// after d.
func EventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(15 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// RandomKey is 32 random bytes.
func RandomKey(t testing.TB) []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// Store kinds for OpenStore and Options.Store.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
	MySQL    = "mysql"
)

// MigratingStore is a region store a test opened itself.
type MigratingStore interface {
	store.Store
	Migrate(context.Context) error
	Close() error
}

// OpenStore opens a migrated region store of kind (SQLite in a temporary
// directory, or a schema/database of its own on the machine's PostgreSQL
// or MySQL through internal/testenv), closed when the test ends, and
// returns it with its location (file or URL).
func OpenStore(t testing.TB, kind string) (MigratingStore, string) {
	t.Helper()
	ctx := context.Background()
	var st MigratingStore
	var err error
	dsn := Database(t, kind)
	switch kind {
	case Postgres:
		st, err = postgres.Open(ctx, dsn)
	case MySQL:
		st, err = mysql.Open(ctx, dsn)
	default:
		st, err = sqlite.Open(ctx, dsn)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return st, dsn
}

// Database is a fresh database of kind for one site: a SQLite file path,
// or a PostgreSQL/MySQL URL of a schema/database dropped when the test
// ends.
func Database(t testing.TB, kind string) string {
	t.Helper()
	switch kind {
	case Postgres:
		return testenv.PostgresSchema(t)
	case MySQL:
		return testenv.MySQLURL(t)
	case SQLite, "":
		return filepath.Join(t.TempDir(), "region.db")
	}
	t.Fatalf("fedtest: unknown store kind %q", kind)
	return ""
}

// Discard is a logger that drops everything.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// QuietTelemetry is telemetry that records nothing.
func QuietTelemetry() *telemetry.Telemetry {
	return &telemetry.Telemetry{
		Tracer:     sdktrace.NewTracerProvider(),
		Meter:      noop.NewMeterProvider(),
		Propagator: propagation.TraceContext{},
		Log:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// RoundTripFunc is a function as an http.RoundTripper.
type RoundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls fn.
func (fn RoundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return fn(r) }
