package hub_test

import (
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region"
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
// auth_time and amr come back in the entry region's ID token. acr_values
// reaches the resident region too, which keeps it with its authorization
// request, and the acr of both regions' ID tokens says what was met.
func TestResidentRegionEnforcesRequestParameters(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())
	b := f.newBrowser()

	fl := a.start()
	loc, _ := b.login(fl.url, "bob.smith", bobPassword)
	first := a.finish(fl, loc)
	if got := acr(t, first); got != region.ACRPassword {
		t.Fatalf("password login without acr_values: acr %q, want %q", got, region.ACRPassword)
	}

	// prompt=none with sessions: a code, no page, the original auth_time.
	fl = a.start()
	loc, _ = b.login(with(fl.url, "prompt", "none"), "bob.smith", "")
	if s := a.finish(fl, loc); !authTime(t, s).Equal(authTime(t, first)) || !slices.Contains(s.amr, "pwd") {
		t.Fatalf("prompt=none with a session: auth_time %v (first %v), amr %v", authTime(t, s), authTime(t, first), s.amr)
	}

	// What the hub sends the resident region carries the parameters.
	fl = a.start()
	b.stopAt = func(u *url.URL) bool { return u.Hostname() == regionHost("us") && u.Path == "/authorize" }
	acrValues := region.ACRMFA + " urn:example:unknown " + region.ACRPassword
	p := b.visit(with(fl.url, "prompt", "login", "max_age", "0", "ui_locales", "de fr", "acr_values", acrValues))
	for p.out == nil && p.isUsername() {
		p = b.submit(p, url.Values{"username": {"bob.smith"}})
	}
	b.stopAt = nil
	if p.out == nil {
		t.Fatalf("login never reached us: %d %s", p.status, p.body)
	}
	q := p.out.Query()
	if q.Get("prompt") != "login" || q.Get("max_age") != "0" || q.Get("ui_locales") != "de fr" || q.Get("login_hint") != "bob.smith" ||
		q.Get("acr_values") != acrValues {
		t.Fatalf("the hub's request to us lost parameters: %s", p.out)
	}
	// The resident region keeps acr_values with its authorization request
	// and answers it: bob has no second factor, so the login still
	// succeeds (acr_values is voluntary, OIDC Core §3.1.2.1) and the acr
	// names the first requested class that was met, the password one, in
	// the resident region's ID token to the hub and in the entry region's
	// ID token to the application.
	pw := b.visit(p.out.String())
	if !pw.isPassword() || pw.url.Hostname() != regionHost("us") {
		t.Fatalf("us answered its authorization request with %d at %s: %s", pw.status, pw.url, pw.body)
	}
	var usAR string
	for _, h := range hiddenRE.FindAllStringSubmatch(pw.body, -1) {
		if h[1] == "id" {
			usAR = h[2]
		}
	}
	if ar, err := f.Nodes["us"].Store.GetAuthRequest(f.ctx, usAR); err != nil || strings.Join(ar.ACRValues, " ") != acrValues {
		t.Fatalf("us's authorization request %q: acr_values %q (%v), want %q", usAR, ar.ACRValues, err, acrValues)
	}
	p = b.submit(pw, url.Values{"password": {bobPassword}})
	if p.out == nil {
		t.Fatalf("password at us with acr_values: %d %s", p.status, p.body)
	}
	if s := a.finish(fl, p.out); acr(t, s) != region.ACRPassword || !slices.Contains(s.amr, "fed") {
		t.Fatalf("acr_values %q: acr %q amr %v, want %q", acrValues, acr(t, s), s.amr, region.ACRPassword)
	}
	// A class the user cannot reach is no error either: the acr says what
	// was met and the application decides.
	fl = a.start()
	loc, _ = b.login(with(fl.url, "acr_values", region.ACRMFA), "bob.smith", "")
	if s := a.finish(fl, loc); acr(t, s) != region.ACRPassword {
		t.Fatalf("acr_values %s for a password-only user: acr %q, want %q", region.ACRMFA, acr(t, s), region.ACRPassword)
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

// acr is the ID token's acr.
func acr(t *testing.T, s signedIn) string {
	t.Helper()
	var c struct {
		ACR string `json:"acr"`
	}
	if err := s.idToken.Claims(&c); err != nil {
		t.Fatal(err)
	}
	return c.ACR
}
