package region_test

import (
	"context"
	"encoding/hex"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
)

func never(*url.URL) bool { return false }

// accountLogin signs a fresh browser in at /account (the region's own
// sign-in client) and returns the account page.
func accountLogin(t *testing.T, n *testProvider, name, password string) (*oidctest.Browser, oidctest.Page) {
	t.Helper()
	b := newBrowser(t)
	p := oidctest.ReadPage(b.Follow(b.Get(n.URL+"/account"), never))
	if p.Action != "/login" {
		t.Fatalf("/account without a session should ask for the username (%d): %s", p.Status, p.Body)
	}
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}}))
	p = oidctest.ReadPage(b.Follow(b.Submit(p, url.Values{"username": {name}, "password": {password}}), never))
	if p.Status != http.StatusOK || !strings.Contains(p.Body, `id="account-user">`+name+`<`) {
		t.Fatalf("no account page after signing in (%d): %s", p.Status, p.Body)
	}
	return b, p
}

// signedIn reports whether b's session still opens the account page.
func signedIn(t *testing.T, b *oidctest.Browser, n *testProvider) bool {
	t.Helper()
	resp := b.Get(n.URL + "/account")
	defer resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func sessionIDs(t *testing.T, n *testProvider, userID string) []string {
	t.Helper()
	ss, err := n.Store.ListUserSessions(context.Background(), userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range ss {
		out = append(out, hex.EncodeToString(s.Hash[:]))
	}
	return out
}

// TestAccountPasswordChange: the current password is required; a change
// ends every other session of the user and keeps this one; the old
// password no longer signs in.
func TestAccountPasswordChange(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	u := n.addUser("alice", "old-password-1", nil)
	b1, p := accountLogin(t, n, "alice", "old-password-1")
	b2, _ := accountLogin(t, n, "alice", "old-password-1")
	if got := len(sessionIDs(t, n, u.ID)); got != 2 {
		t.Fatalf("%d sessions, want 2", got)
	}
	resp := b1.Post(n.URL+"/account/password", url.Values{"csrf": {p.Hidden.Get("csrf")}, "current": {"old-password-1"},
		"new": {"new-password-22"}, "confirm": {"new-password-22"}})
	resp.Body.Close()
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || loc == nil || !strings.HasPrefix(loc.Path, "/account") {
		t.Fatalf("password change answered %d", resp.StatusCode)
	}
	if !signedIn(t, b1, n) {
		t.Fatal("the browser that changed the password was signed out")
	}
	if signedIn(t, b2, n) {
		t.Fatal("another session survived the password change")
	}
	if got := len(sessionIDs(t, n, u.ID)); got != 1 {
		t.Fatalf("%d sessions after the change, want 1", got)
	}
	accountLogin(t, n, "alice", "new-password-22")
	b3 := newBrowser(t)
	p3 := oidctest.ReadPage(b3.Follow(b3.Get(n.URL+"/account"), never))
	p3 = oidctest.ReadPage(b3.Submit(p3, url.Values{"username": {"alice"}}))
	p3 = oidctest.ReadPage(b3.Follow(b3.Submit(p3, url.Values{"username": {"alice"}, "password": {"old-password-1"}}), never))
	if !strings.Contains(p3.Body, "Invalid username or password") {
		t.Fatalf("the old password still signs in (%d)", p3.Status)
	}
}

// TestAccountWrongCurrentPassword: a wrong current password changes
// nothing and is throttled like a login's (per user: 429 with Retry-After
// once the limit is used up, even for the right password).
func TestAccountWrongCurrentPassword(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	u := n.addUser("alice", "old-password-1", nil)
	b, p := accountLogin(t, n, "alice", "old-password-1")
	form := func(current string) url.Values {
		return url.Values{"csrf": {p.Hidden.Get("csrf")}, "current": {current}, "new": {"new-password-22"}, "confirm": {"new-password-22"}}
	}
	limited := false
	for i := 0; i < 12 && !limited; i++ {
		resp := b.Post(n.URL+"/account/password", form("guess-"+string(rune('a'+i))))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusForbidden:
		case http.StatusTooManyRequests:
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
			limited = true
		default:
			t.Fatalf("wrong current password answered %d", resp.StatusCode)
		}
	}
	if !limited {
		t.Fatal("wrong current passwords were never throttled")
	}
	resp := b.Post(n.URL+"/account/password", form("old-password-1"))
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("after the limit, the right password answered %d, want 429", resp.StatusCode)
	}
	got, err := n.Store.GetUserByID(context.Background(), u.ID)
	if err != nil || got.PasswordHash != u.PasswordHash {
		t.Fatalf("the password changed: %v", err)
	}
}

