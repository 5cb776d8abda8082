package region_test

import (
	"encoding/json"
	jose "github.com/go-jose/go-jose/v4"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/region"
)

// pkceCode logs grace in for client with a fresh S256 challenge and returns
// the code and its verifier.
func (e *negEnv) pkceCode(t *testing.T, clientID string) (code, verifier string) {
	t.Helper()
	verifier = oauth2.GenerateVerifier()
	return e.code(t, clientID, url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}), verifier
}

func codeForm(code, verifier string) url.Values {
	f := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}}
	if verifier != "" {
		f.Set("code_verifier", verifier)
	}
	return f
}

// TestLeakedCodeWithoutClientCredentialsChangesNothing: the client is
// authenticated (and the PKCE verifier checked) before the code is redeemed
// (RFC 6749 §4.1.3), so an attacker holding a leaked code can neither burn
// it nor revoke the tokens the legitimate client gets with it.
func TestLeakedCodeWithoutClientCredentialsChangesNothing(t *testing.T) {
	e := newNegEnv(t)
	type attempt struct {
		user, pass string
		extra      url.Values
		verifier   bool // send the right verifier
	}
	tests := []struct {
		name   string
		client func() region.RegisteredClient
		try    attempt
	}{
		{"no credentials", func() region.RegisteredClient { return e.conf }, attempt{extra: url.Values{"client_id": {e.conf.ID}}, verifier: true}},
		{"wrong secret", func() region.RegisteredClient { return e.conf }, attempt{user: e.conf.ID, pass: "not-the-secret", verifier: true}},
		{"wrong secret in the body", func() region.RegisteredClient { return e.conf }, attempt{extra: url.Values{"client_id": {e.conf.ID}, "client_secret": {"nope"}}, verifier: true}},
		{"another client's credentials", func() region.RegisteredClient { return e.conf }, attempt{user: e.other.ID, pass: e.other.Secret, verifier: true}},
		{"public client, no verifier", func() region.RegisteredClient { return e.public }, attempt{extra: url.Values{"client_id": {e.public.ID}}}},
		{"public client, wrong verifier", func() region.RegisteredClient { return e.public }, attempt{extra: url.Values{"client_id": {e.public.ID}, "code_verifier": {oauth2.GenerateVerifier()}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.client()
			code, verifier := e.pkceCode(t, c.ID)
			form := codeForm(code, "")
			if tt.try.verifier {
				form.Set("code_verifier", verifier)
			}
			for k, v := range tt.try.extra {
				form[k] = v
			}
			for range 3 {
				if s, oe, m := postForm(t, e.n.URL+"/oauth/token", form, tt.try.user, tt.try.pass); s == 200 || m["access_token"] != nil {
					t.Fatalf("attacker redeemed the code: %d %+v", s, oe)
				}
			}
			legit := codeForm(code, verifier)
			if c.Secret == "" {
				legit.Set("client_id", c.ID)
			}
			s, oe, m := postForm(t, e.n.URL+"/oauth/token", legit, c.ID, c.Secret)
			if s != 200 {
				t.Fatalf("legitimate redemption after the attacker's attempts: %d %+v, want 200", s, oe)
			}
			if !userinfoOK(t, e.n.URL, m["access_token"].(string)) {
				t.Fatal("the legitimate client's access token is not active")
			}
			// A replay by the legitimate client is still detected and revokes.
			if s, _, _ := postForm(t, e.n.URL+"/oauth/token", legit, c.ID, c.Secret); s != 400 {
				t.Fatalf("replay: %d, want 400", s)
			}
			if userinfoOK(t, e.n.URL, m["access_token"].(string)) {
				t.Fatal("a replayed code left its tokens active")
			}
		})
	}
}

// userinfoOK reports whether userinfo accepts the access token.
func userinfoOK(t *testing.T, base, token string) bool {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// TestJWTAccessTokenTypeAndIDTokenConfusion: JWT access tokens carry typ
// at+jwt (RFC 9068 §2.1), and userinfo, introspection and dereference
// refuse an ID token presented as an access token.
func TestJWTAccessTokenTypeAndIDTokenConfusion(t *testing.T) {
	n := startNode(t, "eu", openSQLite(t))
	n.addUser("jo", "jo-password-123", nil)
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true, AccessTokenFormat: region.FormatJWT})
	rs := n.addClient(region.ClientSpec{Name: "rs", GrantTypes: []string{region.GrantClientCredentials},
		Scopes: []string{region.ScopeIntrospect, region.ScopeDereference}})
	loc := newBrowser(t).Login(authURL(n, c.ID), redirectURI, "jo", "jo-password-123")
	m := exchange(t, n, c, loc.Query().Get("code"))
	at, idt := m["access_token"].(string), m["id_token"].(string)

	for name, tok := range map[string]string{"access token": at, "ID token": idt} {
		sig, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatalf("%s is not a JWS: %v", name, err)
		}
		typ, _ := sig.Signatures[0].Protected.ExtraHeaders[jose.HeaderType].(string)
		if want := map[string]string{"access token": "at+jwt", "ID token": "JWT"}[name]; typ != want {
			t.Fatalf("%s typ = %q, want %q", name, typ, want)
		}
	}
	if !userinfoOK(t, n.URL, at) {
		t.Fatal("userinfo refuses the at+jwt access token")
	}
	if s, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {at}}, rs.ID, rs.Secret); s != 200 || m["active"] != true {
		t.Fatalf("introspection of the at+jwt access token: %d %v", s, m)
	}

	t.Run("userinfo", func(t *testing.T) {
		if userinfoOK(t, n.URL, idt) {
			t.Fatal("userinfo accepted an ID token as access token")
		}
	})
	t.Run("introspection", func(t *testing.T) {
		for _, caller := range []region.RegisteredClient{rs, c} {
			if s, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {idt}}, caller.ID, caller.Secret); s != 200 || m["active"] != false {
				t.Fatalf("introspection of an ID token: %d %v, want active=false", s, m)
			}
		}
	})
	t.Run("dereference", func(t *testing.T) {
		if s, _, m := postForm(t, n.URL+"/dereference", url.Values{"token": {idt}}, rs.ID, rs.Secret); s != 400 || m["access_token"] != nil {
			t.Fatalf("dereference of an ID token: %d %v, want 400", s, m)
		}
	})
}

