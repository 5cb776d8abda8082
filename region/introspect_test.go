package region_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

// TestIntrospectionFastPathAnswersAsOp: the node answers the common
// introspection call (a local client's secret over Basic or post, an opaque
// token of the region) itself instead of through op. For every case, the
// same call is also sent with one extra form field nobody reads, which the
// fast path leaves to op: status, Content-Type and body must be identical
// byte for byte, for active, revoked, unknown and foreign-client tokens,
// callers with and without the introspection scope, wrong secrets and
// client_secret_post.
func TestIntrospectionFastPathAnswersAsOp(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	owner := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}})
	rs := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{region.ScopeIntrospect}})
	other := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}})
	post := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, AuthMethod: region.AuthSecretPost, Scopes: []string{region.ScopeIntrospect}})
	issue := func() string {
		t.Helper()
		status, _, m := postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, owner.ID, owner.Secret)
		tok, _ := m["access_token"].(string)
		if status != 200 || tok == "" {
			t.Fatalf("client_credentials: %d %v", status, m)
		}
		return tok
	}
	active, revoked := issue(), issue()
	if status, _, _ := postForm(t, n.URL+"/revoke", url.Values{"token": {revoked}}, owner.ID, owner.Secret); status != 200 {
		t.Fatalf("revoke: %d", status)
	}
	unknown, foreign := n.mint(routing.KindAccess, "eu"), n.mint(routing.KindAccess, "us")
	basic := func(id, secret string) func(*http.Request) {
		return func(r *http.Request) { r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret)) }
	}
	for _, tc := range []struct {
		name   string
		form   url.Values
		auth   func(*http.Request)
		status int
		active bool
	}{
		{"own token", url.Values{"token": {active}}, basic(owner.ID, owner.Secret), 200, true},
		{"own token with hint", url.Values{"token": {active}, "token_type_hint": {"access_token"}}, basic(owner.ID, owner.Secret), 200, true},
		{"resource server with scope", url.Values{"token": {active}}, basic(rs.ID, rs.Secret), 200, true},
		{"client without introspect scope", url.Values{"token": {active}}, basic(other.ID, other.Secret), 200, false},
		{"revoked token", url.Values{"token": {revoked}}, basic(rs.ID, rs.Secret), 200, false},
		{"unknown token", url.Values{"token": {unknown}}, basic(rs.ID, rs.Secret), 200, false},
		{"another region's token", url.Values{"token": {foreign}}, basic(rs.ID, rs.Secret), 200, false},
		{"garbage token", url.Values{"token": {"not-a-token"}}, basic(rs.ID, rs.Secret), 200, false},
		{"wrong secret", url.Values{"token": {active}}, basic(rs.ID, "wrong"), 401, false},
		{"unknown client", url.Values{"token": {active}}, basic(strings.Replace(rs.ID, "eu", "us", 1), rs.Secret), 401, false},
		{"client_secret_post", url.Values{"token": {active}, "client_id": {post.ID}, "client_secret": {post.Secret}}, nil, 200, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fast := introspectRaw(t, n.URL, tc.form, tc.auth)
			slowForm := url.Values{"x_unread": {"1"}}
			for k, v := range tc.form {
				slowForm[k] = v
			}
			slow := introspectRaw(t, n.URL, slowForm, tc.auth)
			if fast != slow {
				t.Fatalf("fast path and op differ:\nfast: %s\nop:   %s", fast, slow)
			}
			if !strings.HasPrefix(fast, http.StatusText(tc.status)) {
				t.Fatalf("got %s, want status %d", fast, tc.status)
			}
			if tc.status == 200 && strings.Contains(fast, `"active":true`) != tc.active {
				t.Fatalf("got %s, want active=%v", fast, tc.active)
			}
		})
	}
}

// introspectRaw posts form to the node's introspection endpoint and returns
// "<status text> <content type> <body>".
func introspectRaw(t *testing.T, base string, form url.Values, auth func(*http.Request)) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, base+"/oauth/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if auth != nil {
		auth(req)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return http.StatusText(resp.StatusCode) + " " + resp.Header.Get("Content-Type") + " " + string(body)
}