// TestAccountCSRF: every account form needs the CSRF token of this
// session in this browser: missing, forged or another browser's token is
// refused and nothing changes.
func TestAccountCSRF(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	u := n.addUser("alice", "old-password-1", nil)
	b, _ := accountLogin(t, n, "alice", "old-password-1")
	_, other := accountLogin(t, n, "alice", "old-password-1")
	victim := sessionIDs(t, n, u.ID)[0]
	for _, tc := range []struct{ name, csrf string }{{"missing", ""}, {"forged", "AAAA"}, {"another browser's", other.Hidden.Get("csrf")}} {
		for _, post := range []struct {
			path string
			form url.Values
		}{
			{"/account/password", url.Values{"current": {"old-password-1"}, "new": {"new-password-22"}, "confirm": {"new-password-22"}}},
			{"/account/sessions/end", url.Values{"session": {victim}}},
			{"/account/totp/begin", url.Values{}},
			{"/account/passkeys/remove", url.Values{"passkey": {"AAAA"}}},
			{"/account/profile", url.Values{"claim.name": {"Mallory"}}},
		} {
			if tc.csrf != "" {
				post.form.Set("csrf", tc.csrf)
			}
			resp := b.Post(n.URL+post.path, post.form)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s CSRF token at %s: %d, want 403", tc.name, post.path, resp.StatusCode)
			}
		}
	}
	got, _ := n.Store.GetUserByID(context.Background(), u.ID)
	if got.PasswordHash != u.PasswordHash || len(sessionIDs(t, n, u.ID)) != 2 {
		t.Fatal("a form without a valid CSRF token changed the account")
	}
}

// TestAccountOtherUsers: a session acts on its own user only. Bob cannot
// end Alice's session or remove Alice's passkey, whatever ids he posts;
// without a session nobody can; Alice's session stays valid.
func TestAccountOtherUsers(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	alice := n.addUser("alice", "alice-password-1", nil)
	n.addUser("bob", "bob-password-111", nil)
	ab, _ := accountLogin(t, n, "alice", "alice-password-1")
	aliceSession := sessionIDs(t, n, alice.ID)[0]
	cred := store.WebAuthnCredential{ID: []byte("alice-credential-0001"), UserID: alice.ID, Name: "alice's key", Data: []byte(`{}`)}
	if err := n.Store.AddWebAuthnCredential(context.Background(), cred); err != nil {
		t.Fatal(err)
	}
	bb, bp := accountLogin(t, n, "bob", "bob-password-111")
	for _, post := range []struct {
		path string
		form url.Values
	}{
		{"/account/sessions/end", url.Values{"session": {aliceSession}}},
		{"/account/passkeys/remove", url.Values{"passkey": {"YWxpY2UtY3JlZGVudGlhbC0wMDAx"}}},
	} {
		post.form.Set("csrf", bp.Hidden.Get("csrf"))
		resp := bb.Post(n.URL+post.path, post.form)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("bob at %s: %d, want 404", post.path, resp.StatusCode)
		}
		// A third party with no session at all.
		anon := newBrowser(t)
		resp = anon.Post(n.URL+post.path, post.form)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("no session at %s: %d, want 403", post.path, resp.StatusCode)
		}
	}
	if !signedIn(t, ab, n) {
		t.Fatal("alice's session was ended by someone else")
	}
	if creds, _ := n.Store.ListWebAuthnCredentials(context.Background(), alice.ID); len(creds) != 1 {
		t.Fatal("alice's passkey was removed by someone else")
	}
}

