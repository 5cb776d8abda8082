package region_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/meridian-id/meridian/region"
)

// TestWriteGate: what a standby and a fenced node answer on each kind of
// route, over HTTP. A standby passes reads through and refuses writes with
// 503 + Retry-After (OAuth JSON for APIs, an HTML page for browsers); a
// fenced node refuses everything but /healthz; /readyz names the role.
func TestWriteGate(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	var role atomic.Int32
	srv := httptest.NewServer(n.P.WriteGate(n.P, func() region.Role { return region.Role(role.Load()) }))
	t.Cleanup(srv.Close)
	const (
		pass  = "pass"  // reached the provider
		json  = "json"  // 503 temporarily_unavailable JSON + Retry-After
		page  = "html"  // 503 HTML page + Retry-After
		ready = "ready" // 503 /readyz naming the role
	)
	tests := []struct {
		method, path    string
		standby, fenced string
	}{
		{"GET", "/.well-known/openid-configuration", pass, json},
		{"GET", "/keys", pass, json},
		{"POST", "/oauth/introspect", pass, json},
		{"GET", "/userinfo", pass, json},
		{"POST", "/dereference", pass, json},
		{"GET", "/healthz", pass, pass},
		{"GET", "/readyz", ready, ready},
		{"POST", "/oauth/token", json, json},
		{"POST", "/revoke", json, json},
		{"POST", "/register", json, json},
		{"GET", "/authorize?client_id=x", page, page},
		{"GET", "/login?s=x", page, page},
		{"POST", "/login/password", page, page},
		{"POST", "/consent", page, page},
		{"GET", "/end_session", page, page},
		{"GET", "/internal/keys", pass, json},
	}
	for _, r := range []region.Role{region.RoleStandby, region.RoleFenced} {
		role.Store(int32(r))
		for _, tc := range tests {
			t.Run(r.String()+" "+tc.method+" "+tc.path, func(t *testing.T) {
				want := tc.standby
				if r == region.RoleFenced {
					want = tc.fenced
				}
				req, _ := http.NewRequest(tc.method, srv.URL+tc.path, strings.NewReader("token=x"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body, ct := string(b), resp.Header.Get("Content-Type")
				gated := resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != ""
				switch want {
				case pass:
					if gated {
						t.Fatalf("refused by the gate: %d %s", resp.StatusCode, body)
					}
				case json:
					if !gated || !strings.HasPrefix(ct, "application/json") || !strings.Contains(body, `"temporarily_unavailable"`) {
						t.Fatalf("want 503 JSON + Retry-After, got %d %q %s", resp.StatusCode, ct, body)
					}
				case page:
					if !gated || !strings.HasPrefix(ct, "text/html") {
						t.Fatalf("want 503 HTML + Retry-After, got %d %q %s", resp.StatusCode, ct, body)
					}
				case ready:
					if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `"status":"`+r.String()+`"`) {
						t.Fatalf("want 503 naming %s, got %d %s", r, resp.StatusCode, body)
					}
				}
				if got := resp.Header.Get("Meridian-Role"); got != r.String() {
					t.Fatalf("Meridian-Role = %q", got)
				}
			})
		}
	}
	role.Store(int32(region.RolePrimary))
	resp, err := http.Post(srv.URL+"/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("grant_type=x"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusServiceUnavailable || resp.Header.Get("Meridian-Role") != "" {
		t.Fatalf("primary: the gate interfered: %d", resp.StatusCode)
	}
}
