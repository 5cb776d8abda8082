package hub_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
)

// TestHubDown stops the hub: a resident login still works, a cross-region
// login gets the clear error page (503, on the entry region's host, no
// redirect into the dead hub), and user changes made meanwhile reach the
// lookup table once the hub is back.
func TestHubDown(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	bob := f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	appUS := f.newApp("us", f.regionIssuer("us"))
	appEU := f.newApp("eu", f.globalURL())

	f.stopHub()

	// Resident login at us: the hub is not on this path.
	fl := appUS.start()
	loc, last := f.newBrowser().login(fl.url, "bob.smith", bobPassword)
	if s := appUS.finish(fl, loc); s.idToken.Subject != bob.ID {
		t.Fatalf("resident login: sub %q", s.idToken.Subject)
	}
	for _, h := range last.hosts {
		if h == hubHost {
			t.Fatal("a resident login went through the hub")
		}
	}

	// Cross-region login at eu: a clear error page.
	b := f.newBrowser()
	p := b.visit(appEU.start().url)
	p = b.submit(p, url.Values{"username": {"bob.smith"}})
	if p.status != http.StatusServiceUnavailable || !strings.Contains(p.body, federation.UnavailableMessage) ||
		p.url.Hostname() != globalHost || !strings.HasPrefix(p.header.Get("Content-Type"), "text/html") {
		t.Fatalf("cross-region login with the hub down: %d at %s: %s", p.status, p.url, p.body)
	}

	// A user created while the hub is down waits in ap's outbox.
	f.addUser("ap", "carol", "another good password", map[string]string{"name": "Carol"})
	pending, err := f.Nodes["ap"].Store.PendingOutbox(f.ctx, 10)
	if err != nil || len(pending) == 0 {
		t.Fatalf("ap outbox: %v, %v", pending, err)
	}
	if _, err := f.table.Resolve(f.ctx, "carol"); err == nil {
		t.Fatal("carol reached the table with the hub down")
	}

	f.startHub()
	f.waitResolves("carol", "ap")
	fedtest.Eventually(t, "ap's outbox to drain", func() bool {
		p, err := f.Nodes["ap"].Store.PendingOutbox(f.ctx, 10)
		return err == nil && len(p) == 0
	})

	// And both cross-region logins work again.
	fl = appEU.start()
	loc, _ = b.login(fl.url, "carol", "another good password")
	if s := appEU.finish(fl, loc); s.userinfo["name"] != "Carol" {
		t.Fatalf("carol at eu: %v", s.userinfo)
	}
}

// TestResidentRegionDown: the hub answers a user whose home region is down
// with the clear error page instead of redirecting into it.
func TestResidentRegionDown(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("ap", "dana", "dana's good password", nil)
	f.waitResolves("dana", "ap")
	a := f.newApp("eu", f.globalURL())
	f.Halt("ap")
	b := f.newBrowser()
	p := b.submit(b.visit(a.start().url), url.Values{"username": {"dana"}})
	if p.status != http.StatusServiceUnavailable || p.url.Hostname() != hubHost || !strings.Contains(p.body, federation.UnavailableMessage) {
		t.Fatalf("home region down: %d at %s: %s", p.status, p.url, p.body)
	}
}
