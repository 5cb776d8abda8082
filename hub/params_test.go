package hub_test

import (
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
)

// with returns the authorization URL with extra parameters.
func with(authURL string, kv ...string) string {
	u, _ := url.Parse(authURL)
	q := u.Query()
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// TestResidentRegionEnforcesRequestParameters (issue 11 item 6): prompt,
// max_age, login_hint and ui_locales reach the resident region of a user
// who signs in to another region's application (entry region → hub →
// resident region); the resident region enforces them (prompt=login and
// max_age=0 ask for the password again although it has a session,
// prompt=none answers from the session or with login_required); its
// auth_time and amr come back in the entry region's ID token.
func TestResidentRegionEnforcesRequestParameters(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", globalURL)
	b := f.newBrowser()

	fl := a.start()
	loc, _ := b.login(fl.url, "bob.smith", bobPassword)
	first := a.finish(fl, loc)

	// prompt=none with sessions: a code, no page, the original auth_time.
	fl = a.start()
	loc, _ = b.login(with(fl.url, "prompt", "none"), "bob.smith", "")
	if s := a.finish(fl, loc); !authTime(t, s).Equal(authTime(t, first)) || !slices.Contains(s.amr, "pwd") {
		t.Fatalf("prompt=none with a session: auth_time %v (first %v), amr %v", authTime(t, s), authTime(t, first), s.amr)
	}

	// What the hub sends the resident region carries the parameters.
	fl = a.start()
	b.stopAt = func(u *url.URL) bool { return u.Hostname() == regionHost("us") && u.Path == "/authorize" }
	p := b.visit(with(fl.url, "prompt", "login", "max_age", "0", "ui_locales", "de fr"))
	for p.out == nil && p.isUsername() {
		p = b.submit(p, url.Values{"username": {"bob.smith"}})
	}
	b.stopAt = nil
	if p.out == nil {
		t.Fatalf("login never reached us: %d %s", p.status, p.body)
	}
	q := p.out.Query()
	if q.Get("prompt") != "login" || q.Get("max_age") != "0" || q.Get("ui_locales") != "de fr" || q.Get("login_hint") != "bob.smith" {
		t.Fatalf("the hub's request to us lost parameters: %s", p.out)
	}

	// prompt=login and max_age=0: the resident region asks for the password
	// although it has a session, and the new auth_time comes back.
	for _, kv := range [][]string{{"prompt", "login"}, {"max_age", "0"}} {
		fl = a.start()
		before := time.Now().Truncate(time.Second)
		pw := b.passwordPage(with(fl.url, kv...), "bob.smith")
		if pw.url.Hostname() != regionHost("us") {
			t.Fatalf("%s=%s: password page at %s, want the resident region", kv[0], kv[1], pw.url.Host)
		}
		p := b.submit(pw, url.Values{"password": {bobPassword}})
		if p.out == nil {
			t.Fatalf("%s=%s: %d %s", kv[0], kv[1], p.status, p.body)
		}
		s := a.finish(fl, p.out)
		if authTime(t, s).Before(before) || !slices.Contains(s.amr, "pwd") || !slices.Contains(s.amr, "fed") {
			t.Fatalf("%s=%s: auth_time %v (step began %v), amr %v", kv[0], kv[1], authTime(t, s), before, s.amr)
		}
	}

	// prompt=none in a browser without any session: login_required to the
	// application, never a page.
	fresh := f.newBrowser()
	fl = a.start()
	p = fresh.visit(with(fl.url, "prompt", "none", "login_hint", "bob.smith"))
	if p.out == nil || p.out.Query().Get("error") != "login_required" || p.out.Query().Get("state") != fl.state {
		t.Fatalf("prompt=none without a session: %d out=%v %s", p.status, p.out, p.body)
	}
}

// authTime is the ID token's auth_time.
func authTime(t *testing.T, s signedIn) time.Time {
	t.Helper()
	var c struct {
		AuthTime int64 `json:"auth_time"`
	}
	if err := s.idToken.Claims(&c); err != nil || c.AuthTime == 0 {
		t.Fatalf("ID token without auth_time: %v", err)
	}
	return time.Unix(c.AuthTime, 0)
}
