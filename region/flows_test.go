package region_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/meridian-id/meridian/internal/oidctest"

	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

const redirectURI = "http://127.0.0.1:9999/callback"

// TestCodeFlowEndToEnd drives the whole provider with unmodified relying
// party libraries: discovery, code + PKCE with the login form posted, ID
// token verification, userinfo, refresh rotation, introspection,
// revocation and end-session.
func TestCodeFlowEndToEnd(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	testCodeFlow(t, n)
}

func testCodeFlow(t *testing.T, n *testProvider) {
	ctx := context.Background()
	n.addUser("Ada.Lovelace", "correct horse battery", map[string]string{"name": "Ada Lovelace", "email": "ada@example.com"})
	app := n.addClient(region.ClientSpec{Name: "demo", RedirectURIs: []string{redirectURI}, FirstParty: true,
		PostLogoutRedirectURIs: []string{"http://127.0.0.1:9999/bye"}})
	rs := n.addClient(region.ClientSpec{Name: "api", GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{region.ScopeIntrospect}})

	provider, err := oidc.NewProvider(ctx, n.URL)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	conf := oauth2.Config{ClientID: app.ID, ClientSecret: app.Secret, Endpoint: provider.Endpoint(), RedirectURL: redirectURI,
		Scopes: []string{oidc.ScopeOpenID, "profile", "email", oidc.ScopeOfflineAccess}}
	verifier := oauth2.GenerateVerifier()
	authURL := conf.AuthCodeURL("st4te", oauth2.S256ChallengeOption(verifier), oidc.Nonce("n0nce"))

	b := newBrowser(t)
	loc := b.Login(authURL, redirectURI, "ada.lovelace", "correct horse battery")
	q := loc.Query()
	if q.Get("state") != "st4te" || q.Get("iss") != n.URL || q.Get("code") == "" {
		t.Fatalf("authorization response %s: want state, iss=%s and a code", loc, n.URL)
	}
	assertTag(t, n, q.Get("code"), routing.KindCode)

	tok, err := conf.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(verifier))
	if err != nil {
		t.Fatalf("code exchange: %v", err)
	}
	assertTag(t, n, tok.AccessToken, routing.KindAccess)
	assertTag(t, n, tok.RefreshToken, routing.KindRefresh)
	assertTag(t, n, app.ID, routing.KindClient)

	rawID, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: app.ID}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("ID token: %v", err)
	}
	if idt.Nonce != "n0nce" {
		t.Fatalf("nonce = %q", idt.Nonce)
	}

	ui, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok))
	if err != nil {
		t.Fatalf("userinfo: %v", err)
	}
	var claims struct {
		Name     string `json:"name"`
		Username string `json:"preferred_username"`
	}
	_ = ui.Claims(&claims)
	if ui.Subject != idt.Subject || ui.Email != "ada@example.com" || claims.Name != "Ada Lovelace" || claims.Username != "ada.lovelace" {
		t.Fatalf("userinfo = %+v %+v", ui, claims)
	}

	// Introspection by the resource server (RFC 7662).
	introspect := func(token string) map[string]any {
		status, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {token}}, rs.ID, rs.Secret)
		if status != http.StatusOK {
			t.Fatalf("introspection status %d", status)
		}
		return m
	}
	if m := introspect(tok.AccessToken); m["active"] != true || m["sub"] != idt.Subject || m["client_id"] != app.ID {
		t.Fatalf("introspection = %v", m)
	}

	// Refresh rotation: a new pair; the old refresh token is spent.
	ts := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: tok.RefreshToken})
	tok2, err := ts.Token()
	if err != nil {
		t.Fatalf("refresh: %v", err)
	}
	if tok2.RefreshToken == tok.RefreshToken || tok2.AccessToken == tok.AccessToken {
		t.Fatal("refresh did not rotate")
	}
	assertTag(t, n, tok2.RefreshToken, routing.KindRefresh)

	// Revocation (RFC 7009) of the new access token.
	status, _, _ := postForm(t, n.URL+"/revoke", url.Values{"token": {tok2.AccessToken}, "token_type_hint": {"access_token"}}, app.ID, app.Secret)
	if status != http.StatusOK {
		t.Fatalf("revocation status %d", status)
	}
	if m := introspect(tok2.AccessToken); m["active"] != false {
		t.Fatalf("revoked token still active: %v", m)
	}
	if _, err := provider.UserInfo(ctx, oauth2.StaticTokenSource(tok2)); err == nil {
		t.Fatal("userinfo accepted a revoked token")
	}

	// Client credentials.
	cc := n.addClient(region.ClientSpec{Name: "batch", GrantTypes: []string{region.GrantClientCredentials}})
	cct, err := (&clientcredentials.Config{ClientID: cc.ID, ClientSecret: cc.Secret, TokenURL: provider.Endpoint().TokenURL}).Token(ctx)
	if err != nil {
		t.Fatalf("client_credentials: %v", err)
	}
	assertTag(t, n, cct.AccessToken, routing.KindAccess)
	if m := introspect(cct.AccessToken); m["active"] != true || m["client_id"] != cc.ID {
		t.Fatalf("client_credentials token introspection = %v", m)
	}

	// SSO: a second authorization in the same browser needs no password.
	authURL2 := conf.AuthCodeURL("again", oauth2.S256ChallengeOption(verifier))
	resp := b.Follow(b.Get(authURL2), oidctest.StopAt(redirectURI))
	loc2, _ := resp.Location()
	if resp.StatusCode != http.StatusFound || loc2 == nil || loc2.Query().Get("code") == "" {
		t.Fatalf("SSO second login: status %d location %v", resp.StatusCode, loc2)
	}

	// RP-initiated logout ends the session: the next authorization asks again.
	endURL := provider.Endpoint().AuthURL[:strings.LastIndex(provider.Endpoint().AuthURL, "/")] + "/end_session?" + url.Values{
		"id_token_hint": {rawID}, "post_logout_redirect_uri": {"http://127.0.0.1:9999/bye"}, "client_id": {app.ID}}.Encode()
	resp = b.Get(endURL)
	if l, _ := resp.Location(); resp.StatusCode != http.StatusFound || l == nil || !strings.HasPrefix(l.String(), "http://127.0.0.1:9999/bye") {
		t.Fatalf("end_session: status %d location %v", resp.StatusCode, l)
	}
	resp = b.Follow(b.Get(conf.AuthCodeURL("third", oauth2.S256ChallengeOption(verifier))), oidctest.StopAt(redirectURI))
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `name="username"`) {
		t.Fatalf("after logout expected the login page, got %d", resp.StatusCode)
	}
}

