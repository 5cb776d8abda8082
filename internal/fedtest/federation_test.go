package fedtest_test

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
)

// TestFederatedLogin starts each shape of federation the options offer and
// signs a user resident in us in to an eu application through the global
// host served by eu: the login crosses regions through the hub (or the mesh
// peers), and the code is redeemed at ap.
func TestFederatedLogin(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts fedtest.Options
	}{
		{"hub, SQLite, embedded lookup table", fedtest.Options{Hub: true}},
		{"hub, PostgreSQL, Redis", fedtest.Options{Hub: true, Store: fedtest.Postgres, Redis: true}},
		{"mesh, MySQL, Redis", fedtest.Options{Topology: federation.TopologyMesh, Store: fedtest.MySQL, Redis: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := fedtest.Start(t, tc.opts)
			app := f.Client("eu")
			f.User("us", "bob")
			fedtest.Eventually(t, "us's outbox to drain", func() bool {
				p, err := f.Nodes["us"].Store.PendingOutbox(context.Background(), 10)
				return err == nil && len(p) == 0
			})
			v := oauth2.GenerateVerifier()
			code := f.Login("eu", app, "bob", v)
			s, oe, tok := f.Token("ap", app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
				"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}})
			if s != 200 || tok["id_token"] == nil {
				t.Fatalf("code redemption via ap: %d %+v", s, oe)
			}
			if s, m := f.Introspect("us", app, tok["access_token"].(string)); s != 200 || m["active"] != true {
				t.Fatalf("introspection via us: %d %v", s, m)
			}
		})
	}
}

// TestSecondNodeAndDeferredSite: with Node2 eu runs a second node on its
// second address; a Deferred site is configured but left to the test.
// With eu's first node down, a sign-in through us at an eu application is
// served by the second node: routers dial it and its listener accepts.
func TestSecondNodeAndDeferredSite(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{Node2: true, Deferred: []string{"eu"}})
	if f.Nodes["eu"] != nil || f.Nodes["eu/2"] == nil {
		t.Fatalf("nodes started: %v, want eu deferred and eu/2 running", f.Nodes)
	}
	f.Start("eu")
	app := f.Client("eu")
	f.User("eu", "ada")
	f.Halt("eu")
	f.Hosts["eu.id.localhost"] = fedtest.SiteIP("eu/2")
	node2 := fedtest.SiteAddr("eu/2", f.Port)
	dialed, accepted := f.Dialed(node2), f.Accepted("eu/2")
	tok := f.Tokens("us", app, "ada")
	if s, m := f.Introspect("us", app, tok["access_token"].(string)); s != 200 || m["active"] != true {
		t.Fatalf("introspection via us with eu's first node down: %d %v", s, m)
	}
	if f.Dialed(node2) == dialed || f.Accepted("eu/2") == accepted {
		t.Fatalf("eu's second node: %d dials, %d connections accepted during the sign-in", f.Dialed(node2)-dialed, f.Accepted("eu/2")-accepted)
	}
}

// TestSecondNodesConfig: SecondNodes lists each named site's second
// address after its first (the hub's too), Node2 still means eu's, and
// other sites keep one address.
func TestSecondNodesConfig(t *testing.T) {
	cfg := fedtest.Config(t, fedtest.FreePort(t), fedtest.Options{Node2: true, SecondNodes: []string{"ap", "hub"}})
	want := map[string][]string{"eu": {"127.0.0.11", "127.0.0.31"}, "us": {"127.0.0.12"}, "ap": {"127.0.0.13", "127.0.0.33"}}
	for _, r := range cfg.Regions {
		if !slices.Equal(r.Addresses, want[r.ID]) {
			t.Errorf("regions[%s].addresses = %v, want %v", r.ID, r.Addresses, want[r.ID])
		}
	}
	if got := cfg.Hub.Addresses; !slices.Equal(got, []string{"127.0.0.10", "127.0.0.30"}) {
		t.Errorf("hub.addresses = %v", got)
	}
	if fedtest.SiteIP("us/2") != "127.0.0.32" || fedtest.SiteIP("hub/2") != "127.0.0.30" {
		t.Error("second nodes' site addresses changed")
	}
}
