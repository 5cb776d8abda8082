package region_test

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// browserFrom is a browser whose connections come from the loopback
// address ip, so a test can act as two client addresses.
func browserFrom(t *testing.T, ip string) *oidctest.Browser {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return oidctest.NewBrowser(t, &http.Transport{DialContext: d.DialContext})
}

// TestUsernameStepThrottled: the username step answers at most 60 posts a
// minute per client address that no successful login followed, then 429
// with Retry-After and the username page; another address is unaffected
// (issue 11 item 7, entry-region part).
func TestUsernameStepThrottled(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	b := browserFrom(t, "127.0.0.1")
	p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, c.ID)), oidctest.StopAt(redirectURI)))
	for i := range 60 {
		if got := oidctest.ReadPage(b.Submit(p, url.Values{"username": {"probe" + string(rune('a'+i%26))}})); got.Status != http.StatusOK {
			t.Fatalf("probe %d: status %d", i+1, got.Status)
		}
	}
	resp := b.Submit(p, url.Values{"username": {"one-more"}})
	got := oidctest.ReadPage(resp)
	if got.Status != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || got.Action != "/login" {
		t.Fatalf("61st username post: status %d, Retry-After %q, form %q; want 429 with Retry-After and the username page",
			got.Status, resp.Header.Get("Retry-After"), got.Action)
	}
	if strings.Contains(got.Body, `name="password"`) {
		t.Fatal("a throttled username post reached the password page")
	}

	other := browserFrom(t, "127.0.0.2")
	q := oidctest.ReadPage(other.Follow(other.Get(authURL(n, c.ID)), oidctest.StopAt(redirectURI)))
	if got := oidctest.ReadPage(other.Submit(q, url.Values{"username": {"someone"}})); got.Status != http.StatusOK || got.Action != "/login/password" {
		t.Fatalf("another address was throttled too: status %d", got.Status)
	}
}

// TestUsernameStepSuccessesDoNotCount: an address signing many people in
// (a shared office NAT) is never throttled by its successful logins.
func TestUsernameStepSuccessesDoNotCount(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	addCheapUser(t, n, "sam", "sam-password-1")
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	for i := range 75 {
		b := newBrowser(t)
		p := passwordPage(t, b, n, c.ID, "sam")
		if !gotCode(b, b.Submit(p, url.Values{"username": {"sam"}, "password": {"sam-password-1"}})) {
			t.Fatalf("login %d from one address did not complete", i+1)
		}
	}
}