// TestAccountEndOwnSession: the user ends another of their sessions (say a
// browser left signed in elsewhere); that browser is signed out, this one
// is not.
func TestAccountEndOwnSession(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	u := n.addUser("alice", "alice-password-1", nil)
	left, _ := accountLogin(t, n, "alice", "alice-password-1")
	leftSession := sessionIDs(t, n, u.ID)[0]
	b, p := accountLogin(t, n, "alice", "alice-password-1")
	if !strings.Contains(p.Body, leftSession) {
		t.Fatal("the other session is not listed")
	}
	resp := b.Post(n.URL+"/account/sessions/end", url.Values{"csrf": {p.Hidden.Get("csrf")}, "session": {leftSession}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("ending a session: %d", resp.StatusCode)
	}
	if signedIn(t, left, n) || !signedIn(t, b, n) {
		t.Fatal("the wrong session ended")
	}
}

// TestAccountConsents: the applications holding the user's tokens are
// listed; revoking one revokes its tokens at once (introspection says
// inactive); another user cannot revoke them.
func TestAccountConsents(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("alice", "alice-password-1", nil)
	n.addUser("bob", "bob-password-111", nil)
	c := n.addClient(region.ClientSpec{Name: "Photo app", RedirectURIs: []string{redirectURI}, FirstParty: true})
	loc := newBrowser(t).Login(authURL(n, c.ID), redirectURI, "alice", "alice-password-1")
	at := exchange(t, n, c, loc.Query().Get("code"))["access_token"].(string)
	active := func() bool {
		_, _, body := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {at}}, c.ID, c.Secret)
		return body["active"] == true
	}
	if !active() {
		t.Fatal("the token is not active before revocation")
	}
	bb, bp := accountLogin(t, n, "bob", "bob-password-111")
	resp := bb.Post(n.URL+"/account/consents/revoke", url.Values{"csrf": {bp.Hidden.Get("csrf")}, "client": {c.ID}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || !active() {
		t.Fatalf("bob revoking alice's grant: %d", resp.StatusCode)
	}
	b, p := accountLogin(t, n, "alice", "alice-password-1")
	if !strings.Contains(p.Body, "Photo app") {
		t.Fatalf("the application is not listed: %s", p.Body)
	}
	resp = b.Post(n.URL+"/account/consents/revoke", url.Values{"csrf": {p.Hidden.Get("csrf")}, "client": {c.ID}})
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || active() {
		t.Fatalf("revoking: %d, token still active: %v", resp.StatusCode, active())
	}
	if p := oidctest.ReadPage(b.Get(n.URL + "/account")); strings.Contains(p.Body, "Photo app") {
		t.Fatal("the revoked application is still listed")
	}
}

// TestAccountTOTPAndProfile: an authenticator app is enrolled only once a
// code from it is verified, and then asked at sign-in; only the claims
// the operator made editable change.
func TestAccountTOTPAndProfile(t *testing.T) {
	n, _ := startConfiguredNode(t, "eu", openSQLite(t), func(cfg *region.Config, _ string) {
		cfg.Account.EditableClaims = []string{"name"}
	})
	u := n.addUser("alice", "alice-password-1", map[string]string{"name": "Alice", "email": "alice@example.org"})
	b, p := accountLogin(t, n, "alice", "alice-password-1")

	resp := b.Post(n.URL+"/account/profile", url.Values{"csrf": {p.Hidden.Get("csrf")}, "claim.name": {"Alice Liddell"}, "claim.email": {"mallory@example.org"}})
	resp.Body.Close()
	got, _ := n.Store.GetUserByID(context.Background(), u.ID)
	if resp.StatusCode != http.StatusSeeOther || got.Claims["name"] != "Alice Liddell" || got.Claims["email"] != "alice@example.org" {
		t.Fatalf("profile: %d %v", resp.StatusCode, got.Claims)
	}

	setup := oidctest.ReadPage(b.Post(n.URL+"/account/totp/begin", url.Values{"csrf": {p.Hidden.Get("csrf")}}))
	m := regexp.MustCompile(`id="totp-secret">([A-Z2-7]+)<`).FindStringSubmatch(setup.Body)
	if m == nil || setup.Hidden.Get("secret") == "" {
		t.Fatalf("no TOTP setup page (%d): %s", setup.Status, setup.Body)
	}
	if got, _ := n.Store.GetUserByID(context.Background(), u.ID); got.TOTPSecret != "" {
		t.Fatal("TOTP enrolled before a code confirmed it")
	}
	resp = b.Submit(setup, url.Values{"code": {"000000"}})
	resp.Body.Close()
	if got, _ := n.Store.GetUserByID(context.Background(), u.ID); resp.StatusCode != http.StatusBadRequest || got.TOTPSecret != "" {
		t.Fatalf("a wrong code enrolled TOTP (%d)", resp.StatusCode)
	}
	resp = b.Submit(setup, url.Values{"code": {codeAt(t, m[1], time.Now())}})
	resp.Body.Close()
	if got, _ := n.Store.GetUserByID(context.Background(), u.ID); resp.StatusCode != http.StatusSeeOther || got.TOTPSecret != m[1] {
		t.Fatalf("TOTP not enrolled (%d)", resp.StatusCode)
	}
	// The next sign-in asks for the code after the password.
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	totpPage(t, newBrowser(t), n, c.ID, "alice", "alice-password-1")
}

// TestAccountStepUp: with a sign-in older than the reauth window, second
// factors and passkeys cannot be changed; the page asks to sign in again.
func TestAccountStepUp(t *testing.T) {
	n, _ := startConfiguredNode(t, "eu", openSQLite(t), func(cfg *region.Config, _ string) {
		cfg.Account.ReauthWindow = time.Nanosecond // every sign-in is already too old
	})
	u := n.addUser("alice", "alice-password-1", nil)
	b, p := accountLogin(t, n, "alice", "alice-password-1")
	if !strings.Contains(p.Body, `href="/account/signin"`) {
		t.Fatal("the page does not offer to sign in again")
	}
	for _, path := range []string{"/account/totp/begin", "/account/totp/remove", "/account/passkeys", "/account/passkeys/remove"} {
		resp := b.Post(n.URL+path, url.Values{"csrf": {p.Hidden.Get("csrf")}, "passkey": {"AAAA"}})
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s without a recent sign-in: %d, want 403", path, resp.StatusCode)
		}
	}
	// Signing in again is a fresh login (prompt=login), not the SSO session.
	resp := b.Get(n.URL + "/account/signin")
	loc, _ := resp.Location()
	resp.Body.Close()
	if loc == nil || loc.Query().Get("prompt") != "login" {
		t.Fatalf("/account/signin redirects to %v", loc)
	}
	if pg := oidctest.ReadPage(b.Follow(b.Get(loc.String()), never)); pg.Action != "/login" {
		t.Fatalf("prompt=login did not ask for the username: %s", pg.Body)
	}
	if got, _ := n.Store.GetUserByID(context.Background(), u.ID); got.TOTPSecret != "" {
		t.Fatal("changed without step-up")
	}
}
