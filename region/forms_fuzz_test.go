package region_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

// FuzzRedirectURIValidation registers clients with arbitrary redirect URIs.
// An accepted URI is stored exactly as given, is absolute, has no (non-empty)
// fragment,
// uses no script-capable scheme, and is https with a host or http on a
// loopback host; a refused one fails with ErrInvalidRedirectURI (or
// ErrInvalidClientMetadata). Never a panic.
//
//	go test -run '^$' -fuzz FuzzRedirectURIValidation -fuzztime 20s ./region/
func FuzzRedirectURIValidation(f *testing.F) {
	for _, s := range []string{
		"https://app.example/cb", "http://127.0.0.1:9999/callback", "http://localhost/cb", "http://[::1]:8080/cb",
		"http://127.0.0.1.evil.example/cb", "http://localhost.evil.example/cb", "http://evil.example@127.0.0.1/cb",
		"https://app.example/cb#frag", "https:///cb", "javascript:alert(1)", "JavaScript://%0aalert(1)", "data:text/html,x",
		"com.example.app:/oauth2redirect", "https://app.example/cb?x=1", "//app.example/cb", "", "http://0x7f.1/cb",
		"https://app.example/\x00", "https://täst.example/cb", strings.Repeat("a", 2100),
		"view-source:https://app.example/", "blob:https://app.example/x", "jar:https://app.example/a!/", "ms-settings:x", "com.example.app://host/cb",
	} {
		f.Add(s)
	}
	st := openSQLite(f)
	codec := newCodec(f)
	f.Fuzz(func(t *testing.T, uri string) {
		c, err := region.CreateClient(context.Background(), st, codec, "eu", region.ClientSpec{Name: "fuzz", RedirectURIs: []string{uri}})
		if err != nil {
			if !errors.Is(err, region.ErrInvalidRedirectURI) && !errors.Is(err, region.ErrInvalidClientMetadata) {
				t.Fatalf("%q refused with %v, want a client metadata error", uri, err)
			}
			return
		}
		if len(c.RedirectURIs) != 1 || c.RedirectURIs[0] != uri {
			t.Fatalf("stored %q for %q: redirect URIs must be kept exactly", c.RedirectURIs, uri)
		}
		u, err := url.Parse(uri)
		// A bare trailing "#" is accepted today (an empty fragment, dropped
		// from authorization responses); see docs/reliability.md.
		if err != nil || !u.IsAbs() || u.Fragment != "" || len(uri) > 2000 {
			t.Fatalf("accepted %q: not an absolute URI without fragment", uri)
		}
		switch u.Scheme {
		case "javascript", "data", "file", "vbscript":
			t.Fatalf("accepted %q: script-capable scheme", uri)
		case "https":
			if u.Host == "" {
				t.Fatalf("accepted %q: https without host", uri)
			}
		case "http":
			h := u.Hostname()
			if ip := net.ParseIP(h); h != "localhost" && !strings.HasSuffix(h, ".localhost") && (ip == nil || !ip.IsLoopback()) {
				t.Fatalf("accepted %q: http to the non-loopback host %q", uri, h)
			}
		default:
			if !strings.Contains(u.Scheme, ".") {
				t.Fatalf("accepted %q: a private-use scheme must be reverse-domain (RFC 8252 §7.1)", uri)
			}
		}
		if u.User != nil {
			t.Fatalf("accepted %q: userinfo in a redirect URI", uri)
		}
	})
}

// FuzzRegisterBody posts arbitrary bodies to RFC 7591 registration: the
// answer is never a 5xx (and never a panic).
//
//	go test -run '^$' -fuzz FuzzRegisterBody -fuzztime 20s ./region/
func FuzzRegisterBody(f *testing.F) {
	for _, s := range []string{
		`{"redirect_uris":["https://app.example/cb"],"client_name":"x"}`,
		`{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"none","grant_types":["authorization_code"]}`,
		`{"redirect_uris":["javascript:x"]}`, `{"redirect_uris":"https://a"}`, `{"grant_types":["client_credentials"],"token_endpoint_auth_method":"none"}`,
		`{"jwks":{"keys":[{"kty":"RSA"}]},"token_endpoint_auth_method":"private_key_jwt","redirect_uris":["https://a.example/"]}`,
		`[]`, `null`, `{`, ``, `{"redirect_uris":[null]}`, `{"access_token_format":"jwt","redirect_uris":["https://a.example/"]}`,
	} {
		f.Add(s)
	}
	n := startProviderTB(f, "eu", openSQLite(f))
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest(http.MethodPost, n.URL+"/register", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testRegistrationToken)
		rec := httptest.NewRecorder()
		n.P.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("/register answered %d for %q: %s", rec.Code, body, rec.Body)
		}
	})
}

