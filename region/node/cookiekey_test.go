package node_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/telemetry"
)

// keyFile writes a fresh 32-byte secret with mode 0600 and returns its path.
func keyFile(t *testing.T, name string) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoginAcrossNodesWithCookieKeys: a login started at node 1 of region
// eu continues at node 2 (both on one database, each with its own copy of
// the config, regions[0].cookie_key_file). With the same cookie key it
// goes on; with different keys node 2 refuses the form with 403 and logs a
// warning that names the cause and the cookie key's id, never the key or
// the form's values.
func TestLoginAcrossNodesWithCookieKeys(t *testing.T) {
	keyA, keyB := keyFile(t, "cookie-a.key"), keyFile(t, "cookie-b.key")
	tests := []struct {
		name       string
		key1, key2 string
		wantStatus int
		wantLog    bool
	}{
		{"same cookie key", keyA, keyA, http.StatusOK, false},
		{"different cookie keys", keyA, keyB, http.StatusForbidden, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			cfgFor := func(cookieKey string) *config.Config {
				cfg := &config.Config{
					DataDir: dataDir,
					Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "http", Port: 80, CookieDomain: "id.localhost",
						Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second},
					Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
					Telemetry: config.Telemetry{LogLevel: "info"},
					Regions: []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"}},
						CookieKeyFile: cookieKey}},
				}
				if err := cfg.Validate(); err != nil {
					t.Fatal(err)
				}
				return cfg
			}
			n1, addr1, _ := startLoggedNode(t, cfgFor(tt.key1))
			_, addr2, log2 := startLoggedNode(t, cfgFor(tt.key2))
			codec, err := node.Codec(cfgFor(tt.key1), dataDir, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			app, err := region.CreateClient(context.Background(), n1.Store, codec, "eu", region.ClientSpec{Name: "app",
				RedirectURIs: []string{fedtest.AppRedirect}, FirstParty: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := region.CreateUser(context.Background(), n1.Store, region.UserSpec{Username: "ada", Password: "password-ada"}); err != nil {
				t.Fatal(err)
			}
			// The browser's node: the load balancer (or DNS) moves it
			// from node 1 to node 2 mid-login.
			var target atomic.Value
			target.Store(addr1)
			d := &net.Dialer{Timeout: time.Second}
			b := oidctest.NewBrowser(t, &http.Transport{DisableKeepAlives: true,
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return d.DialContext(ctx, network, target.Load().(string))
				}})
			q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid"},
				"state": {"s"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
			p := oidctest.ReadPage(b.Follow(b.Get("http://eu.id.localhost/authorize?"+q.Encode()), oidctest.StopAt(fedtest.AppRedirect)))
			if p.Status != http.StatusOK || !strings.Contains(p.Body, `name="username"`) {
				t.Fatalf("node 1's login page: %d", p.Status)
			}
			target.Store(addr2)
			resp := b.Submit(p, url.Values{"username": {"ada"}})
			got := oidctest.ReadPage(resp)
			if got.Status != tt.wantStatus {
				t.Fatalf("username posted to node 2: %d, want %d", got.Status, tt.wantStatus)
			}
			logged := log2.String()
			has := strings.Contains(logged, `"msg":"login refused"`) &&
				strings.Contains(logged, "does not verify under this node's cookie key") &&
				strings.Contains(logged, `"cookie_key_id"`) && strings.Contains(logged, "regions[].cookie_key_file")
			if has != tt.wantLog {
				t.Fatalf("node 2's log has the refusal warning: %v, want %v; log:\n%s", has, tt.wantLog, logged)
			}
			for _, secret := range []string{p.Hidden.Get("csrf"), p.Hidden.Get("id")} {
				if secret != "" && strings.Contains(logged, secret) {
					t.Fatal("node 2 logged a value of the refused form")
				}
			}
		})
	}
}

// startLoggedNode serves region eu's node of cfg on a fresh loopback
// listener until the test ends, logging (JSON, info and up) to the
// returned buffer.
func startLoggedNode(t *testing.T, cfg *config.Config) (*node.Node, string, *fedtest.LogBuffer) {
	t.Helper()
	logs := &fedtest.LogBuffer{}
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "test", Instance: "eu", LogLevel: "info"}, logs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	n, err := node.New(ctx, cfg, "eu", node.Options{DataDir: cfg.DataDir}, tel)
	if err != nil {
		t.Fatal(err)
	}
	pub := listen(t)
	sctx, stop := context.WithCancel(ctx)
	stopped := make(chan struct{})
	go func() { _ = n.ServeListeners(sctx, pub, nil); n.Close(); close(stopped) }()
	t.Cleanup(func() { stop(); <-stopped })
	return n, pub.Addr().String(), logs
}
