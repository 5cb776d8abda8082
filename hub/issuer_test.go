package hub_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/meridian-id/meridian/federation"
)

// TestIssuerAgreesWithHost (issue 11 item 8, RFC 9207): whichever host an
// application discovered - the global host, its region's host or another
// region's host (whose router forwards to the client's region) - and
// whether the user is resident in the client's region or signs in through
// the hub from another one, the discovery document at that host, the
// authorization response's iss and the ID token's iss are the same issuer.
func TestIssuerAgreesWithHost(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("eu", "ada.local", bobPassword, bobClaims())
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	for _, tc := range []struct {
		name, issuer, user string
	}{
		{"global host, local user", f.globalURL(), "ada.local"},
		{"global host, user of another region", f.globalURL(), "bob.smith"},
		{"region host, local user", f.regionIssuer("eu"), "ada.local"},
		{"region host, user of another region", f.regionIssuer("eu"), "bob.smith"},
		{"another region's host, local user", f.regionIssuer("us"), "ada.local"},
		{"another region's host, user of another region", f.regionIssuer("ap"), "bob.smith"},
		{"the user's region's host, user of another region", f.regionIssuer("us"), "bob.smith"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := f.newApp("eu", tc.issuer)
			var doc struct {
				Issuer string `json:"issuer"`
			}
			resp, err := f.client.Get(tc.issuer + "/.well-known/openid-configuration")
			if err != nil {
				t.Fatal(err)
			}
			err = json.NewDecoder(resp.Body).Decode(&doc)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || doc.Issuer != tc.issuer {
				t.Fatalf("discovery at %s: %d issuer %q", tc.issuer, resp.StatusCode, doc.Issuer)
			}
			fl := a.start()
			loc, p := f.newBrowser().login(fl.url, tc.user, bobPassword)
			if loc == nil {
				t.Fatalf("login: %d %s", p.status, p.body)
			}
			if got := loc.Query().Get("iss"); got != tc.issuer {
				t.Fatalf("authorization response iss %q, discovered %q", got, tc.issuer)
			}
			in := a.finish(fl, loc) // verifies the ID token against the discovered issuer
			if in.idToken.Issuer != tc.issuer {
				t.Fatalf("ID token iss %q, discovered %q", in.idToken.Issuer, tc.issuer)
			}
		})
	}
}