// loginFixture is a node with a user and a browser stopped on the password
// page, whose cookies and hidden fields seed the login form fuzzer.
func loginFixture(f *testing.F) (*testProvider, *http.Request, url.Values) {
	n := startProviderTB(f, "eu", openSQLite(f))
	if _, err := region.CreateUser(context.Background(), n.Store, region.UserSpec{Username: "grace", Password: "hopper-1906-cobol"}); err != nil {
		f.Fatal(err)
	}
	c, err := region.CreateClient(context.Background(), n.Store, n.Codec, "eu", region.ClientSpec{Name: "web", RedirectURIs: []string{redirectURI}, FirstParty: true})
	if err != nil {
		f.Fatal(err)
	}
	b := oidctest.NewBrowser(f, nil)
	p := oidctest.ReadPage(b.Follow(b.Get(authorizeURL(n.URL, c.ID, nil)), oidctest.StopAt(redirectURI)))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"grace"}}))
	if !strings.Contains(p.Body, `name="password"`) {
		f.Fatalf("no password page: %d %s", p.Status, p.Body)
	}
	// A request carrying the browser's cookies, to copy them from.
	proto, _ := http.NewRequest(http.MethodPost, n.URL+"/login/password", nil)
	for _, ck := range b.C.Jar.Cookies(proto.URL) {
		proto.AddCookie(ck)
	}
	return n, proto, p.Hidden
}

// FuzzLoginForms posts arbitrary form bodies, with the cookies of a browser
// in the middle of a login, to every login endpoint: never a 5xx, never a
// panic (a client's mistake is a 4xx or an HTML page).
//
//	go test -run '^$' -fuzz FuzzLoginForms -fuzztime 20s ./region/
func FuzzLoginForms(f *testing.F) {
	n, proto, hidden := loginFixture(f)
	paths := []string{"/login", "/login/password", "/login/totp", "/consent", "/authorize/callback", "/login/federated/callback"}
	valid := url.Values{}
	for k, v := range hidden {
		valid[k] = v
	}
	valid.Set("username", "grace")
	valid.Set("password", "wrong")
	for i := range paths {
		f.Add(uint8(i), valid.Encode())
	}
	f.Add(uint8(1), "id="+hidden.Get("id")+"&csrf=x&username=%00&password=")
	f.Add(uint8(1), "id=m1.ar.eu.AAAA&username=grace&password=x")
	f.Add(uint8(0), "username="+strings.Repeat("\u00e9", 300))
	f.Add(uint8(2), "id="+hidden.Get("id")+"&state=%ff%fe&otp=123456")
	f.Add(uint8(3), "id=;;;&&&==")
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		path := paths[int(which)%len(paths)]
		req := httptest.NewRequest(http.MethodPost, n.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, ck := range proto.Cookies() {
			req.AddCookie(ck)
		}
		rec := httptest.NewRecorder()
		n.P.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s answered %d for %q: %s", path, rec.Code, body, rec.Body)
		}
	})
}

// FuzzTokenForms posts arbitrary form bodies, with and without client
// credentials, to the back-channel endpoints: never a 5xx, never a panic.
//
//	go test -run '^$' -fuzz FuzzTokenForms -fuzztime 20s ./region/
func FuzzTokenForms(f *testing.F) {
	n := startProviderTB(f, "eu", openSQLite(f))
	c, err := region.CreateClient(context.Background(), n.Store, n.Codec, "eu", region.ClientSpec{Name: "web",
		RedirectURIs: []string{redirectURI}, FirstParty: true, GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"},
		Scopes: []string{region.ScopeIntrospect, region.ScopeDereference}})
	if err != nil {
		f.Fatal(err)
	}
	paths := []string{"/oauth/token", "/oauth/introspect", "/revoke", "/userinfo", "/dereference"}
	art, _ := n.Codec.New(routing.KindAccess, "eu")
	for i := range paths {
		f.Add(uint8(i), "grant_type=client_credentials", c.ID, c.Secret)
		f.Add(uint8(i), "token="+url.QueryEscape(art), c.ID, c.Secret)
		f.Add(uint8(i), "grant_type=authorization_code&code=m1.ac.eu.AAAA&redirect_uri="+url.QueryEscape(redirectURI), c.ID, "wrong")
	}
	f.Add(uint8(0), "grant_type=client_credentials&scope=%00", c.ID, c.Secret)
	f.Add(uint8(0), "grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=a.b.c", "", "")
	f.Add(uint8(0), "grant_type=client_credentials&client_id="+url.QueryEscape(c.ID)+"&client_secret=x&client_assertion_type=x", "", "")
	f.Add(uint8(1), "token=%zz", "", "")
	// An unknown client on a refresh is the caller's mistake, not a 5xx.
	f.Add(uint8(0), "grant_type=refresh_token&refresh_token=garbage", "nobody", "x")
	f.Add(uint8(0), "grant_type=refresh_token&refresh_token=garbage&client_id=nobody", "", "")
	f.Fuzz(func(t *testing.T, which uint8, body, user, pass string) {
		path := paths[int(which)%len(paths)]
		req := httptest.NewRequest(http.MethodPost, n.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
		}
		rec := httptest.NewRecorder()
		n.P.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s answered %d for %q (client %q): %s", path, rec.Code, body, user, rec.Body)
		}
	})
}
