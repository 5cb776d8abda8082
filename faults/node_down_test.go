package faults

import (
	"context"
	"net"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/hub/server"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
)

// startHub runs the federation's hub in this process (hub/server, as `hub
// serve` assembles it) on its configured listener until the test ends.
func (f *federation) startHub() {
	t := f.t
	h, err := server.New(context.Background(), f.cfg, server.Options{}, quietTelemetry())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", f.cfg.Hub.Listen)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.ServeListeners(ctx, ln, nil); h.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if f.hosts == nil {
		f.hosts = map[string]string{}
	}
	f.hosts["hub.id.localhost"] = siteIP("hub")
}

// crossRegionTokens signs name (resident elsewhere) in to app through the
// global host served by entry — entry federates to the hub, the hub to
// name's region — and redeems the code at entry.
func (f *federation) crossRegionTokens(entry string, app region.RegisteredClient, name string) map[string]any {
	t := f.t
	t.Helper()
	c, base := f.at(entry)
	b := oidctest.NewBrowser(t, c.Transport)
	v := oauth2.GenerateVerifier()
	loc := b.Login(authURL(base, app, v), appRedirect, name, "password-"+name)
	code := loc.Query().Get("code")
	if code == "" {
		t.Fatalf("cross-region login of %s via %s: no code in %s", name, entry, loc)
	}
	s, oe, tok := f.token(entry, app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {appRedirect}, "code_verifier": {v}})
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
	port := freeFedPort(t)
	f := &federation{t: t, cfg: fedConfig(t, port, fedOptions{euDR: true, euNode2: true}), port: port,
		nodes: map[string]*node.Node{}, stop: map[string]func(){}, accepts: map[string]*atomic.Int64{}}
	f.startHub()
	// Runbook step 7 (docs/operations.md, "Add a node"): eu's second node
	// runs with the same config and secrets (one data_dir) on the site's
	// second address, listed in regions[eu].addresses for every party.
	for _, site := range []string{"eu", "eu/2", "us", "ap", "eu/dr"} {
		f.start(site)
	}
	euApp, usApp := f.client("eu"), f.client("us")
	f.user("eu", "ada")
	f.user("eu", "bob")
	waitFor(t, 20*time.Second, "eu's users to reach the hub", func() bool {
		p, err := f.nodes["eu"].Store.PendingOutbox(context.Background(), 1)
		return err == nil && len(p) == 0
	})
	tok := f.tokens("eu", euApp, "ada")
	f.crossRegionTokens("us", usApp, "bob") // the whole path works with every node up
	node1, node2, drAddr := f.cfg.UpstreamAddrs(f.cfg.Regions[0].Site)[0], f.cfg.UpstreamAddrs(f.cfg.Regions[0].Site)[1],
		f.cfg.UpstreamAddrs(*f.cfg.Regions[0].DR)[0]

	// Node 1 stops. GeoDNS would answer eu's host with node 2 only.
	f.halt("eu")
	f.hosts["eu.id.localhost"] = siteIP("eu/2")
	drBefore := f.accepts["eu/dr"].Load()
	n2Before := f.dialed(node2)
	steps := []struct {
		name string
		call func() (int, map[string]any)
		want func(map[string]any) bool
	}{
		{"introspection via us", func() (int, map[string]any) { return f.introspect("us", euApp, tok["access_token"].(string)) },
			func(m map[string]any) bool { return m["active"] == true }},
		{"refresh via us", func() (int, map[string]any) {
			s, _, m := f.token("us", euApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}})
			if s == 200 {
				tok["refresh_token"] = m["refresh_token"]
			}
			return s, m
		}, func(m map[string]any) bool { return m["access_token"] != nil }},
		{"introspection via ap", func() (int, map[string]any) { return f.introspect("ap", euApp, tok["access_token"].(string)) },
			func(m map[string]any) bool { return m["active"] == true }},
	}
	for _, st := range steps {
		if s, m := st.call(); s != 200 || !st.want(m) {
			t.Fatalf("node 1 down, %s: %d %v", st.name, s, m)
		}
	}
	// A cross-region sign-in: the hub's back channel (discovery, token,
	// keys of eu) and us's, through eu's second address.
	f.crossRegionTokens("us", usApp, "bob")
	if got := f.dialed(node2) - n2Before; got < int64(len(steps)) {
		t.Fatalf("node 1 down: routers sent %d calls to node 2 (%s), want at least %d", got, node2, len(steps))
	}
	if n := f.dialed(drAddr); n != 0 {
		t.Fatalf("node 1 down: routers sent %d calls to the DR site %s while node 2 is up", n, drAddr)
	}
	if n := f.accepts["eu/dr"].Load() - drBefore; n != 0 {
		t.Fatalf("node 1 down: the DR site accepted %d connections while node 2 is up", n)
	}
	t.Logf("node 1 (%s) down: %d routed calls to node 2, 0 to the DR site; cross-region sign-in through node 2", node1, f.dialed(node2)-n2Before)

	// Both nodes stop: the region is down, its DR site answers (GeoDNS
	// would now answer eu's host with the DR address).
	f.halt("eu/2")
	f.hosts["eu.id.localhost"] = siteIP("eu/dr")
	for _, st := range steps {
		if s, m := st.call(); s != 200 || !st.want(m) {
			t.Fatalf("both eu nodes down, %s: %d %v", st.name, s, m)
		}
	}
	f.crossRegionTokens("us", usApp, "bob")
	if f.dialed(drAddr) < int64(len(steps)) {
		t.Fatalf("both eu nodes down: routers sent %d calls to the DR site, want at least %d", f.dialed(drAddr), len(steps))
	}
}
