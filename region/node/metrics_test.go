package node_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// TestOperatorMetrics: a regional node on PostgreSQL exports, on its admin
// /metrics, its role, its outbox backlog, its database pool, the breaker
// state of each upstream site and primary vs DR routing counts, with
// labels from closed sets only (regions from the configuration, site
// primary|dr, result ok|error, role, pool state).
func TestOperatorMetrics(t *testing.T) {
	db := testenv.PostgresSchema(t)
	dead := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := ln.Addr().String()
		ln.Close()
		return a
	}
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: 80, CookieDomain: "id.localhost",
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: dead(), Addresses: []string{"127.0.0.1"}}},
		Telemetry: config.Telemetry{LogLevel: "error"},
		Regions: []config.Region{
			{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"}, Database: db}},
			{ID: "us", Site: config.Site{Host: "us.id.localhost", Listen: dead(), Addresses: []string{"127.0.0.1"}},
				DR: &config.Site{Host: "us-dr.id.localhost", Listen: dead(), Addresses: []string{"127.0.0.1"}}},
		},
	}
	pub, adm, _, _ := startNode(t, cfg)

	// A routed call to us: its primary and DR site both refuse.
	codec, err := node.Codec(cfg, cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	usAT, err := codec.New(routing.KindAccess, "us")
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+pub.Addr().String()+"/userinfo", nil)
	req.Host = "eu.id.localhost"
	req.Header.Set("Authorization", "Bearer "+usAT)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("routed call to a dead region: %d", resp.StatusCode)
	}

	resp, err = http.Get("http://" + adm.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	scrape := string(b)
	for _, want := range []string{
		`meridian_region_role{otel_scope_name="meridian/region/node"`,
		`role="primary"} 1`,
		`role="standby"} 0`,
		`meridian_region_outbox_backlog{`,
		`meridian_db_pool_connections{`,
		`state="acquired"}`,
		`meridian_db_pool_max{`,
		`meridian_routing_breaker_open{`,
		`meridian_routing_upstream_calls_total{`,
		`region="us",result="error",site="primary"} 1`,
		`region="us",result="error",site="dr"} 1`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if t.Failed() {
		var ours []string
		for _, l := range strings.Split(scrape, "\n") {
			if strings.HasPrefix(l, "meridian_") {
				ours = append(ours, l)
			}
		}
		t.Logf("meridian_ series:\n%s", strings.Join(ours, "\n"))
	}
}

// startNode validates cfg and serves region eu's node on fresh loopback
// listeners until the test ends; cancel stops it (the node drains for
// cfg's drain period), and done closes once it has stopped.
func startNode(t *testing.T, cfg *config.Config) (pub, adm net.Listener, cancel func(), done <-chan struct{}) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "test", Instance: "eu", LogLevel: "error"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	n, err := node.New(ctx, cfg, "eu", node.Options{DataDir: cfg.DataDir}, tel)
	if err != nil {
		t.Fatal(err)
	}
	pub, adm = listen(t), listen(t)
	sctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { _ = n.ServeListeners(sctx, pub, adm); n.Close(); close(stopped) }()
	t.Cleanup(func() { stop(); <-stopped })
	return pub, adm, stop, stopped
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestNodeDrainsOnStop: a regional node told to stop answers its public and
// admin /readyz with 503 "draining" while still serving discovery, for
// federation.drain_period; then its listeners close.
func TestNodeDrainsOnStop(t *testing.T) {
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: 80, CookieDomain: "id.localhost",
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second, DrainPeriod: 2 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
		Telemetry: config.Telemetry{LogLevel: "error"},
		Regions:   []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"}}}},
	}
	pub, adm, cancel, done := startNode(t, cfg)
	c := &http.Client{Timeout: 2 * time.Second}
	get := func(addr, path string) (int, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		req.Host = "eu.id.localhost"
		resp, err := c.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b)), nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _, err := get(pub.Addr().String(), "/readyz"); err == nil && code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the node never became ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	for {
		code, body, err := get(pub.Addr().String(), "/readyz")
		if err != nil {
			t.Fatalf("public /readyz during the drain: %v", err)
		}
		if code == http.StatusServiceUnavailable && body == "draining" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("public /readyz still %d %q after stop", code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if code, body, err := get(adm.Addr().String(), "/readyz"); err != nil || code != http.StatusServiceUnavailable || body != "draining" {
		t.Fatalf("admin /readyz during the drain: %d %q %v", code, body, err)
	}
	if code, _, err := get(pub.Addr().String(), "/.well-known/openid-configuration"); err != nil || code != http.StatusOK {
		t.Fatalf("discovery during the drain: %d %v", code, err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop after the drain period")
	}
	if _, _, err := get(pub.Addr().String(), "/readyz"); err == nil {
		t.Fatal("the public listener still serves after the drain")
	}
}
