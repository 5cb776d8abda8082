package hub_test

import (
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/federation"
)

// TestSessionCookieScope (issue 12, item 8): a region's SSO cookie is
// host-only (no Domain attribute) and bound to the browser's nonce
// cookie. After a sign-in at us, no other host (another region, the
// global host, the hub) is sent us's SSO cookie; replayed in another
// browser without its nonce cookie, or with another nonce cookie, it signs
// nobody in, while the browser it belongs to keeps its SSO.
func TestSessionCookieScope(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("us", f.regionIssuer("us"))

	b := f.newBrowser()
	rec := &setCookieRecorder{next: b.c.Transport}
	b.c.Transport = rec
	p := b.visit(a.start().url)
	for range 4 {
		if p.out != nil {
			break
		}
		fields := url.Values{"username": {"bob.smith"}}
		if p.isPassword() {
			fields.Set("password", bobPassword)
		}
		p = b.submit(p, fields)
	}
	if p.out == nil {
		t.Fatalf("login did not finish: %d %s", p.status, p.body)
	}
	sso := ""
	for _, c := range rec.setCookies {
		if strings.Contains(strings.ToLower(c), "domain=") && !strings.HasPrefix(c, "mrd_fed_") && !strings.HasPrefix(c, "mrd_so_") {
			t.Errorf("a cookie other than the sealed sign-out and login-hint cookies is domain-wide: %s", c)
		}
		if strings.HasPrefix(c, "mrd_sso_us=") {
			sso = c
			if strings.Contains(strings.ToLower(c), "domain=") {
				t.Fatalf("SSO cookie has a Domain attribute: %s", c)
			}
		}
	}
	if sso == "" {
		t.Fatalf("no SSO cookie set: %v", rec.setCookies)
	}
	sent := func(host, name string) *http.Cookie {
		for _, c := range b.c.Jar.Cookies(&url.URL{Scheme: "http", Host: host, Path: "/"}) {
			if c.Name == name {
				return c
			}
		}
		return nil
	}
	for _, host := range []string{regionHost("eu"), regionHost("ap"), globalHost, hubHost} {
		if c := sent(host, "mrd_sso_us"); c != nil {
			t.Errorf("us's SSO cookie is sent to %s", host)
		}
	}
	ssoCookie, nonce := sent(regionHost("us"), "mrd_sso_us"), sent(regionHost("us"), "mrd_browser")
	if ssoCookie == nil || nonce == nil {
		t.Fatal("the browser does not send its SSO and nonce cookies to us")
	}

	// Replays of the SSO cookie alone, and with another browser's nonce.
	other := f.newBrowser()
	other.visit(f.regionIssuer("us") + "/login?id=x") // gets a nonce cookie of its own
	for name, jarCookies := range map[string][]*http.Cookie{
		"alone":         {ssoCookie},
		"foreign nonce": {ssoCookie, sent(regionHost("us"), "mrd_browser")},
	} {
		thief := f.newBrowser()
		if name == "foreign nonce" {
			thief = other
			jarCookies = []*http.Cookie{ssoCookie}
		} else {
			jar, _ := cookiejar.New(nil)
			thief.c.Jar = jar
		}
		thief.c.Jar.SetCookies(&url.URL{Scheme: "http", Host: regionHost("us"), Path: "/"}, jarCookies)
		p := thief.visit(a.start().url)
		if p.out != nil || !(p.isUsername() || p.isPassword()) {
			t.Fatalf("SSO cookie replayed (%s) signed in: %d out=%v", name, p.status, p.out)
		}
	}

	// The browser it belongs to still has SSO.
	loc, _ := b.login(a.start().url, "bob.smith", "")
	if loc == nil || loc.Query().Get("code") == "" {
		t.Fatalf("SSO in the original browser: %v", loc)
	}
}

// setCookieRecorder keeps every Set-Cookie header a browser receives.
type setCookieRecorder struct {
	next       http.RoundTripper
	setCookies []string
}

func (r *setCookieRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err == nil {
		r.setCookies = append(r.setCookies, resp.Header.Values("Set-Cookie")...)
	}
	return resp, err
}

// TestLogoutEndsHomeSession: a us resident signed in to an eu application
// (through the hub; the session lives at us, on us's host) logs out at eu:
// eu cannot see us's host-only SSO cookie, but forwards us's sealed
// sign-out cookie, and us's session ends: the next sign-in at a us
// application asks for the password.
func TestLogoutEndsHomeSession(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	appEU := f.newApp("eu", f.globalURL())
	appUS := f.newApp("us", f.regionIssuer("us"))
	b := f.newBrowser()
	fl := appEU.start()
	loc, _ := b.login(fl.url, "bob.smith", bobPassword)
	appEU.finish(fl, loc)
	// SSO at us first, to show the session is there.
	fl = appUS.start()
	if loc, _ := b.login(fl.url, "bob.smith", ""); loc.Query().Get("code") == "" {
		t.Fatalf("no SSO at us: %v", loc)
	}

	confirm := b.visit(f.globalURL() + "/end_session")
	if done := b.submit(confirm, url.Values{"confirm": {"yes"}}); done.status != http.StatusOK {
		t.Fatalf("logout at eu: %d %s", done.status, done.body)
	}
	p := b.visit(appUS.start().url)
	for range 3 {
		if p.out != nil || p.isPassword() {
			break
		}
		p = b.submit(p, url.Values{"username": {"bob.smith"}})
	}
	if !p.isPassword() {
		t.Fatalf("after logout at eu, us still signs bob in: %d out=%v", p.status, p.out)
	}
}
