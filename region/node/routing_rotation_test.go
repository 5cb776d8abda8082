package node_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
)

// TestRoutingKeyRotationNodeByNode follows docs/operations.md's routing-key
// rotation on a running three-region federation with its hub: every node
// (eu, the hub, us, ap) moves through the steps one at a time, and after
// every single move (so with every mix of key sets the procedure produces)
// routed authorization requests, token calls, introspection (also by a
// client of another region) and userinfo all succeed through every region,
// for clients registered before the rotation and during it, while
// cross-region sign-ins run concurrently: for every app, a user resident
// in another region signs in through a third region's global host and the
// hub, the code is redeemed and userinfo (fetched from the user's home)
// names the user. After the old key retires, every one of those clients
// still works and cross-region sign-ins still succeed.
//
// The hub names itself to each region by a client id derived from the
// routing key it signs with; regions register the id of every key in
// their ring (federation.HubClientIDs), which is what lets a hub and a
// region on different steps still federate.
func TestRoutingKeyRotationNodeByNode(t *testing.T) {
	dir := t.TempDir()
	keyFile := func(name string) (string, []byte) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, b
	}
	oldFile, oldKey := keyFile("routing-old.key")
	newFile, newKey := keyFile("routing-new.key")
	// Concurrent sign-ins (argon2id) on a shared CI machine can take
	// longer than the harness's 5 s per proxied step; a deadline is not
	// what this test is about.
	f := fedtest.Start(t, fedtest.Options{RequestTimeout: 30 * time.Second,
		Configure: func(c *config.Config) { c.Federation.RoutingKeyFile = oldFile }})
	ids := []string{"eu", "us", "ap"}
	hub := startHub(f, f.Cfg)

	// One app and one user per region; apps are registered with the codec
	// of the phase they are registered in.
	register := func(id string, cfg *config.Config) region.RegisteredClient {
		codec, err := node.Codec(cfg, cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		c, err := region.CreateClient(t.Context(), f.Nodes[id].Store, codec, id, region.ClientSpec{Name: "app-" + id,
			RedirectURIs: []string{fedtest.AppRedirect}, FirstParty: true, Scopes: []string{region.ScopeIntrospect}})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	var apps []region.RegisteredClient
	for _, id := range ids {
		f.User(id, "user-"+id)
		apps = append(apps, register(id, f.Cfg))
	}
	hub.reconcile()
	home := func(app region.RegisteredClient) string { tag, _ := routing.Parse(app.ID); return tag.Region }

	calls, signIns := 0, 0
	// load runs every routed call of every app through every region, and
	// concurrently one cross-region sign-in per app.
	load := func(phase string) {
		t.Helper()
		var wg sync.WaitGroup
		var crossFailed atomic.Bool
		for i, app := range apps {
			h := slices.Index(ids, home(app))
			resident, entry := ids[(h+1)%len(ids)], ids[(h+2)%len(ids)]
			if i%2 == 1 {
				entry = ids[h] // also through the app's own region
			}
			signIns++
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok := false
				defer func() { crossFailed.CompareAndSwap(false, !ok) }()
				m := signIn(t, f, entry, app, "user-"+resident)
				if m == nil {
					return
				}
				if sub, _ := m["sub"].(string); m["name"] != "user-"+resident || !strings.HasPrefix(sub, "fed."+resident+".") {
					t.Errorf("%s: cross-region sign-in of user-%s at %s via %s: userinfo %v", phase, resident, app.ID, entry, m)
					return
				}
				ok = true
			}()
		}
		defer func() {
			wg.Wait()
			if crossFailed.Load() {
				t.Fatalf("%s: a cross-region sign-in failed", phase)
			}
		}()
		for i, app := range apps {
			h := home(app)
			entry := ids[(i+1)%len(ids)] // never the app's home region
			verifier := oauth2.GenerateVerifier()
			loc := f.LoginRedirect(entry, app, "user-"+h, verifier)
			code := loc.Query().Get("code")
			if code == "" {
				t.Fatalf("%s: authorize for %s via %s: %s", phase, app.ID, entry, loc)
			}
			redeem := ids[(i+2)%len(ids)]
			s, oe, tok := f.Token(redeem, app, map[string][]string{"grant_type": {"authorization_code"}, "code": {code},
				"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}})
			if s != http.StatusOK {
				t.Fatalf("%s: code of %s redeemed via %s: %d %+v", phase, app.ID, redeem, s, oe)
			}
			at := tok["access_token"].(string)
			calls += 2
			for _, e := range ids {
				// Introspection by the app and by an app of another region.
				for _, caller := range []region.RegisteredClient{app, apps[(i+1)%len(apps)]} {
					if s, m := f.Introspect(e, caller, at); s != http.StatusOK || m["active"] != true {
						t.Fatalf("%s: introspection of %s's token via %s by %s: %d %v", phase, app.ID, e, caller.ID, s, m)
					}
					calls++
				}
				c, base := f.At(e)
				req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
				req.Header.Set("Authorization", "Bearer "+at)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: userinfo of %s's token via %s: %d", phase, app.ID, e, resp.StatusCode)
				}
				calls++
			}
			s, oe, _ = f.Token(entry, app, map[string][]string{"grant_type": {"refresh_token"}, "refresh_token": {tok["refresh_token"].(string)}})
			if s != http.StatusOK {
				t.Fatalf("%s: refresh of %s via %s: %d %+v", phase, app.ID, entry, s, oe)
			}
			calls++
		}
	}
	load("phase 0")

	phases := []struct {
		name string
		ring []config.RoutingKey
	}{
		{"phase 1 (old signs, new verifies)", []config.RoutingKey{{File: oldFile, Use: "sign"}, {File: newFile, Use: "verify"}}},
		{"phase 2 (new signs, old verifies)", []config.RoutingKey{{File: newFile, Use: "sign"}, {File: oldFile, Use: "verify"}}},
		{"phase 3 (old retired)", []config.RoutingKey{{File: newFile, Use: "sign"}, {File: oldFile, Use: "clients"}}},
	}
	for _, p := range phases {
		cfg := *f.Cfg
		cfg.Federation.RoutingKeyFile = ""
		cfg.Federation.RoutingKeys = p.ring
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		// Regions and the hub, one node at a time; the hub moves between
		// regions so that it runs each step both ahead of and behind
		// regions.
		for _, id := range []string{"eu", "hub", "us", "ap"} {
			if id == "hub" {
				hub.halt()
				hub = startHub(f, &cfg)
			} else {
				f.Halt(id)
				f.ConfigOf[id] = &cfg
				f.Start(id)
			}
			load(fmt.Sprintf("%s, %s moved", p.name, id))
		}
		if p.name == phases[0].name {
			// Clients registered mid-rotation carry m2 ids naming the old key.
			for _, id := range ids {
				apps = append(apps, register(id, &cfg))
			}
			load(p.name + ", new clients")
		}
	}
	wantIDs := map[string]int{routing.KeyID(oldKey): 3, "": 3}
	for _, app := range apps {
		tag, _ := routing.Parse(app.ID)
		wantIDs[tag.KeyID]--
	}
	if wantIDs[routing.KeyID(oldKey)] != 0 || wantIDs[""] != 0 || bytes.Equal(oldKey, newKey) {
		t.Fatalf("client ids by key: %v", wantIDs)
	}
	t.Logf("%d routed calls and %d concurrent cross-region sign-ins across 13 key-set mixes, zero failures", calls, signIns)
}