func assertTag(t *testing.T, n *testProvider, artifact string, kind routing.Kind) {
	t.Helper()
	tag, err := n.Codec.Verify(artifact)
	if err != nil || tag.Kind != kind || tag.Region != n.Region {
		t.Fatalf("artifact %.30s…: tag %+v, err %v; want kind %s region %s", artifact, tag, err, kind, n.Region)
	}
}

// TestDiscoveryIsHonest checks the discovery document promises only what
// the provider does.
func TestDiscoveryIsHonest(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	resp, err := http.Get(n.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var d map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"issuer": n.URL, "response_types_supported": "[code]", "code_challenge_methods_supported": "[S256]",
		"authorization_response_iss_parameter_supported": "true", "response_modes_supported": "[query]",
		"grant_types_supported": "[authorization_code refresh_token client_credentials]",
		"registration_endpoint": n.URL + "/register", "id_token_signing_alg_values_supported": "[ES256]",
	}
	for k, v := range want {
		if got := strings.Trim(strings.ReplaceAll(toString(d[k]), ",", " "), " "); got != v {
			t.Errorf("%s = %s, want %s", k, got, v)
		}
	}
	for _, absent := range []string{"device_authorization_endpoint", "check_session_iframe"} {
		if _, ok := d[absent]; ok {
			t.Errorf("%s advertised but not supported", absent)
		}
	}
	keys, err := http.Get(d["jwks_uri"].(string))
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Body.Close()
	var jwks struct {
		Keys []struct {
			Kid, Alg string
		}
	}
	_ = json.NewDecoder(keys.Body).Decode(&jwks)
	if len(jwks.Keys) == 0 || !strings.HasPrefix(jwks.Keys[0].Kid, "eu-") || jwks.Keys[0].Alg != "ES256" {
		t.Fatalf("jwks = %+v, want an ES256 key whose kid names the region", jwks)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case bool:
		if x {
			return "true"
		}
		return "false"
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = toString(e)
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	return ""
}
