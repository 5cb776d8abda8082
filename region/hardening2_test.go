package region_test

import (
	"encoding/json"
	"fmt"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/meridian-id/meridian/internal/oidctest"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
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
	n := startProvider(t, "eu", openSQLite(t))
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
	n := startProvider(t, "eu", openSQLite(t))
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

// register posts an RFC 7591 request with the given bearer token ("" for
// none).
func register(t *testing.T, base, token, body string, header http.Header) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/register", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, resp.Header, m
}

func discoveryDoc(t *testing.T, base string) map[string]any {
	t.Helper()
	resp, err := http.Get(base + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return m
}

const goodClient = `{"redirect_uris":["https://app.example/cb"],"client_name":"Reg"}`

// TestRegistrationClosedByDefault: a region without an initial access token
// refuses every registration and does not advertise the endpoint.
func TestRegistrationClosedByDefault(t *testing.T) {
	n := startProviderWith(t, "eu", openSQLite(t), func(c *region.Config) { c.RegistrationToken = "" })
	for _, tok := range []string{"", testRegistrationToken, "anything"} {
		if s, _, m := register(t, n.URL, tok, goodClient, nil); s != http.StatusForbidden || m["client_id"] != nil {
			t.Fatalf("registration with token %q at a closed region: %d %v, want 403", tok, s, m)
		}
	}
	if ep, ok := discoveryDoc(t, n.URL)["registration_endpoint"]; ok && ep != "" {
		t.Fatalf("closed region advertises registration_endpoint %v", ep)
	}
}

// TestRegistrationNeedsInitialAccessToken: an open region registers only
// for the holder of its initial access token (RFC 7591 §3), and throttles.
func TestRegistrationNeedsInitialAccessToken(t *testing.T) {
	n := startProviderWith(t, "eu", openSQLite(t), func(c *region.Config) { c.RegistrationsPerMinute = 4 })
	for name, tok := range map[string]string{"no token": "", "wrong token": "x" + testRegistrationToken} {
		s, h, m := register(t, n.URL, tok, goodClient, nil)
		if s != http.StatusUnauthorized || m["error"] != "invalid_token" || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") || m["client_id"] != nil {
			t.Fatalf("%s: %d %v, want 401 invalid_token", name, s, m)
		}
	}
	if s, _, m := register(t, n.URL, testRegistrationToken, goodClient, nil); s != http.StatusCreated || m["client_id"] == nil {
		t.Fatalf("with the initial access token: %d %v", s, m)
	}
	if ep := discoveryDoc(t, n.URL)["registration_endpoint"]; ep != n.URL+"/register" {
		t.Fatalf("open region's registration_endpoint = %v", ep)
	}
	if s, _, _ := register(t, n.URL, testRegistrationToken, goodClient, nil); s != http.StatusCreated {
		t.Fatalf("fourth attempt (within the limit of 4): %d", s)
	}
	// Four attempts from this address this window (failed ones count): the
	// fifth is refused.
	s, h, m := register(t, n.URL, testRegistrationToken, goodClient, nil)
	if s != http.StatusTooManyRequests || h.Get("Retry-After") == "" || m["client_id"] != nil {
		t.Fatalf("attempt over the limit: %d %v (Retry-After %q), want 429", s, m, h.Get("Retry-After"))
	}
}

