package hub_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/oidctest"
)

// TestLeakedHubCodeCannotBeBurned plays an attacker holding a hub
// authorization code issued to eu (read from a log, a proxy or a
// referrer) but not eu's federation key: every redemption attempt without
// eu's client authentication, or with it but the wrong redirect URI or
// PKCE verifier, or with another region's genuine credentials (a
// compromised ap), gets an OAuth error and leaves the code alone; eu then
// redeems it and the sign-in completes.
func TestLeakedHubCodeCannotBeBurned(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())
	b := f.newBrowser()
	fl := a.start()
	cb := callbackAt(t, b, fl.url, federation.CallbackPath)
	code := cb.Query().Get("code")
	if code == "" || cb.Query().Get("iss") != f.hubURL() {
		t.Fatalf("hub answer to eu: %s", cb)
	}
	redirect := (&url.URL{Scheme: cb.Scheme, Host: cb.Host, Path: cb.Path}).String()
	euClient := federation.RegionClientID("eu")
	assertion := func(key *ecdsa.PrivateKey, clientID string) string {
		s, err := federation.SignAssertion(key, clientID, []string{f.hubURL(), f.hubURL() + "/oauth/token"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stranger, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	form := func(extra url.Values) url.Values {
		v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
			"code_verifier": {oauth2.GenerateVerifier()}}
		for k, x := range extra {
			v[k] = x
		}
		return v
	}
	jwt := func(key *ecdsa.PrivateKey, clientID string) url.Values {
		return url.Values{"client_id": {clientID}, "client_assertion_type": {federation.ClientAssertionType},
			"client_assertion": {assertion(key, clientID)}}
	}
	for _, tc := range []struct {
		name       string
		form       url.Values
		user, pass string
		status     int
		err        string
	}{
		{"no client authentication", form(nil), "", "", http.StatusUnauthorized, "invalid_client"},
		{"client_id alone", form(url.Values{"client_id": {euClient}}), "", "", http.StatusUnauthorized, "invalid_client"},
		{"a guessed client secret", form(nil), euClient, "secret", http.StatusUnauthorized, "invalid_client"},
		{"a client_secret in the body", form(url.Values{"client_id": {euClient}, "client_secret": {"x"}}), "", "", http.StatusUnauthorized, "invalid_client"},
		{"eu's client signed by a stranger's key", form(jwt(stranger, euClient)), "", "", http.StatusUnauthorized, "invalid_client"},
		{"eu's client signed by ap's key", form(jwt(f.fedKeys["ap"], euClient)), "", "", http.StatusUnauthorized, "invalid_client"},
		{"an assertion for one client, client_id of another", form(url.Values{"client_id": {euClient},
			"client_assertion_type": {federation.ClientAssertionType}, "client_assertion": {assertion(f.fedKeys["ap"], federation.RegionClientID("ap"))}}),
			"", "", http.StatusUnauthorized, "invalid_client"},
		{"ap's genuine credentials (compromised ap)", form(jwt(f.fedKeys["ap"], federation.RegionClientID("ap"))), "", "", http.StatusBadRequest, "invalid_grant"},
		{"eu's key, wrong PKCE verifier", form(jwt(f.fedKeys["eu"], euClient)), "", "", http.StatusBadRequest, "invalid_grant"},
		{"eu's key, no PKCE verifier", form(url.Values{"code_verifier": {""}, "client_id": {euClient},
			"client_assertion_type": {federation.ClientAssertionType}, "client_assertion": {assertion(f.fedKeys["eu"], euClient)}}),
			"", "", http.StatusBadRequest, "invalid_grant"},
		{"eu's key, another redirect URI", form(url.Values{"redirect_uri": {"http://127.0.0.1:9999/evil"}, "client_id": {euClient},
			"client_assertion_type": {federation.ClientAssertionType}, "client_assertion": {assertion(f.fedKeys["eu"], euClient)}}),
			"", "", http.StatusBadRequest, "invalid_grant"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 2 {
				s, oe, m := oidctest.PostForm(t, f.client, f.hubURL()+"/oauth/token", tc.form, tc.user, tc.pass)
				if s != tc.status || oe.Error != tc.err || m["access_token"] != nil {
					t.Fatalf("got %d %+v, want %d %s", s, oe, tc.status, tc.err)
				}
			}
		})
	}

	// The code is intact: eu redeems it and the sign-in completes.
	p := b.visit(cb.String())
	if p.out == nil || p.out.Query().Get("code") == "" {
		t.Fatalf("eu's redemption after the attempts: %d %s", p.status, p.body)
	}
	a.finish(fl, p.out)
	// Spent now, for everyone.
	if s, oe, _ := oidctest.PostForm(t, f.client, f.hubURL()+"/oauth/token", form(jwt(f.fedKeys["eu"], euClient)), "", ""); s != http.StatusBadRequest || oe.Error != "invalid_grant" {
		t.Fatalf("redeemed code: %d %+v", s, oe)
	}
}
