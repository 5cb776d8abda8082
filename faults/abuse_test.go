package faults

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

// offFederation stops a browser at any URL outside the federation's hosts.
func offFederation(u *url.URL) bool { return !strings.HasSuffix(u.Hostname(), "id.localhost") }

// authorizeVia sends a browser to /authorize for client on the global host
// as served by entry (whose router proxies it to the client's region, the
// browser staying on the global host) and returns the first answer that is
// not a redirect within the federation.
func authorizeVia(t *testing.T, f *fedtest.Federation, entry, clientID string, set url.Values) *http.Response {
	t.Helper()
	c, base := f.At(entry)
	q := url.Values{"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid"}, "state": {"s"}}
	for k, v := range set {
		q[k] = v
	}
	b := oidctest.NewBrowser(t, c.Transport)
	first := b.Get(base + "/authorize?" + q.Encode())
	if strings.HasPrefix(first.Header.Get("Location"), "http://eu.id.localhost:") {
		t.Fatalf("authorize at %s: %d %q, want the browser kept on the global host", entry, first.StatusCode, first.Header.Get("Location"))
	}
	return b.Follow(first, offFederation)
}

// TestAbuseRFC9700ThroughHop replays the RFC 9700 attack list against eu
// artifacts through us (authorization requests, token and introspection
// calls proxied): every attack gets the same protocol error
// it gets at eu itself.
func TestAbuseRFC9700ThroughHop(t *testing.T) {
	f := startFederation(t, fedtest.Options{})
	conf := f.Client("eu")
	public, err := region.CreateClient(context.Background(), f.Nodes["eu"].Store, f.Codec(), "eu",
		region.ClientSpec{Name: "spa", RedirectURIs: []string{fedtest.AppRedirect}, Public: true, FirstParty: true})
	if err != nil {
		t.Fatal(err)
	}
	f.User("eu", "ivy")
	iss := f.Cfg.GlobalIssuer()

	t.Run("redirect_uri variants", func(t *testing.T) {
		for name, uri := range map[string]string{
			"trailing slash": fedtest.AppRedirect + "/", "case": "http://127.0.0.1:9999/Callback", "added query": fedtest.AppRedirect + "?next=/admin",
			"fragment": fedtest.AppRedirect + "#x", "port": "http://127.0.0.1:9998/callback", "scheme": "https://127.0.0.1:9999/callback",
			"host": "http://evil.example/callback", "userinfo": "http://evil.example@127.0.0.1:9999/callback",
		} {
			resp := authorizeVia(t, f, "us", conf.ID, url.Values{"redirect_uri": {uri}})
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || resp.Header.Get("Location") != "" ||
				!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(string(body), "<html") {
				t.Errorf("%s: %d location %q: want an HTML error page, never a redirect", name, resp.StatusCode, resp.Header.Get("Location"))
			}
		}
	})

	challenge := oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())
	for _, tc := range []struct {
		name, client, want string
		set                url.Values
	}{
		{"PKCE missing (public client)", public.ID, "invalid_request", nil},
		// PKCE is required of confidential clients too, so a verifier-without-
		// challenge downgrade cannot even start.
		{"PKCE missing (confidential client)", conf.ID, "invalid_request", nil},
		{"PKCE plain", public.ID, "invalid_request", url.Values{"code_challenge": {"abcdefghijabcdefghijabcdefghijabcdefghijabc"}, "code_challenge_method": {"plain"}}},
		{"PKCE method missing", public.ID, "invalid_request", url.Values{"code_challenge": {challenge}}},
		{"response_type=token", conf.ID, "unauthorized_client", url.Values{"response_type": {"token"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := authorizeVia(t, f, "us", tc.client, tc.set)
			resp.Body.Close()
			loc, err := resp.Location()
			if err != nil || !strings.HasPrefix(loc.String(), fedtest.AppRedirect) {
				t.Fatalf("%d %v: want an error redirect to the client", resp.StatusCode, err)
			}
			q := loc.Query()
			if loc.Fragment != "" {
				q, _ = url.ParseQuery(loc.Fragment)
			}
			if q.Get("error") != tc.want || q.Get("code") != "" || q.Get("access_token") != "" || q.Get("iss") != iss || q.Get("state") != "s" {
				t.Fatalf("error response %v: want error=%s with state and iss=%s", q, tc.want, iss)
			}
		})
	}

	redeem := func(entry string, c region.RegisteredClient, code, verifier string) (int, oidctest.OAuthError, map[string]any) {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}}
		if verifier != "" {
			form.Set("code_verifier", verifier)
		}
		return f.Token(entry, c, form)
	}
	t.Run("PKCE wrong verifier", func(t *testing.T) {
		code := f.Login("eu", conf, "ivy", oauth2.GenerateVerifier())
		if s, oe, _ := redeem("us", conf, code, oauth2.GenerateVerifier()); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("%d %+v", s, oe)
		}
	})
	t.Run("code reuse revokes the tokens", func(t *testing.T) {
		v := oauth2.GenerateVerifier()
		code := f.Login("eu", conf, "ivy", v)
		s, oe, tok := redeem("us", conf, code, v)
		if s != 200 {
			t.Fatalf("first redemption via us: %d %+v", s, oe)
		}
		if s, oe, _ := redeem("ap", conf, code, v); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("replay via ap: %d %+v", s, oe)
		}
		if s, m := f.Introspect("us", conf, tok["access_token"].(string)); s != 200 || m["active"] != false {
			t.Fatalf("access token of a replayed code via us: %d %v", s, m)
		}
		if s, oe, _ := f.Token("us", conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}}); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("refresh token of a replayed code via us: %d %+v", s, oe)
		}
	})
	t.Run("refresh reuse revokes the family", func(t *testing.T) {
		tok := f.Tokens("eu", conf, "ivy")
		old := tok["refresh_token"].(string)
		s, oe, next := f.Token("us", conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}})
		if s != 200 {
			t.Fatalf("rotation via us: %d %+v", s, oe)
		}
		if s, oe, _ := f.Token("ap", conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old}}); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("reuse via ap: %d %+v", s, oe)
		}
		if s, oe, _ := f.Token("us", conf, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {next["refresh_token"].(string)}}); s != 400 || oe.Error != "invalid_grant" {
			t.Fatalf("successor after reuse via us: %d %+v", s, oe)
		}
		if s, m := f.Introspect("us", conf, next["access_token"].(string)); s != 200 || m["active"] != false {
			t.Fatalf("access token of a reused family via us: %d %v", s, m)
		}
	})
	t.Run("unauthenticated introspection", func(t *testing.T) {
		tok := f.Tokens("eu", conf, "ivy")
		c, base := f.At("us")
		for name, creds := range map[string][2]string{"none": {"", ""}, "wrong secret": {conf.ID, "nope"}, "other client's secret": {conf.ID, public.Secret + "x"}} {
			s, oe, m := oidctest.PostForm(t, c, base+"/oauth/introspect", url.Values{"token": {tok["access_token"].(string)}}, creds[0], creds[1])
			if s != 401 || oe.Error != "invalid_client" || m["active"] != nil {
				t.Errorf("%s: %d %v, want 401 invalid_client", name, s, m)
			}
		}
	})
}