// registerFrom is register from the loopback source address source, so a
// node's per-address limit sees each source as its own client.
func registerFrom(t *testing.T, source, base, token, body string) int {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
	req, _ := http.NewRequest(http.MethodPost, base+"/register", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestRegistrationThrottleRegionWide plays an attacker (or a runaway
// script) spreading registrations over the nodes of one region: the limits
// are counted in the region's database, so two nodes on one database admit
// what one would, per address (every attempt, with or without the token)
// and per region (authorized registrations: 6× the per-address limit).
func TestRegistrationThrottleRegionWide(t *testing.T) {
	const perAddress = 3
	public := `{"redirect_uris":["https://app.example/cb"],"client_name":"Reg","token_endpoint_auth_method":"none"}`
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			nodes := twoNodes(t, backend, func(c *region.Config) { c.RegistrationsPerMinute = perAddress })
			// One address, alternating nodes, tokens and none: perAddress
			// attempts in all, then 429 at both nodes.
			for i := range perAddress {
				tok := testRegistrationToken
				want := http.StatusCreated
				if i == 0 {
					tok, want = "wrong", http.StatusUnauthorized
				}
				if got := registerFrom(t, "127.0.1.1", nodes[i%2].URL, tok, public); got != want {
					t.Fatalf("attempt %d at node %d: %d, want %d", i+1, i%2, got, want)
				}
			}
			for i, n := range nodes {
				if got := registerFrom(t, "127.0.1.1", n.URL, testRegistrationToken, public); got != http.StatusTooManyRequests {
					t.Fatalf("node %d after %d attempts from one address across the region: %d, want 429", i, perAddress, got)
				}
			}
			// The region's budget: perAddress-1 authorized registrations
			// came from 127.0.1.1; fill the rest of 6×perAddress from other
			// addresses over both nodes, then a fresh address is refused.
			left := 6*perAddress - (perAddress - 1)
			for i := range left {
				src := fmt.Sprintf("127.0.2.%d", 1+i/perAddress)
				if got := registerFrom(t, src, nodes[i%2].URL, testRegistrationToken, public); got != http.StatusCreated {
					t.Fatalf("registration %d of the region's budget (from %s, node %d): %d", i+1, src, i%2, got)
				}
			}
			for i, n := range nodes {
				if got := registerFrom(t, "127.0.3.1", n.URL, testRegistrationToken, public); got != http.StatusTooManyRequests {
					t.Fatalf("node %d after the region's %d registrations: %d from a fresh address, want 429", i, 6*perAddress, got)
				}
			}
		})
	}
}

// TestRegistrationRedirectURISchemes: only https, loopback http and
// reverse-domain private-use schemes (RFC 8252 §7.1, §7.3) are registered.
func TestRegistrationRedirectURISchemes(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	for _, tt := range []struct {
		uri string
		ok  bool
	}{
		{"https://app.example/cb", true},
		{"http://127.0.0.1:8765/cb", true},
		{"http://[::1]:8765/cb", true},
		{"http://localhost:8765/cb", true},
		{"com.example.app:/oauth2redirect", true},
		{"view-source:https://app.example/cb", false},
		{"blob:https://app.example/1234", false},
		{"jar:https://app.example/a.jar!/cb", false},
		{"ms-settings:privacy", false},
		{"javascript:alert(1)", false},
		{"data:text/html,hi", false},
		{"file:///etc/passwd", false},
		{"myapp:/cb", false},
		{"http://app.example/cb", false},
		{"https://evil.example@app.example/cb", false},
	} {
		for _, field := range []string{"redirect_uris", "post_logout_redirect_uris"} {
			body, _ := json.Marshal(map[string]any{"redirect_uris": []string{"https://app.example/cb"}, field: []string{tt.uri}})
			s, _, m := register(t, n.URL, testRegistrationToken, string(body), nil)
			if tt.ok && s != http.StatusCreated {
				t.Errorf("%s %q refused: %d %v", field, tt.uri, s, m)
			}
			if !tt.ok && (s != http.StatusBadRequest || m["error"] != "invalid_redirect_uri") {
				t.Errorf("%s %q: %d %v, want 400 invalid_redirect_uri", field, tt.uri, s, m)
			}
		}
	}
}

// TestCORSOnlyOnJavaScriptEndpoints: CORS (any origin, no credentials) is
// answered where SPAs call, never on registration, login, consent or logout.
func TestCORSOnlyOnJavaScriptEndpoints(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	preflight := func(path, method string) string {
		req, _ := http.NewRequest(http.MethodOptions, n.URL+path, nil)
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Access-Control-Request-Method", method)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Access-Control-Allow-Origin")
	}
	simple := func(method, path string) string {
		req, _ := http.NewRequest(method, n.URL+path, strings.NewReader(""))
		req.Header.Set("Origin", "https://evil.example")
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Errorf("%s %s allows credentials", method, path)
		}
		return resp.Header.Get("Access-Control-Allow-Origin")
	}
	for _, tt := range []struct {
		method, path string
		cors         bool
	}{
		{"POST", "/oauth/token", true},
		{"GET", "/userinfo", true},
		{"GET", "/keys", true},
		{"GET", "/.well-known/openid-configuration", true},
		{"POST", "/revoke", true},
		{"POST", "/register", false},
		{"GET", "/login", false},
		{"POST", "/login", false},
		{"POST", "/login/password", false},
		{"POST", "/login/totp", false},
		{"POST", "/consent", false},
		{"GET", "/authorize", false},
		{"GET", "/end_session", false},
		{"POST", "/oauth/introspect", false},
	} {
		pre, got := preflight(tt.path, tt.method), simple(tt.method, tt.path)
		if tt.cors && (pre != "*" || got != "*") {
			t.Errorf("%s %s: Access-Control-Allow-Origin preflight %q, request %q, want *", tt.method, tt.path, pre, got)
		}
		if !tt.cors && (pre != "" || got != "") {
			t.Errorf("%s %s: Access-Control-Allow-Origin preflight %q, request %q, want none", tt.method, tt.path, pre, got)
		}
	}
}

