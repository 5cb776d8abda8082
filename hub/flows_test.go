package hub_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
)

const bobPassword = "correct horse battery"

func bobClaims() map[string]string {
	return map[string]string{"name": "Bob Smith", "email": "bob.smith@example.com", "email_verified": "true"}
}

// crossRegionLogin signs a us resident in to an application registered in
// eu, checks the result, then signs in again with SSO.
func crossRegionLogin(t *testing.T, f *fed) {
	bob := f.addUser("us", "Bob.Smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())
	b := f.newBrowser()

	fl := a.start()
	loc, last := b.login(fl.url, "bob.smith", bobPassword)
	s := a.finish(fl, loc)
	// The eu application sees the us user under a subject bound to us.
	fedSub, err := region.FederatedSubject("us", bob.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s.idToken.Subject != fedSub {
		t.Fatalf("sub = %q, want the us subject bound to us %q", s.idToken.Subject, fedSub)
	}
	if !slices.Contains(s.amr, "fed") || !slices.Contains(s.amr, "pwd") {
		t.Fatalf("amr = %v, want fed and pwd", s.amr)
	}
	if s.userinfo["preferred_username"] != "bob.smith" || s.userinfo["name"] != "Bob Smith" ||
		s.userinfo["email"] != "bob.smith@example.com" || s.userinfo["email_verified"] != true {
		t.Fatalf("userinfo at eu = %v", s.userinfo)
	}
	if !slices.Contains(last.hosts, regionHost("us")) {
		t.Fatalf("the login never reached us: %v", last.hosts)
	}
	// Only the resident region holds the account (and its password hash).
	for _, id := range regionIDs {
		u, err := f.Nodes[id].Store.GetUserByUsername(f.ctx, "bob.smith")
		switch {
		case id == "us" && (err != nil || u.PasswordHash == ""):
			t.Fatalf("us lost the user: %v", err)
		case id != "us" && !errors.Is(err, store.ErrNotFound):
			t.Fatalf("region %s holds a record of the us user: %v", id, err)
		}
	}

	// SSO: the next sign-in (a second application, in ap) needs no password.
	a2 := f.newApp("ap", f.regionIssuer("ap"))
	fl2 := a2.start()
	loc2, _ := b.login(fl2.url, "bob.smith", "")
	if s2 := a2.finish(fl2, loc2); s2.idToken.Subject != fedSub {
		t.Fatalf("SSO sub = %q", s2.idToken.Subject)
	}
	fl3 := a.start()
	loc3, _ := b.login(fl3.url, "bob.smith", "")
	if s3 := a.finish(fl3, loc3); s3.idToken.Subject != fedSub {
		t.Fatalf("SSO sub = %q", s3.idToken.Subject)
	}
}

// TestCrossRegionLoginViaHub: a user resident in us signs in to an eu
// application through the hub; the application's tokens carry the us
// user's subject and claims; the second sign-in is SSO.
func TestCrossRegionLoginViaHub(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	crossRegionLogin(t, f)
	if n := f.loginCount("completed", "us"); n != 3 {
		t.Fatalf("meridian.hub.logins{completed,us} = %d, want 3", n)
	}
}

// TestCrossRegionLoginMesh is the same flow in mesh topology: eu resolves
// the user in the (Redis) lookup table and federates with us directly.
func TestCrossRegionLoginMesh(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyMesh, redis: true})
	crossRegionLogin(t, f)
}
