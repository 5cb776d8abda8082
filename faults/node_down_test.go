package faults

import (
	"context"
	"net/url"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// crossRegionTokens signs name (resident elsewhere) in to app through the
// global host served by entry — entry federates to the hub, the hub to
// name's region — and redeems the code at entry.
func crossRegionTokens(t testing.TB, f *fedtest.Federation, entry string, app region.RegisteredClient, name string) map[string]any {
	t.Helper()
	c, base := f.At(entry)
	b := oidctest.NewBrowser(t, c.Transport)
	v := oauth2.GenerateVerifier()
	loc := b.Login(fedtest.AuthURL(base, app, v), fedtest.AppRedirect, name, "password-"+name)
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("cross-region login of %s via %s: no code in %s", name, entry, loc)
	}
	s, oe, tok := f.Token(entry, app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}})
	if s != 200 {
		t.Fatalf("cross-region code redemption via %s: %d %+v", entry, s, oe)
	}
	return tok
}

// TestFaultNodeDownEveryAddress: eu runs two nodes (127.0.0.11 and
// 127.0.0.31, one database) and a DR site. Node 1 stops: routed token and
// introspection calls through us, and a cross-region sign-in of an eu user
// at a us application (us → hub → eu, the hub's back channel dialling eu),
// still succeed through node 2, and the DR site is neither dialled by a
// router nor connected to at all. Then node 2 stops too: the same calls
// are served by the DR site.
func TestFaultNodeDownEveryAddress(t *testing.T) {
	// Runbook step 7 (docs/operations.md, "Add a node"): eu's second node
	// runs with the same config and secrets (one data_dir) on the site's
	// second address, listed in regions[eu].addresses for every party.
	f := startFederation(t, fedtest.Options{Hub: true, DR: true, Node2: true})
	euApp, usApp := f.Client("eu"), f.Client("us")
	f.User("eu", "ada")
	f.User("eu", "bob")
	fedtest.EventuallyWithin(t, 20*time.Second, "eu's users to reach the hub", func() bool {
		p, err := f.Nodes["eu"].Store.PendingOutbox(context.Background(), 1)
		return err == nil && len(p) == 0
	})
	tok := f.Tokens("eu", euApp, "ada")
	crossRegionTokens(t, f, "us", usApp, "bob") // the whole path works with every node up
	node1, node2, drAddr := f.Cfg.DialAddrs(f.Cfg.Regions[0].Site)[0], f.Cfg.DialAddrs(f.Cfg.Regions[0].Site)[1],
		f.Cfg.DialAddrs(*f.Cfg.Regions[0].DR)[0]

	// Node 1 stops. GeoDNS would answer eu's host with node 2 only.
	f.Halt("eu")
	f.Hosts["eu.id.localhost"] = fedtest.SiteIP("eu/2")
	drBefore := f.Accepted("eu/dr")
	n2Before := f.Dialed(node2)
	steps := []struct {
		name string
		call func() (int, map[string]any)
		want func(map[string]any) bool
	}{
		{"introspection via us", func() (int, map[string]any) { return f.Introspect("us", euApp, tok["access_token"].(string)) },
			func(m map[string]any) bool { return m["active"] == true }},
		{"refresh via us", func() (int, map[string]any) {
			s, _, m := f.Token("us", euApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}})
			if s == 200 {
				tok["refresh_token"] = m["refresh_token"]
			}
			return s, m
		}, func(m map[string]any) bool { return m["access_token"] != nil }},
		{"introspection via ap", func() (int, map[string]any) { return f.Introspect("ap", euApp, tok["access_token"].(string)) },
			func(m map[string]any) bool { return m["active"] == true }},
	}
	for _, st := range steps {
		if s, m := st.call(); s != 200 || !st.want(m) {
			t.Fatalf("node 1 down, %s: %d %v", st.name, s, m)
		}
	}
	// A cross-region sign-in: the hub's back channel (discovery, token,
	// keys of eu) and us's, through eu's second address.
	crossRegionTokens(t, f, "us", usApp, "bob")
	if got := f.Dialed(node2) - n2Before; got < int64(len(steps)) {
		t.Fatalf("node 1 down: routers sent %d calls to node 2 (%s), want at least %d", got, node2, len(steps))
	}
	if n := f.Dialed(drAddr); n != 0 {
		t.Fatalf("node 1 down: routers sent %d calls to the DR site %s while node 2 is up", n, drAddr)
	}
	if n := f.Accepted("eu/dr") - drBefore; n != 0 {
		t.Fatalf("node 1 down: the DR site accepted %d connections while node 2 is up", n)
	}
	t.Logf("node 1 (%s) down: %d routed calls to node 2, 0 to the DR site; cross-region sign-in through node 2", node1, f.Dialed(node2)-n2Before)

	// Both nodes stop: the region is down, its DR site answers (GeoDNS
	// would now answer eu's host with the DR address).
	f.Halt("eu/2")
	f.Hosts["eu.id.localhost"] = fedtest.SiteIP("eu/dr")
	for _, st := range steps {
		if s, m := st.call(); s != 200 || !st.want(m) {
			t.Fatalf("both eu nodes down, %s: %d %v", st.name, s, m)
		}
	}
	crossRegionTokens(t, f, "us", usApp, "bob")
	if f.Dialed(drAddr) < int64(len(steps)) {
		t.Fatalf("both eu nodes down: routers sent %d calls to the DR site, want at least %d", f.Dialed(drAddr), len(steps))
	}
}
