package region_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/region"
)

// TestClientManagementDatabaseDown: when the region's database fails, the
// admin API and the RFC 7592 endpoint answer 503 temporarily_unavailable
// with Retry-After (a client can tell "retry" from "refused"), never a
// 500 and never 401/404 as if the token or client were unknown.
func TestClientManagementDatabaseDown(t *testing.T) {
	st := openSQLite(t)
	n := startNode(t, "eu", st)
	admin := n.addClient(region.ClientSpec{Name: "ops", GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{region.ScopeAdmin}})
	s, oe, tok := postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {region.ScopeAdmin}}, admin.ID, admin.Secret)
	if s != 200 {
		t.Fatalf("admin token: %d %+v", s, oe)
	}
	app := n.addClient(region.ClientSpec{Name: "app", RedirectURIs: []string{"https://app.example/cb"}})
	st.Close()

	for _, tc := range []struct{ method, path string }{
		{"GET", "/admin/clients"},
		{"GET", "/admin/clients/" + app.ID},
		{"DELETE", "/admin/clients/" + app.ID},
		{"GET", "/register/" + app.ID},
		{"DELETE", "/register/" + app.ID},
	} {
		req, _ := http.NewRequest(tc.method, n.URL+tc.path, strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s %s with the database down: %d (Retry-After %q)", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	}
}

// TestClientManagementUnknownMethods: other methods and paths under the
// management endpoints get a JSON error, not the mux's plain text.
func TestClientManagementUnknownMethods(t *testing.T) {
	n := startNode(t, "eu", openSQLite(t))
	app := n.addClient(region.ClientSpec{Name: "app", RedirectURIs: []string{"https://app.example/cb"}})
	for _, tc := range []struct{ method, path string }{
		{"PATCH", "/admin/clients/" + app.ID},
		{"DELETE", "/admin/clients"},
		{"GET", "/admin/clients/" + app.ID + "/secret"},
		{"GET", "/admin/users"},
		{"POST", "/register/" + app.ID},
		{"GET", "/register/" + app.ID + "/x"},
	} {
		req, _ := http.NewRequest(tc.method, n.URL+tc.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || m["error"] != "not_found" {
			t.Errorf("%s %s: %d %v", tc.method, tc.path, resp.StatusCode, m)
		}
	}
}
