package faults

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// TestFaultDatabaseDown crashes the private PostgreSQL under eu: eu's
// /readyz answers 503, token and introspection calls (at eu and routed
// through us) fail closed with 503 temporarily_unavailable JSON, the login
// page with an HTML error page; when the database returns, the same node
// process serves again without a restart.
func TestFaultDatabaseDown(t *testing.T) {
	pg := startPrivatePostgres(t)
	f := startFederation(t, fedtest.Options{Databases: map[string]string{"eu": pg.URL()}})
	app := f.Client("eu", region.GrantAuthorizationCode, region.GrantRefreshToken, region.GrantClientCredentials)
	f.User("eu", "dee")
	tok := f.Tokens("eu", app, "dee")
	// A browser that is on the password page when the database fails.
	c, base := f.At("eu")
	b := oidctest.NewBrowser(t, c.Transport)
	page := oidctest.ReadPage(b.Follow(b.Get(fedtest.AuthURL(base, app, oauth2.GenerateVerifier())), oidctest.StopAt(fedtest.AppRedirect)))
	if page.Status != 200 {
		t.Fatalf("login page: %d", page.Status)
	}
	page = oidctest.ReadPage(b.Follow(b.Submit(page, url.Values{"username": {"dee"}}), oidctest.StopAt(fedtest.AppRedirect)))
	if page.Status != 200 || !strings.Contains(page.Body, `name="password"`) {
		t.Fatalf("password page: %d %s", page.Status, page.Body)
	}
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)
	hc := &http.Client{Timeout: 10 * time.Second}
	readyz := "http://" + f.Cfg.DialAddr(f.Cfg.Regions[0].Site) + "/readyz"
	ready := func() int {
		resp, err := hc.Get(readyz)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := ready(); s != 200 {
		t.Fatalf("/readyz before the fault: %d", s)
	}

	pg.crash()
	down := time.Now()
	for i := 0; ready() != http.StatusServiceUnavailable; i++ {
		if i > 100 {
			t.Fatal("/readyz still 200 with the database down")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("/readyz answered 503 %s after the database stopped", time.Since(down).Round(time.Millisecond))
	for _, entry := range []string{"eu", "us"} {
		start := time.Now()
		s, m := f.Introspect(entry, app, at)
		if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" || m["active"] != nil {
			t.Errorf("introspection via %s with eu's database down: %d %v", entry, s, m)
		}
		s, oe, _ := f.Token(entry, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
		if s != http.StatusServiceUnavailable || oe.Error != "temporarily_unavailable" {
			t.Errorf("refresh via %s with eu's database down: %d %+v", entry, s, oe)
		}
		s, oe, _ = f.Token(entry, app, url.Values{"grant_type": {"client_credentials"}})
		if s != http.StatusServiceUnavailable || oe.Error != "temporarily_unavailable" {
			t.Errorf("client_credentials via %s with eu's database down: %d %+v", entry, s, oe)
		}
		t.Logf("via %s: token and introspection calls failed closed in %s", entry, time.Since(start).Round(time.Millisecond))
	}
	// The browser on the password page gets an HTML error page.
	resp := b.Follow(b.Submit(page, url.Values{"username": {"dee"}, "password": {"password-dee"}}), oidctest.StopAt(fedtest.AppRedirect))
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		!strings.Contains(string(body), "temporarily unavailable") {
		t.Errorf("password submitted with eu's database down: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// A new authorization request is answered to the application with the
	// protocol's error redirect (RFC 6749 §4.1.2.1), carrying RFC 9207 iss.
	resp = b.Get(fedtest.AuthURL(base, app, oauth2.GenerateVerifier()))
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), fedtest.AppRedirect) || loc.Query().Get("code") != "" || loc.Query().Get("error") == "" ||
		loc.Query().Get("iss") != f.Cfg.GlobalIssuer() {
		t.Errorf("authorization request with eu's database down: %d %v", resp.StatusCode, loc)
	}
	t.Logf("authorization request with eu's database down: %d -> %v", resp.StatusCode, loc)

	// The database returns: the same node recovers on its own.
	pg.start()
	back := time.Now()
	for i := 0; ready() != 200; i++ {
		if i > 200 {
			t.Fatal("/readyz did not recover after the database returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("/readyz answered 200 %s after the database returned", time.Since(back).Round(time.Millisecond))
	if s, m := f.Introspect("us", app, at); s != 200 || m["active"] != true {
		t.Fatalf("introspection after recovery: %d %v", s, m)
	}
	if s, oe, _ := f.Token("us", app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); s != 200 {
		t.Fatalf("refresh after recovery: %d %+v", s, oe)
	}
	f.Tokens("us", app, "dee") // a full login
}
