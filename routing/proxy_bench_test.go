package routing_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// BenchmarkRoutedHop drives introspection calls through a router wired as a
// regional node wires it (otelhttp server handler, traced transport, no
// exporter, Front) to an upstream that answers at once: the cost of the hop alone.
func BenchmarkRoutedHop(b *testing.B) {
	tel, codec, rt, _ := hopBench(b)
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

// BenchmarkRoutedHopCalls is BenchmarkRoutedHop with the public listener
// as region/node serves it: routed calls taken off the connection by
// Router.Calls before net/http's server. The client writes each call's
// bytes on a kept connection and reads the answer, so the figures are
// mostly the proxy's own (allocs/op: the proxy and the upstream).
func BenchmarkRoutedHopCalls(b *testing.B) {
	tel, codec, rt, answer := hopBench(b)
	lean := func(*http.Request) bool { return !tel.Recording() }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serve.Run(ctx, []serve.Listener{{Server: serve.Public(rt.Front(tel.Handler(rt, "bench", "/oauth/introspect"), lean)),
			Listener: ln, Calls: rt.Calls(lean)}})
	}()
	defer func() { cancel(); <-done }()
	tok, _ := codec.New(routing.KindAccess, "eu")
	body := url.Values{"token": {tok}}.Encode()
	call := []byte("POST /oauth/introspect HTTP/1.1\r\nHost: id.test\r\nContent-Type: application/x-www-form-urlencoded\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if _, err := c.Write(call); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(got) != string(answer) {
				b.Errorf("status %d body %q", resp.StatusCode, got)
				return
			}
		}
	})
}

// hopBench is the benchmarks' router of region us (telemetry without an
// exporter, as a node runs it) in front of an upstream eu that answers
// every call with answer at once.
func hopBench(b *testing.B) (*telemetry.Telemetry, *routing.Codec, *routing.Router, []byte) {
	b.Helper()
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
	b.Cleanup(up.Close)
	hopKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rt, err := routing.NewRouter(routing.RouterConfig{Local: "us", WrapTransport: tel.Transport, HopKey: hopKey,
		Peers: []routing.Peer{{Region: "eu", URL: "http://eu.id.test", Addr: up.Listener.Addr().String()}}},
		codec, http.NotFoundHandler(), slog.New(slog.NewTextHandler(io.Discard, nil)), tel.Meter.Meter("routing"))
	if err != nil {
		b.Fatal(err)
	}
	return tel, codec, rt, answer
}
