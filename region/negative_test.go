package region_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/oidctest"

	"github.com/meridian-id/meridian/region"
)

// negEnv is a node with one user, a confidential and a public client.
type negEnv struct {
	n      *testProvider
	conf   region.RegisteredClient
	public region.RegisteredClient
	other  region.RegisteredClient
}

func newNegEnv(t *testing.T) *negEnv {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("grace", "hopper-1906-cobol", nil)
	return &negEnv{
		n:      n,
		conf:   n.addClient(region.ClientSpec{Name: "web", RedirectURIs: []string{redirectURI}, FirstParty: true}),
		public: n.addClient(region.ClientSpec{Name: "spa", RedirectURIs: []string{redirectURI}, Public: true, FirstParty: true}),
		other:  n.addClient(region.ClientSpec{Name: "other", RedirectURIs: []string{redirectURI}, FirstParty: true}),
	}
}

// testVerifier is the PKCE verifier of every authorization request the
// helpers build unless a test sets code_challenge itself ("" for none).
const testVerifier = "meridian-test-verifier-0123456789-abcdefghijklmnopq"

func authorizeURL(base, clientID string, extra url.Values) string {
	q := url.Values{"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {redirectURI},
		"scope": {"openid offline_access"}, "state": {"s"}}
	if _, ok := extra["code_challenge"]; !ok {
		q.Set("code_challenge", oauth2.S256ChallengeFromVerifier(testVerifier))
		q.Set("code_challenge_method", "S256")
	}
	for k, v := range extra {
		q[k] = v
	}
	if q.Get("code_challenge") == "" {
		q.Del("code_challenge")
	}
	return base + "/authorize?" + q.Encode()
}

// login returns a fresh code for client with the given PKCE parameters.
func (e *negEnv) code(t *testing.T, clientID string, extra url.Values) string {
	loc := newBrowser(t).Login(authorizeURL(e.n.URL, clientID, extra), redirectURI, "grace", "hopper-1906-cobol")
	c := loc.Query().Get("code")
	if c == "" {
		t.Fatalf("no code in %s", loc)
	}
	return c
}

// token posts form to the token endpoint as client c; a code redemption
// without a code_verifier key gets testVerifier.
func (e *negEnv) token(t *testing.T, c region.RegisteredClient, form url.Values) (int, oauthError, map[string]any) {
	if _, ok := form["code_verifier"]; !ok && form.Get("grant_type") == "authorization_code" {
		form.Set("code_verifier", testVerifier)
	}
	return postForm(t, e.n.URL+"/oauth/token", form, c.ID, c.Secret)
}

func (e *negEnv) introspectActive(t *testing.T, token string) bool {
	_, _, m := postForm(t, e.n.URL+"/oauth/introspect", url.Values{"token": {token}}, e.conf.ID, e.conf.Secret)
	return m["active"] == true
}

func TestRedirectURIExactMatch(t *testing.T) {
	e := newNegEnv(t)
	for name, uri := range map[string]string{
		"trailing slash": redirectURI + "/",
		"case":           "http://127.0.0.1:9999/Callback",
		"added query":    redirectURI + "?next=/admin",
		"fragment":       redirectURI + "#frag",
		"port":           "http://127.0.0.1:9998/callback",
		"scheme":         "https://127.0.0.1:9999/callback",
		"host":           "http://evil.example/callback",
		"missing":        "",
	} {
		t.Run(name, func(t *testing.T) {
			resp := newBrowser(t).Get(authorizeURL(e.n.URL, e.conf.ID, url.Values{"redirect_uri": {uri}}))
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
				t.Fatalf("status %d location %q: an unregistered redirect_uri must get an error page, never a redirect", resp.StatusCode, resp.Header.Get("Location"))
			}
			if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html") {
				t.Fatalf("want an HTML error page, got %q", resp.Header.Get("Content-Type"))
			}
		})
	}
}

// authorizeError returns the error an authorization request is redirected with.
func authorizeError(t *testing.T, u string) url.Values {
	t.Helper()
	b := newBrowser(t)
	resp := b.Follow(b.Get(u), oidctest.StopAt(redirectURI))
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || resp.StatusCode != http.StatusFound {
		t.Fatalf("status %d, no redirect: %v", resp.StatusCode, err)
	}
	if !strings.HasPrefix(loc.String(), redirectURI) {
		t.Fatalf("redirected to %s", loc)
	}
	if loc.Fragment != "" {
		f, _ := url.ParseQuery(loc.Fragment)
		return f
	}
	return loc.Query()
}

