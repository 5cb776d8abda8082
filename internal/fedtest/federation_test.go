package fedtest_test

import (
	"context"
	"net/url"
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
