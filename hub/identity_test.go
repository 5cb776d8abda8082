package hub_test

import (
	"database/sql"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// TestFederatedIdentityBinding (issue 12, item 3) plays a compromised us
// against eu users.
//
// A user row in us carrying an eu user's subject: signing in with it at an
// eu application yields a subject bound to us, never the eu user's, and
// us's claims, never the eu user's.
//
// us asserting a username the lookup table places in eu (its database
// renamed one of its users): the hub (or, in mesh, the entry region)
// refuses the answer.
func TestFederatedIdentityBinding(t *testing.T) {
	for _, topology := range []string{federation.TopologyHub, federation.TopologyMesh} {
		t.Run(topology, func(t *testing.T) { identityBinding(t, topology) })
	}
}

func identityBinding(t *testing.T, topology string) {
	f := newFed(t, options{topology: topology})
	alice := f.addUser("eu", "alice.w", bobPassword, map[string]string{"name": "Alice Victim", "email": "alice@example.org"})
	f.waitResolves("alice.w", "eu")
	a := f.newApp("eu", f.globalURL())

	// A row in us with alice's eu subject and a username of us's own.
	hash, err := region.HashPassword(bobPassword)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	if err := f.Nodes["us"].Store.CreateUser(f.ctx, store.User{ID: alice.ID, Username: "mallory", PasswordHash: hash,
		Claims: map[string]string{"name": "Mallory"}, CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	f.Notify("us")
	f.waitResolves("mallory", "us")
	b := f.newBrowser()
	fl := a.start()
	loc, _ := b.login(fl.url, "mallory", bobPassword)
	s := a.finish(fl, loc)
	want, _ := region.FederatedSubject("us", alice.ID)
	if s.idToken.Subject == alice.ID || s.idToken.Subject != want {
		t.Fatalf("sub %q: a us assertion took eu's user %q (want %q)", s.idToken.Subject, alice.ID, want)
	}
	if s.userinfo["email"] == "alice@example.org" || s.userinfo["name"] != "Mallory" {
		t.Fatalf("userinfo at eu for us's mallory = %v", s.userinfo)
	}

	// The claims endpoint answers hops only: a forged hop-from header
	// from outside is stripped by the router.
	req, _ := http.NewRequest(http.MethodPost, f.regionIssuer("us")+"/internal/claims",
		strings.NewReader(url.Values{"sub": {alice.ID}, "scope": {"openid profile email"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(routing.HopFromHeader, "eu")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || strings.Contains(string(body), "Mallory") {
		t.Fatalf("claims endpoint from outside: %d %s", resp.StatusCode, body)
	}

	// us renames mallory to alice.w in its database (no outbox entry: the
	// table still places alice.w in eu) and answers the next sign-in from
	// its session.
	db, err := sql.Open("sqlite", "file:"+f.dsn["us"])
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE users SET username = 'alice.w' WHERE username = 'mallory'`); err != nil {
		t.Fatal(err)
	}
	var before int64
	if topology == federation.TopologyHub {
		before = f.loginCount("foreign_assertion", "us")
	}
	fl = a.start()
	p := b.visit(fl.url)
	for i := 0; i < 3 && p.isUsername(); i++ {
		p = b.submit(p, url.Values{"username": {"mallory"}})
	}
	if p.out != nil || p.status != http.StatusBadRequest {
		t.Fatalf("us asserting eu's username: want a 400 error page, got %d out=%v: %s", p.status, p.out, p.body)
	}
	if topology != federation.TopologyHub {
		return
	}
	if got := f.loginCount("foreign_assertion", "us"); got != before+1 {
		t.Fatalf("foreign_assertion count %d, want %d", got, before+1)
	}
}