// TestRequestURINotSupported: request_uri is refused with the OIDC error,
// not silently ignored.
func TestRequestURINotSupported(t *testing.T) {
	e := newNegEnv(t)
	q := authorizeError(t, authorizeURL(e.n.URL, e.conf.ID, url.Values{"request_uri": {"https://evil.example/request.jwt"}}))
	if q.Get("error") != "request_uri_not_supported" || q.Get("code") != "" || q.Get("state") != "s" || q.Get("iss") != e.n.URL {
		t.Fatalf("authorization response %v, want error=request_uri_not_supported with state and iss", q)
	}
}

// TestEndSessionWithoutHintAsksTheUser: RP-initiated logout without a valid
// id_token_hint ends nothing and redirects nowhere until the user confirms
// on a CSRF-protected page; with a hint it redirects only to a URI
// registered for the client the hint names.
func TestEndSessionWithoutHintAsksTheUser(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("grace", "hopper-1906-cobol", nil)
	const bye = "http://127.0.0.1:9999/bye"
	app := n.addClient(region.ClientSpec{Name: "web", RedirectURIs: []string{redirectURI}, PostLogoutRedirectURIs: []string{bye}, FirstParty: true})
	other := n.addClient(region.ClientSpec{Name: "other", RedirectURIs: []string{redirectURI}, PostLogoutRedirectURIs: []string{"http://127.0.0.1:9999/other-bye"}, FirstParty: true})

	b := newBrowser(t)
	loc := b.Login(authorizeURL(n.URL, app.ID, nil), redirectURI, "grace", "hopper-1906-cobol")
	_, _, tok := postForm(t, n.URL+"/oauth/token", codeForm(loc.Query().Get("code"), testVerifier), app.ID, app.Secret)
	idToken, _ := tok["id_token"].(string)
	signedIn := func() bool {
		resp := b.Follow(b.Get(authorizeURL(n.URL, app.ID, nil)), oidctest.StopAt(redirectURI))
		resp.Body.Close()
		l, _ := resp.Location()
		return resp.StatusCode == http.StatusFound && l != nil && l.Query().Get("code") != ""
	}
	if !signedIn() {
		t.Fatal("no SSO session to begin with")
	}

	for name, q := range map[string]url.Values{
		"no hint":      {"client_id": {app.ID}, "post_logout_redirect_uri": {bye}},
		"forged hint":  {"id_token_hint": {flip(idToken)}, "post_logout_redirect_uri": {bye}},
		"garbage hint": {"id_token_hint": {"a.b.c"}, "client_id": {app.ID}, "post_logout_redirect_uri": {bye}},
	} {
		p := oidctest.ReadPage(b.Get(n.URL + "/end_session?" + q.Encode()))
		if p.Status != http.StatusOK || !strings.Contains(p.Body, `name="csrf"`) || !strings.Contains(p.Body, `action="/end_session"`) {
			t.Fatalf("%s: %d, want the confirmation page: %s", name, p.Status, p.Body)
		}
		if !signedIn() {
			t.Fatalf("%s: the session ended without the user's confirmation", name)
		}
	}
	// A cross-site form post (no CSRF token) ends nothing.
	resp := b.Post(n.URL+"/end_session", url.Values{"confirm": {"yes"}, "post_logout_redirect_uri": {bye}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !signedIn() {
		t.Fatalf("confirmation without CSRF token: %d, session ended: %v", resp.StatusCode, !signedIn())
	}
	// With a hint, a URI registered for another client is refused.
	resp = b.Get(n.URL + "/end_session?" + url.Values{"id_token_hint": {idToken}, "post_logout_redirect_uri": {"http://127.0.0.1:9999/other-bye"}}.Encode())
	resp.Body.Close()
	if l := resp.Header.Get("Location"); strings.HasPrefix(l, "http://127.0.0.1:9999/") || !signedIn() {
		t.Fatalf("hint for %s sent the browser to %q (other client %s)", app.ID, l, other.ID)
	}
	// The user confirms: the session ends, the browser stays on Meridian.
	p := oidctest.ReadPage(b.Get(n.URL + "/end_session?" + url.Values{"post_logout_redirect_uri": {bye}, "client_id": {app.ID}}.Encode()))
	resp = b.Submit(p, url.Values{"confirm": {"yes"}})
	resp.Body.Close()
	if l := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || l != "/logged-out" {
		t.Fatalf("confirmed logout: %d %q, want 303 /logged-out", resp.StatusCode, l)
	}
	if signedIn() {
		t.Fatal("the session survived a confirmed logout")
	}
	// With a valid hint: straight to the registered URI, session ended.
	loc = b.Login(authorizeURL(n.URL, app.ID, nil), redirectURI, "grace", "hopper-1906-cobol")
	_, _, tok = postForm(t, n.URL+"/oauth/token", codeForm(loc.Query().Get("code"), testVerifier), app.ID, app.Secret)
	resp = b.Get(n.URL + "/end_session?" + url.Values{"id_token_hint": {tok["id_token"].(string)}, "post_logout_redirect_uri": {bye}}.Encode())
	resp.Body.Close()
	if l := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(l, bye) || signedIn() {
		t.Fatalf("logout with a valid hint: %d %q", resp.StatusCode, l)
	}
}

// TestClientAuthFailuresLookAlike plays a caller probing the back-channel
// endpoints for client ids: an unknown id, a well-formed id of this region
// that was never registered, another region's id, a registered id with a
// wrong secret must each get the same 401 answer from an endpoint, which
// names no cause and no library internals; so must no credentials at all,
// except that its description may say so (the caller knows it sent none).
func TestClientAuthFailuresLookAlike(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, AuthMethod: region.AuthSecretBasic})
	_, _, m := postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, c.ID, c.Secret)
	tok, _ := m["access_token"].(string)
	if tok == "" {
		t.Fatalf("no token for the registered client: %v", m)
	}
	ghost, foreign := n.mint(routing.KindClient, "eu"), n.mint(routing.KindClient, "us")
	probes := []struct{ name, user, pass string }{
		{"unknown id", "nobody", "x"},
		{"unregistered id of this region", ghost, "x"},
		{"another region's id", foreign, "x"},
		{"wrong secret", c.ID, "wrong"},
		{"no credentials", "", ""},
	}
	for _, ep := range []struct {
		path string
		form url.Values
	}{
		{"/oauth/introspect", url.Values{"token": {tok}}},
		{"/revoke", url.Values{"token": {tok}}},
		{"/oauth/token", url.Values{"grant_type": {"client_credentials"}}},
	} {
		t.Run(ep.path, func(t *testing.T) {
			var first oauthError
			for i, p := range probes {
				s, oe, m := postForm(t, n.URL+ep.path, ep.form, p.user, p.pass)
				if s != http.StatusUnauthorized || oe.Error != "invalid_client" || m["active"] != nil || m["access_token"] != nil {
					t.Fatalf("%s: %d %+v %v, want 401 invalid_client", p.name, s, oe, m)
				}
				for _, leak := range []string{"ErrorType", "Parent", "not found", "no secret"} {
					if strings.Contains(oe.Description, leak) {
						t.Errorf("%s: description %q reveals %q", p.name, oe.Description, leak)
					}
				}
				if i == 0 {
					first = oe
				} else if p.user != "" && oe != first {
					t.Errorf("%s: %+v differs from %s's %+v", p.name, oe, probes[0].name, first)
				}
			}
		})
	}
	// The token was never revoked by a failed caller.
	if _, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {tok}}, c.ID, c.Secret); m["active"] != true {
		t.Fatalf("the token is no longer active after the probes: %v", m)
	}
}