func TestAuthorizeErrors(t *testing.T) {
	e := newNegEnv(t)
	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	tests := []struct {
		name, client, want string
		extra              url.Values
	}{
		{"public client without PKCE", e.public.ID, "invalid_request", url.Values{"code_challenge": {""}}},
		{"confidential client without PKCE", e.conf.ID, "invalid_request", url.Values{"code_challenge": {""}}},
		{"plain PKCE", e.public.ID, "invalid_request", url.Values{"code_challenge": {"abcdefghijabcdefghijabcdefghijabcdefghijabc"}, "code_challenge_method": {"plain"}}},
		{"PKCE method missing means plain", e.public.ID, "invalid_request", url.Values{"code_challenge": {challenge}}},
		{"response_type=token", e.conf.ID, "unauthorized_client", url.Values{"response_type": {"token"}}},
		{"response_type=id_token", e.conf.ID, "unauthorized_client", url.Values{"response_type": {"id_token"}}},
		{"prompt=none without session", e.conf.ID, "login_required", url.Values{"prompt": {"none"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := authorizeError(t, authorizeURL(e.n.URL, tt.client, tt.extra))
			if q.Get("error") != tt.want || q.Get("state") != "s" || q.Get("iss") != e.n.URL {
				t.Fatalf("error response %v: want error=%s with state and iss", q, tt.want)
			}
		})
	}
}

func TestPKCE(t *testing.T) {
	e := newNegEnv(t)
	verifier := oauth2.GenerateVerifier()
	withPKCE := url.Values{"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	exchange := func(c region.RegisteredClient, code, v string) (int, oauthError) {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {v}}
		if c.Secret == "" {
			form.Set("client_id", c.ID)
		}
		s, oe, _ := e.token(t, c, form)
		return s, oe
	}
	t.Run("missing verifier", func(t *testing.T) {
		if s, oe := exchange(e.public, e.code(t, e.public.ID, withPKCE), ""); s != 400 || oe.Error != "invalid_request" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("confidential client, missing verifier", func(t *testing.T) {
		if s, oe := exchange(e.conf, e.code(t, e.conf.ID, withPKCE), ""); s != 400 || oe.Error != "invalid_request" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("wrong verifier", func(t *testing.T) {
		if s, oe := exchange(e.public, e.code(t, e.public.ID, withPKCE), oauth2.GenerateVerifier()); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("correct verifier", func(t *testing.T) {
		if s, oe := exchange(e.public, e.code(t, e.public.ID, withPKCE), verifier); s != 200 {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("confidential client, correct verifier", func(t *testing.T) {
		if s, oe := exchange(e.conf, e.code(t, e.conf.ID, withPKCE), verifier); s != 200 {
			t.Fatalf("%d %+v", s, oe)
		}
	})
}

func TestCodeReuseRevokesTokens(t *testing.T) {
	e := newNegEnv(t)
	code := e.code(t, e.conf.ID, nil)
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}}
	s, oe, first := e.token(t, e.conf, form)
	if s != 200 {
		t.Fatalf("first redemption: %d %+v", s, oe)
	}
	at, rt := first["access_token"].(string), first["refresh_token"].(string)
	if !e.introspectActive(t, at) {
		t.Fatal("fresh token inactive")
	}
	s, oe, _ = e.token(t, e.conf, form)
	if s != 400 || oe.Error != "invalid_grant" {
		t.Fatalf("second redemption: %d %+v, want invalid_grant", s, oe)
	}
	if e.introspectActive(t, at) {
		t.Fatal("access token from a replayed code is still active")
	}
	if s, oe, _ := e.token(t, e.conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); s != 400 || oe.Error != "invalid_grant" {
		t.Fatalf("refresh token from a replayed code: %d %+v", s, oe)
	}
}

func TestRefreshTokens(t *testing.T) {
	e := newNegEnv(t)
	first := func() map[string]any {
		code := e.code(t, e.conf.ID, nil)
		s, oe, m := e.token(t, e.conf, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}})
		if s != 200 {
			t.Fatalf("%d %+v", s, oe)
		}
		return m
	}
	refresh := func(c region.RegisteredClient, rt string) (int, oauthError, map[string]any) {
		return e.token(t, c, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	}
	t.Run("reuse revokes the family", func(t *testing.T) {
		m := first()
		rt0 := m["refresh_token"].(string)
		s, oe, m1 := refresh(e.conf, rt0)
		if s != 200 {
			t.Fatalf("rotation: %d %+v", s, oe)
		}
		rt1, at1 := m1["refresh_token"].(string), m1["access_token"].(string)
		if s, oe, _ := refresh(e.conf, rt0); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("replayed refresh token: %d %+v", s, oe)
		}
		if s, oe, _ := refresh(e.conf, rt1); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("successor after reuse: %d %+v, want the family revoked", s, oe)
		}
		if e.introspectActive(t, at1) {
			t.Fatal("access token of a revoked family is active")
		}
	})
	t.Run("another client's credentials", func(t *testing.T) {
		m := first()
		if s, oe, _ := refresh(e.other, m["refresh_token"].(string)); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("wrong client secret", func(t *testing.T) {
		m := first()
		bad := e.conf
		bad.Secret = "not-the-secret"
		if s, oe, _ := refresh(bad, m["refresh_token"].(string)); s != 401 || oe.Error != "invalid_client" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
}

func TestIntrospectionRequiresClientAuth(t *testing.T) {
	e := newNegEnv(t)
	for name, creds := range map[string][2]string{"none": {"", ""}, "wrong secret": {e.conf.ID, "nope"}} {
		t.Run(name, func(t *testing.T) {
			s, oe, _ := postForm(t, e.n.URL+"/oauth/introspect", url.Values{"token": {"whatever"}}, creds[0], creds[1])
			if s != 401 || oe.Error != "invalid_client" {
				t.Fatalf("%d %+v, want 401 invalid_client", s, oe)
			}
		})
	}
}

// flip changes one character of the random part of an artifact.
func flip(s string) string {
	b := []byte(s)
	i := strings.LastIndexByte(s, '.') + 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestForgedTags(t *testing.T) {
	e := newNegEnv(t)
	code := e.code(t, e.conf.ID, nil)
	_, _, m := e.token(t, e.conf, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}})
	at, rt := m["access_token"].(string), m["refresh_token"].(string)
	forged := map[string]string{
		"flipped bit":      flip(at),
		"other region":     strings.Replace(at, ".eu.", ".us.", 1),
		"unknown region":   strings.Replace(at, ".eu.", ".mars.", 1),
		"url as region":    strings.Replace(at, ".eu.", ".evil.example.", 1),
		"oversized":        at + strings.Repeat("A", 5000),
		"non-ascii":        strings.Replace(at, ".eu.", ".éu.", 1),
		"refresh as token": rt,
	}
	for name, tok := range forged {
		t.Run("introspect "+name, func(t *testing.T) {
			if e.introspectActive(t, tok) {
				t.Fatal("forged token active")
			}
		})
		t.Run("userinfo "+name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, e.n.URL+"/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d", resp.StatusCode)
			}
		})
	}
	t.Run("token endpoint flipped code", func(t *testing.T) {
		c := e.code(t, e.conf.ID, nil)
		s, oe, _ := e.token(t, e.conf, url.Values{"grant_type": {"authorization_code"}, "code": {flip(c)}, "redirect_uri": {redirectURI}})
		if s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("token endpoint flipped refresh", func(t *testing.T) {
		s, oe, _ := e.token(t, e.conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {flip(rt)}})
		if s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("authorize flipped client_id", func(t *testing.T) {
		resp := newBrowser(t).Get(authorizeURL(e.n.URL, flip(e.conf.ID), nil))
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" {
			t.Fatalf("status %d location %q", resp.StatusCode, resp.Header.Get("Location"))
		}
	})
	t.Run("client auth flipped client_id", func(t *testing.T) {
		s, oe, _ := postForm(t, e.n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, flip(e.conf.ID), e.conf.Secret)
		if s != 401 || oe.Error != "invalid_client" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
}

func TestTokenResponseNotCached(t *testing.T) {
	e := newNegEnv(t)
	code := e.code(t, e.conf.ID, nil)
	req, _ := http.NewRequest(http.MethodPost, e.n.URL+"/oauth/token", strings.NewReader(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {testVerifier}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(e.conf.ID), url.QueryEscape(e.conf.Secret))
	resp, err := http.DefaultClient.Do(req.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("status %d cache-control %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
}

func TestLoginPageHardening(t *testing.T) {
	e := newNegEnv(t)
	b := newBrowser(t)
	resp := b.Follow(b.Get(authorizeURL(e.n.URL, e.conf.ID, nil)), oidctest.StopAt(redirectURI))
	page := oidctest.ReadPage(resp)
	form, body := page.Hidden, page.Body
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Fatalf("CSP %q", csp)
	}
	if strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Fatal("login page references external assets")
	}
	t.Run("missing CSRF token", func(t *testing.T) {
		f := url.Values{"id": {form.Get("id")}, "username": {"grace"}}
		r := b.Post(e.n.URL+"/login", f)
		r.Body.Close()
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", r.StatusCode)
		}
	})
	t.Run("CSRF from another browser", func(t *testing.T) {
		f := url.Values{"id": {form.Get("id")}, "csrf": {form.Get("csrf")}, "username": {"grace"}}
		r := newBrowser(t).Post(e.n.URL+"/login", f)
		r.Body.Close()
		if r.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d", r.StatusCode)
		}
	})
	t.Run("unknown user and wrong password look alike", func(t *testing.T) {
		answer := func(user, pass string) (int, string) {
			f := url.Values{"id": {form.Get("id")}, "csrf": {form.Get("csrf")}, "username": {user}, "password": {pass}}
			r := b.Post(e.n.URL+"/login/password", f)
			body := oidctest.ReadPage(r).Body
			return r.StatusCode, strings.ReplaceAll(body, user, "USER")
		}
		s1, b1 := answer("grace", "wrong-password")
		s2, b2 := answer("nobody-here", "wrong-password")
		if s1 != s2 || b1 != b2 {
			t.Fatalf("unknown user distinguishable: %d vs %d\n%s\n---\n%s", s1, s2, b1, b2)
		}
	})
}
