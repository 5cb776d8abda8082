package region_test

import (
	"context"
	"encoding/json"
	"fmt"
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
	n := startProvider(t, "eu", st)
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
	n := startProvider(t, "eu", openSQLite(t))
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

// FuzzAdminClientDocument posts arbitrary bodies to the admin API's create
// and update: the answer is 201/200 with a client document, or 400 with
// invalid_client_metadata / invalid_redirect_uri; never a 5xx, never a
// plain-text error, never a client holding meridian:federation or a
// secret the caller chose.
//
//	go test -run '^$' -fuzz FuzzAdminClientDocument -fuzztime 20s ./region/
func FuzzAdminClientDocument(f *testing.F) {
	for _, s := range []string{
		`{"client_name":"a","redirect_uris":["https://a.example/cb"]}`, `{}`, `null`, `[]`, `"x"`, ``, `{"grant_types":["client_credentials"],"scope":"meridian:federation"}`,
		`{"grant_types":["client_credentials"],"client_secret":"mine"}`, `{"redirect_uris":["javascript:alert(1)"]}`,
		`{"token_endpoint_auth_method":"private_key_jwt","jwks":{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]},"grant_types":["client_credentials"]}`,
		`{"response_types":["token"]}`, `{"first_party":"yes"}`, `{"scope":5}`, `{"jwks":"x","grant_types":["client_credentials"]}`,
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	st := openSQLite(f)
	n := startProviderTB(f, "eu", st)
	admin, err := region.CreateClient(context.Background(), st, n.Codec, "eu", region.ClientSpec{Name: "ops",
		GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{region.ScopeAdmin}})
	if err != nil {
		f.Fatal(err)
	}
	s, oe, tok := postFormTB(f, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {region.ScopeAdmin}}, admin.ID, admin.Secret)
	if s != 200 {
		f.Fatalf("admin token: %d %+v", s, oe)
	}
	target, err := region.CreateClient(context.Background(), st, n.Codec, "eu", region.ClientSpec{Name: "target",
		GrantTypes: []string{region.GrantClientCredentials}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body string, update bool) {
		method, u, okStatus := "POST", n.URL+"/admin/clients", http.StatusCreated
		if update {
			method, u, okStatus = "PUT", n.URL+"/admin/clients/"+target.ID, http.StatusOK
		}
		req, _ := http.NewRequest(method, u, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatalf("%s %q: %d, body not JSON: %v", method, body, resp.StatusCode, err)
		}
		switch resp.StatusCode {
		case okStatus:
			if strings.Contains(fmt.Sprint(m["scope"]), region.ScopeFederation) {
				t.Fatalf("%q gave a client %s", body, region.ScopeFederation)
			}
			if sec, _ := m["client_secret"].(string); sec != "" && strings.Contains(body, sec) {
				t.Fatalf("%q chose the secret", body)
			}
		case http.StatusBadRequest:
			if m["error"] != "invalid_client_metadata" && m["error"] != "invalid_redirect_uri" {
				t.Fatalf("%q: 400 with %v", body, m)
			}
		default:
			t.Fatalf("%s %q: %d %v", method, body, resp.StatusCode, m)
		}
	})
}
