package node_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
)

// TestNodeLimitsBehindTrustedProxy plays users and attackers against a
// regional node's per-address registration limit
// (regions[].registrations_per_minute = 2) when the node sits behind a real
// reverse proxy named in regions[].trusted_proxies: users behind the proxy
// each get their own limit, while an X-Forwarded-For the client forges,
// through the proxy or straight to the node, names nobody.
func TestNodeLimitsBehindTrustedProxy(t *testing.T) {
	const proxyAddr, perAddress = "127.0.9.1", 2
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "registration.token")
	token := strings.Repeat("t", 40)
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		DataDir: dir,
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: 80, CookieDomain: "id.localhost",
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
		Telemetry: config.Telemetry{LogLevel: "error"},
		Regions: []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"},
			TrustedProxies: []string{proxyAddr}}, RegistrationTokenFile: tokenFile, RegistrationsPerMinute: perAddress}},
	}
	pub, _, _, _ := startNode(t, cfg)
	nodeAddr := pub.Addr().String()

	target, _ := url.Parse("http://" + nodeAddr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	pd := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(proxyAddr)}}
	proxy.Transport = &http.Transport{DialContext: pd.DialContext, DisableKeepAlives: true}
	pln := listen(t)
	psrv := &http.Server{Handler: proxy, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = psrv.Serve(pln) }()
	t.Cleanup(func() { _ = psrv.Close() })

	register := func(source string, viaProxy bool, xff string) int {
		t.Helper()
		to := nodeAddr
		if viaProxy {
			to = pln.Addr().String()
		}
		d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) { return d.DialContext(ctx, network, to) }}}
		req, _ := http.NewRequest(http.MethodPost, "http://eu.id.localhost/register",
			strings.NewReader(`{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+token)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	// Five users behind the proxy, more than perAddress together: each
	// registers.
	for i := range perAddress + 3 {
		if got := register(fmt.Sprintf("127.0.10.%d", i+1), true, ""); got != http.StatusCreated {
			t.Fatalf("user %d behind the trusted proxy: %d, want 201 (not throttled with the others)", i+1, got)
		}
	}
	for _, c := range []struct {
		name     string
		source   string
		viaProxy bool
		forge    bool
	}{
		{"one user behind the trusted proxy", "127.0.11.1", true, false},
		{"forged X-Forwarded-For through the trusted proxy", "127.0.11.2", true, true},
		{"forged X-Forwarded-For from an untrusted peer", "127.0.11.3", false, true},
	} {
		for i := range perAddress + 1 {
			xff := ""
			if c.forge {
				xff = fmt.Sprintf("198.51.100.%d", i+1)
			}
			want := http.StatusCreated
			if i == perAddress {
				want = http.StatusTooManyRequests
			}
			if got := register(c.source, c.viaProxy, xff); got != want {
				t.Fatalf("%s: attempt %d: %d, want %d", c.name, i+1, got, want)
			}
		}
	}
}
