package telemetry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/telemetry"
)

// series returns the http_server_* sample lines of a scrape.
func series(t *testing.T, metrics string) []string {
	t.Helper()
	resp, err := http.Get(metrics)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "http_server_") {
			out = append(out, l)
		}
	}
	return out
}

// TestClientChosenValuesDoNotGrowMetrics: Host headers, ports, paths and
// methods a client picks never become label values, so requests cannot
// grow /metrics without bound.
func TestClientChosenValuesDoNotGrowMetrics(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "test", Instance: "t"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	app := tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth/token" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write([]byte("ok"))
	}), "test", "/oauth/token", "/internal/")
	srv := httptest.NewServer(app)
	t.Cleanup(srv.Close)
	metrics := httptest.NewServer(tel.MetricsHandler())
	t.Cleanup(metrics.Close)

	do := func(method, host, path string) {
		req, err := http.NewRequest(method, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// Every label combination once: the known route, an unknown path, an
	// unknown method.
	do("GET", "id.example", "/oauth/token")
	do("GET", "id.example", "/nope")
	do("BREW", "id.example", "/oauth/token")
	before := series(t, metrics.URL+"/metrics")
	if len(before) == 0 {
		t.Fatal("no http_server_ series exported")
	}
	for i := 0; i < 1000; i++ {
		r := rand.Uint64()
		host := fmt.Sprintf("h%x.attacker.example:%d", r, 1+r%65535)
		switch i % 3 {
		case 0:
			do("GET", host, "/oauth/token")
		case 1:
			do("GET", host, fmt.Sprintf("/p%x", r))
		default:
			do(fmt.Sprintf("M%X", r), host, "/oauth/token")
		}
	}
	after := series(t, metrics.URL+"/metrics")
	if len(after) != len(before) {
		t.Fatalf("1000 requests with client-chosen hosts, paths and methods grew the http_server_ series from %d to %d:\n%s",
			len(before), len(after), strings.Join(after, "\n"))
	}
	all := strings.Join(after, "\n")
	for _, leak := range []string{"attacker", "server_address", "server_port", `http_route="/p`} {
		if strings.Contains(all, leak) {
			t.Errorf("metrics carry %q:\n%s", leak, all)
		}
	}
	for _, want := range []string{`http_route="/oauth/token"`, `http_route="other"`, `http_request_method="_OTHER"`} {
		if !strings.Contains(all, want) {
			t.Errorf("metrics lack %s:\n%s", want, all)
		}
	}
}

// TestTransportPropagatesWithoutExporter: with no trace exporter, outgoing
// calls still carry the incoming W3C trace id.
func TestTransportPropagatesWithoutExporter(t *testing.T) {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "test", Instance: "t"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got <- r.Header.Get("Traceparent") }))
	t.Cleanup(up.Close)
	client := &http.Client{Transport: tel.Transport(http.DefaultTransport)}
	front := httptest.NewServer(tel.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, up.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		resp.Body.Close()
	}), "test"))
	t.Cleanup(front.Close)
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tc := range []struct{ in, wantPrefix string }{
		{"00-" + traceID + "-00f067aa0ba902b7-01", "00-" + traceID + "-"},
		{"00-" + traceID + "-00f067aa0ba902b7-00", "00-" + traceID + "-"},
	} {
		req, _ := http.NewRequest(http.MethodGet, front.URL, nil)
		if tc.in != "" {
			req.Header.Set("Traceparent", tc.in)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		out := <-got
		if !strings.HasPrefix(out, tc.wantPrefix) {
			t.Errorf("incoming traceparent %q: upstream saw %q", tc.in, out)
		}
	}
}

// TestAsDefault: what a library logs through slog's default logger or the
// log package while a node serves comes out as the node's JSON lines, with
// its service and instance, at the configured level; afterwards both
// defaults are as they were.
func TestAsDefault(t *testing.T) {
	var buf bytes.Buffer
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "svc", Instance: "eu", LogLevel: "info"}, &buf)
	if err != nil {
		t.Fatal(err)
	}
	defer tel.Shutdown(context.Background())
	prev, out := slog.Default(), log.Writer()
	restore := tel.AsDefault()
	slog.Warn("request error", "oidc_error.type", "invalid_client")
	slog.Debug("below the level")
	log.Print("from the log package")
	restore()
	if slog.Default() != prev || log.Writer() != out {
		t.Fatal("the previous defaults were not restored")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], `"msg":"from the log package"`) {
		t.Fatalf("want the warning and the log package's line, got %q", lines)
	}
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not a JSON line: %q", l)
		}
		if m["service"] != "svc" || m["instance"] != "eu" {
			t.Errorf("line without service and instance: %q", l)
		}
	}
}
