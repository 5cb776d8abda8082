package routing

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzDecide feeds the routing decision arbitrary paths, forms and
// Authorization headers. It never panics, never names the local region or
// an unconfigured one for a hop, only redirects /authorize, and names
// another region only for an artifact whose tag verifies (or a JWT whose
// kid names a configured region).
//
//	go test -run '^$' -fuzz FuzzDecide -fuzztime 20s ./routing/
func FuzzDecide(f *testing.F) {
	c := testCodec(f)
	rt, err := NewRouter(keyed(RouterConfig{Local: "us", Peers: []Peer{
		{Region: "eu", URL: "http://eu.id.test", Addr: "127.0.0.1:1"},
		{Region: "ap", URL: "http://ap.id.test", Addr: "127.0.0.1:2"},
	}}), c, http.NotFoundHandler(), quiet(), nil)
	if err != nil {
		f.Fatal(err)
	}
	eu := map[Kind]string{}
	for _, k := range []Kind{KindClient, KindCode, KindRefresh, KindAccess, KindSession, KindAuthRequest} {
		eu[k], _ = c.New(k, "eu")
	}
	seeds := []struct{ path, form, auth string }{
		{"/authorize", "client_id=" + eu[KindClient], ""},
		{"/oauth/token", "grant_type=authorization_code&code=" + eu[KindCode], ""},
		{"/oauth/token", "grant_type=refresh_token&refresh_token=" + eu[KindRefresh], ""},
		{"/oauth/token", "grant_type=client_credentials", "Basic " + eu[KindClient]},
		{"/oauth/token", "grant_type=client_credentials&client_id=" + eu[KindClient], ""},
		{"/oauth/introspect", "token=" + eu[KindAccess], ""},
		{"/userinfo", "", "Bearer " + eu[KindAccess]},
		{"/userinfo", "", "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImV1LWFiIn0.e30.c2ln"},
		{"/login/password", "id=" + eu[KindAuthRequest], ""},
		{"/end_session", "id_token_hint=a.b.c", ""},
		{"/revoke", "token=m1.at.169.254.169.254.AAAA", ""},
		{"/dereference", "token=m1.at.localhost:6379.AAAA", ""},
		{"/oauth/introspect", "token=" + strings.Repeat("A", 5000), ""},
	}
	for _, s := range seeds {
		f.Add(s.path, s.form, s.auth)
	}
	f.Fuzz(func(t *testing.T, path, form, auth string) {
		u := &url.URL{Scheme: "http", Host: "id.test", Path: path}
		r := &http.Request{Method: http.MethodPost, URL: u, Header: http.Header{}, Host: "id.test"}
		if auth != "" {
			r.Header.Set("Authorization", auth)
		}
		vals, _ := url.ParseQuery(form)
		if vals == nil {
			vals = url.Values{}
		}
		d := rt.Decide(r, vals)
		switch d.Action {
		case Local:
			return
		case Redirect:
			if path != "/authorize" {
				t.Fatalf("redirect for %q", path)
			}
		case Proxy:
		default:
			t.Fatalf("unknown action %v", d.Action)
		}
		if d.Region != "eu" && d.Region != "ap" {
			t.Fatalf("%v to %q for %q %q %q: not another configured region", d.Action, d.Region, path, form, auth)
		}
		// Some artifact in the request must name that region.
		named := false
		candidates := []string{bearer(r, vals), clientID(r, vals)}
		for _, vs := range vals {
			candidates = append(candidates, vs...)
		}
		for _, a := range candidates {
			if tag, err := c.Verify(a); err == nil && tag.Region == d.Region {
				named = true
			}
			if reg, ok := jwtRegion(a); ok && reg == d.Region {
				named = true
			}
		}
		if !named {
			t.Fatalf("%v to %s for %q %q %q without a verified artifact naming it", d.Action, d.Region, path, form, auth)
		}
	})
}
