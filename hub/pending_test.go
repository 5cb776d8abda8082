package hub_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/region/federate"
)

// TestAbandonedFederatedLoginsAreCapped (issue 11 item 14): a browser that
// begins many federated logins and abandons them keeps at most
// federate.MaxPendingLogins login cookies at the entry region, the oldest
// evicted, so its Cookie header stays bounded; the newest logins still
// complete and an evicted one is refused.
func TestAbandonedFederatedLoginsAreCapped(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())
	b := f.newBrowser()
	entry, _ := url.Parse(f.globalURL() + "/")
	pending := func() (n, size int) {
		for _, c := range b.c.Jar.Cookies(entry) {
			size += len(c.Name) + len(c.Value) + 3
			// (mrd_fed_<16 hex> was the name before the cap.)
			if strings.Contains(c.Name, "mrd_fl_") || (strings.HasPrefix(c.Name, "mrd_fed_") && len(c.Name) == len("mrd_fed_")+16) {
				n++
			}
		}
		return n, size
	}
	var hubLegs []*url.URL
	var flows []authFlow
	maxSize := 0
	for i := 0; i < 30; i++ {
		fl := a.start()
		flows = append(flows, fl)
		hubLegs = append(hubLegs, callbackAt(t, b, fl.url, federation.CallbackPath))
		n, size := pending()
		if n > federate.MaxPendingLogins {
			t.Fatalf("after %d abandoned logins the browser holds %d login cookies, cap %d", i+1, n, federate.MaxPendingLogins)
		}
		maxSize = max(maxSize, size)
	}
	if maxSize > 4096 {
		t.Fatalf("Cookie header grew to %d bytes", maxSize)
	}
	// The newest login completes; the oldest was evicted and is refused.
	last := len(flows) - 1
	p := b.visit(hubLegs[last].String())
	if p.out == nil || p.out.Query().Get("code") == "" {
		t.Fatalf("newest login: %d %s", p.status, p.body)
	}
	a.finish(flows[last], p.out)
	if p := b.visit(hubLegs[0].String()); p.out != nil || p.status != http.StatusBadRequest {
		t.Fatalf("evicted login: %d out=%v", p.status, p.out)
	}
}
