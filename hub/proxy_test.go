package hub_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
)

// The hub's trusted reverse proxy in TestHubLimitsBehindTrustedProxy: it
// reaches the hub from this address, which hub.trusted_proxies names.
const trustedProxyAddr = "127.0.9.1"

// fromSource is an HTTP client whose connections leave from the loopback
// address source and go to addr whatever the URL's host.
func fromSource(source, addr string) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	return &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return d.DialContext(ctx, network, addr)
		}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TestHubLimitsBehindTrustedProxy plays users and attackers against the
// hub's per-address limit on username resolutions (60 a minute) when the
// hub sits behind a reverse proxy (a real httputil.ReverseProxy, which
// appends its peer to X-Forwarded-For):
//
//   - 70 users, each from their own address, reach the hub through the
//     trusted proxy, so the hub's peer is the proxy for all of them: none
//     is throttled (they are not counted as one client);
//   - one user through the trusted proxy is still limited at 60;
//   - an attacker through the trusted proxy who sends their own
//     X-Forwarded-For (a new address every time) is limited at 60: the
//     proxy appends the attacker's real address, the rightmost untrusted;
//   - an attacker reaching the hub directly with a forged X-Forwarded-For
//     is limited at 60: an untrusted peer's header is ignored.
func TestHubLimitsBehindTrustedProxy(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub, trustedProxies: []string{trustedProxyAddr + "/32"}})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	// The hub's /login for bob.smith, as the entry region sends it.
	b := f.newBrowser()
	b.stopAt = func(u *url.URL) bool { return u.Hostname() == hubHost && u.Path == "/login" }
	loginURL, _ := b.login(f.newApp("eu", f.globalURL()).start().url, "bob.smith", bobPassword)
	if loginURL.Hostname() != hubHost || loginURL.Path != "/login" {
		t.Fatalf("login stopped at %s, want the hub's /login", loginURL)
	}
	hubAddr := fedtest.SiteAddr("hub", f.Port)

	target, _ := url.Parse("http://" + hubAddr)
	proxy := httputil.NewSingleHostReverseProxy(target)
	pd := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(trustedProxyAddr)}}
	proxy.Transport = &http.Transport{DialContext: pd.DialContext, DisableKeepAlives: true}
	_, proxyAddr := serve(t, proxy)

	// get fetches the hub's /login from source, through the proxy or
	// directly, with a forged X-Forwarded-For when xff is set.
	get := func(source string, viaProxy bool, xff string) int {
		t.Helper()
		to := hubAddr
		if viaProxy {
			to = proxyAddr
		}
		req, _ := http.NewRequest(http.MethodGet, loginURL.String(), nil)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := fromSource(source, to).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	const limit = 60
	t.Run("users behind the trusted proxy are not throttled together", func(t *testing.T) {
		for i := range limit + 10 {
			if got := get(fmt.Sprintf("127.0.10.%d", i+1), true, ""); got != http.StatusFound {
				t.Fatalf("user %d through the trusted proxy: %d, want 302 (users behind one proxy are not one client)", i+1, got)
			}
		}
	})
	for _, c := range []struct {
		name     string
		source   string
		viaProxy bool
		forge    bool
	}{
		{"one user behind the trusted proxy is still limited", "127.0.11.1", true, false},
		{"a forged X-Forwarded-For through the trusted proxy is ignored", "127.0.11.2", true, true},
		{"a forged X-Forwarded-For from an untrusted peer is ignored", "127.0.11.3", false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for i := range limit + 1 {
				xff := ""
				if c.forge {
					xff = fmt.Sprintf("198.51.100.%d", i+1)
				}
				got := get(c.source, c.viaProxy, xff)
				want := http.StatusFound
				if i == limit {
					want = http.StatusTooManyRequests
				}
				if got != want {
					t.Fatalf("resolution %d from %s: %d, want %d", i+1, c.source, got, want)
				}
			}
		})
	}
}