// TestRegisteredTokenEndpointAuthMethod: the token endpoint accepts a
// client's secret only by the method it registered; introspection and
// revocation accept every method discovery advertises for them.
func TestRegisteredTokenEndpointAuthMethod(t *testing.T) {
	n := startNode(t, "eu", openSQLite(t))
	basic := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, AuthMethod: region.AuthSecretBasic})
	post := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, AuthMethod: region.AuthSecretPost})
	cc := url.Values{"grant_type": {"client_credentials"}}
	inBody := func(form url.Values, c region.RegisteredClient) url.Values {
		f := url.Values{"client_id": {c.ID}, "client_secret": {c.Secret}}
		for k, v := range form {
			f[k] = v
		}
		return f
	}
	t.Run("token endpoint", func(t *testing.T) {
		for _, tt := range []struct {
			name       string
			form       url.Values
			user, pass string
			want       int
		}{
			{"basic client by basic", cc, basic.ID, basic.Secret, 200},
			{"basic client by post", inBody(cc, basic), "", "", 401},
			{"post client by post", inBody(cc, post), "", "", 200},
			{"post client by basic", cc, post.ID, post.Secret, 401},
			{"two methods at once", inBody(cc, basic), basic.ID, basic.Secret, 401},
		} {
			t.Run(tt.name, func(t *testing.T) {
				s, oe, m := postForm(t, n.URL+"/oauth/token", tt.form, tt.user, tt.pass)
				if s != tt.want || (tt.want == 401 && (oe.Error != "invalid_client" || m["access_token"] != nil)) {
					t.Fatalf("%d %+v, want %d", s, oe, tt.want)
				}
			})
		}
	})
	_, _, m := postForm(t, n.URL+"/oauth/token", inBody(cc, post), "", "")
	postToken := m["access_token"].(string)
	_, _, m = postForm(t, n.URL+"/oauth/token", cc, basic.ID, basic.Secret)
	basicToken := m["access_token"].(string)

	resp, err := http.Get(n.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	advertised := func(key string) []string {
		var out []string
		for _, v := range doc[key].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	t.Run("introspection", func(t *testing.T) {
		methods := advertised("introspection_endpoint_auth_methods_supported")
		for _, tt := range []struct {
			method     string
			c          region.RegisteredClient
			token      string
			form       url.Values
			user, pass string
		}{
			{region.AuthSecretPost, post, postToken, inBody(url.Values{"token": {postToken}}, post), "", ""},
			{region.AuthSecretBasic, post, postToken, url.Values{"token": {postToken}}, post.ID, post.Secret},
			{region.AuthSecretPost, basic, basicToken, inBody(url.Values{"token": {basicToken}}, basic), "", ""},
			{region.AuthSecretBasic, basic, basicToken, url.Values{"token": {basicToken}}, basic.ID, basic.Secret},
		} {
			if !slices.Contains(methods, tt.method) {
				t.Fatalf("discovery does not advertise %s for introspection: %v", tt.method, methods)
			}
			if s, oe, m := postForm(t, n.URL+"/oauth/introspect", tt.form, tt.user, tt.pass); s != 200 || m["active"] != true {
				t.Fatalf("%s client introspecting its own token by %s: %d %+v %v", tt.c.AuthMethod, tt.method, s, oe, m)
			}
		}
		wrong := url.Values{"token": {postToken}, "client_id": {post.ID}, "client_secret": {"wrong"}}
		if s, oe, _ := postForm(t, n.URL+"/oauth/introspect", wrong, "", ""); s != 401 || oe.Error != "invalid_client" {
			t.Fatalf("wrong secret by post: %d %+v", s, oe)
		}
	})
	t.Run("revocation", func(t *testing.T) {
		if !slices.Contains(advertised("revocation_endpoint_auth_methods_supported"), region.AuthSecretPost) {
			t.Fatal("discovery does not advertise client_secret_post for revocation")
		}
		if s, oe, _ := postForm(t, n.URL+"/revoke", inBody(url.Values{"token": {postToken}}, post), "", ""); s != 200 {
			t.Fatalf("revocation by post: %d %+v", s, oe)
		}
		if _, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {postToken}}, post.ID, post.Secret); m["active"] != false {
			t.Fatal("revoked token still active")
		}
	})
}
