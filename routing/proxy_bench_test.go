package routing_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// BenchmarkRoutedHop drives introspection calls through a router wired as a
// regional node wires it (otelhttp server handler, traced transport, no
// exporter, Front) to an upstream that answers at once: the cost of the hop alone.
func BenchmarkRoutedHop(b *testing.B) {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "bench", Instance: "us"}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	codec, err := routing.NewCodec([]string{"eu", "us"}, []byte(strings.Repeat("k", 32)))
	if err != nil {
		b.Fatal(err)
	}
	answer := []byte(`{"active":true}`)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = w.Write(answer)
	}))
	defer up.Close()
	hopKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt, err := routing.NewRouter(routing.RouterConfig{Local: "us", WrapTransport: tel.Transport, HopKey: hopKey,
		Peers: []routing.Peer{{Region: "eu", URL: "http://eu.id.test", Addr: up.Listener.Addr().String()}}},
		codec, http.NotFoundHandler(), slog.New(slog.NewTextHandler(io.Discard, nil)), tel.Meter.Meter("routing"))
	if err != nil {
		b.Fatal(err)
	}
	// As region/node mounts it: Front before the instrumented chain, lean
	// while no span is recorded.
	front := httptest.NewServer(rt.Front(tel.Handler(rt, "bench", "/oauth/introspect"),
		func(*http.Request) bool { return !tel.Recording() }))
	defer front.Close()
	tok, _ := codec.New(routing.KindAccess, "eu")
	body := url.Values{"token": {tok}}.Encode()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, _ := http.NewRequest(http.MethodPost, front.URL+"/oauth/introspect", strings.NewReader(body))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