// TestAbuseForgedTagsZeroOutbound sends forged artifacts in every routed
// position to us: each gets the protocol's error from us itself and the
// router's counting transport sees zero outbound requests.
func TestAbuseForgedTagsZeroOutbound(t *testing.T) {
	f := startFederation(t, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "oz")
	tok := f.Tokens("eu", app, "oz")
	at := tok["access_token"].(string)
	random := at[strings.LastIndexByte(at, '.')+1:]
	other, err := routing.NewCodec([]string{"eu", "us", "ap"}, []byte(strings.Repeat("k", 32)))
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := other.New(routing.KindAccess, "eu")
	forged := map[string]string{
		"flipped MAC":           at[:len(at)-3] + map[bool]string{true: "AAA", false: "BBB"}[strings.HasSuffix(at, "AAA")],
		"unknown region":        "m1.at.mars." + random,
		"metadata address":      "m1.at.169.254.169.254." + random,
		"localhost redis":       "m1.at.localhost:6379." + random,
		"url as region":         "m1.at.https://evil.example/." + random,
		"oversized":             "m1.at.eu." + strings.Repeat("A", 200<<10),
		"non-ASCII region":      "m1.at.éu." + random,
		"non-ASCII body":        "m1.at.eu.ÅÅÅ" + random,
		"other routing key":     otherKey,
		"version 2":             "m2" + at[2:],
		"empty region":          "m1.at.." + random,
		"JWT kid metadata host": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjE2OS4yNTQuMTY5LjI1NC1hYiJ9.e30.c2ln", // kid "169.254.169.254-ab"
		"JWT kid unknown":       "eyJhbGciOiJSUzI1NiIsImtpZCI6Im1hcnMtYWIifQ.e30.c2ln",               // kid "mars-ab"
	}
	c, base := f.At("us")
	usApp := f.Client("us")
	before := f.Dials.Load()
	for name, art := range forged {
		calls := []struct {
			path string
			form url.Values
		}{
			{"/oauth/introspect", url.Values{"token": {art}}},
			{"/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {strings.Replace(art, ".at.", ".rt.", 1)}}},
			{"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {strings.Replace(art, ".at.", ".ac.", 1)}, "redirect_uri": {fedtest.AppRedirect}}},
			{"/revoke", url.Values{"token": {art}}},
			{"/dereference", url.Values{"token": {art}}},
		}
		for _, call := range calls {
			s, oe, m := oidctest.PostForm(t, c, base+call.path, call.form, usApp.ID, usApp.Secret)
			if s >= 500 || m["active"] == true || (s >= 400 && oe.Error == "") {
				t.Errorf("%s at %s: %d %v, want the protocol's error", name, call.path, s, m)
			}
		}
		req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
		req.Header.Set("Authorization", "Bearer "+art)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized && !(name == "oversized" && resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge) {
			t.Errorf("%s at /userinfo: %d, want 401 (431 for a header beyond 64 KiB)", name, resp.StatusCode)
		}
		// A forged client_id is not redirected anywhere.
		resp, err = c.Get(base + "/authorize?" + url.Values{"client_id": {strings.Replace(art, ".at.", ".cl.", 1)}, "response_type": {"code"},
			"redirect_uri": {fedtest.AppRedirect}}.Encode())
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if (resp.StatusCode != http.StatusBadRequest && !(name == "oversized" && resp.StatusCode == http.StatusRequestHeaderFieldsTooLarge)) ||
			resp.Header.Get("Location") != "" {
			t.Errorf("%s at /authorize: %d location %q", name, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if n := f.Dials.Load() - before; n != 0 {
		t.Fatalf("forged artifacts caused %d outbound requests; want 0", n)
	}
	// The counter works: a genuine eu token through us costs the hop to eu
	// and eu's call back to us authenticating the us client.
	if s, m := f.Introspect("us", usApp, at); s != 200 || m["active"] != true || f.Dials.Load()-before != 2 {
		t.Fatalf("genuine eu token via us: %d %v, %d outbound", s, m, f.Dials.Load()-before)
	}
	before = f.Dials.Load()
	// A JWT is routed by its kid ("<region>-…"), which is not MACed: an
	// unsigned JWT naming a configured region costs one hop to that region's
	// configured address (never another host), where the signature fails.
	jwt := "eyJhbGciOiJSUzI1NiIsImtpZCI6ImV1LWFiIn0.e30.c2ln" // kid "eu-ab"
	if s, m := f.Introspect("us", usApp, jwt); s != 200 || m["active"] != false || f.Dials.Load()-before != 1 {
		t.Fatalf("JWT with kid eu-… via us: %d %v, %d outbound", s, m, f.Dials.Load()-before)
	}
}
