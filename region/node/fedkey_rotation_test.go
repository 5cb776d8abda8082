package node_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	fedid "github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
)

// TestFederationKeyRotation follows docs/operations.md's federation-key
// rotation on a running federation (eu, us, ap and the hub), first for
// region eu's key, then for the hub's: (1) every node, one at a time, lists
// the new public key beside the old one; (2) the rotating party's nodes
// sign with the new key; (3) every node, one at a time, drops the old
// public key. After every single move, cross-region sign-ins in both
// directions through the hub (eu's client at the hub, the hub's client at
// eu and us), routed redemptions and userinfo (hops signed by eu, claims
// fetched from the home region over a hop) and the hub's user-keys listing
// at every region all succeed. At each step the old and the new key are
// each accepted exactly when the procedure says: a hop to us and a client
// assertion at the hub signed with eu's retired key, and the hub's
// assertion at a region under the hub's retired key, are refused at the
// end, the new keys' are accepted.
func TestFederationKeyRotation(t *testing.T) {
	dir := t.TempDir()
	type pair struct {
		key  *ecdsa.PrivateKey
		file string
		pub  string
	}
	gen := func(name string) pair {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		p := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return pair{k, p, fedid.MarshalPublicKey(&k.PublicKey)}
	}
	euOld, euNew, hubOld, hubNew := gen("eu-old"), gen("eu-new"), gen("hub-old"), gen("hub-new")
	// Concurrent sign-ins (argon2id) on a shared CI machine can take
	// longer than the harness's 5 s per proxied step.
	warnings := &warnLog{}
	f := fedtest.Start(t, fedtest.Options{RequestTimeout: 30 * time.Second, Redis: true, SecondNodes: []string{"eu", "us", "ap", "hub"},
		Telemetry: warnings.telemetry, Configure: func(c *config.Config) {
			c.Regions[0].FederationKeyFile, c.Regions[0].FederationPublicKey = euOld.file, euOld.pub
			c.Hub.FederationKeyFile, c.Hub.FederationPublicKey = hubOld.file, hubOld.pub
			c.Federation.DrainPeriod = rotationDrain
		}})
	if f.Cfg.Regions[0].ID != "eu" {
		t.Fatal("harness order changed")
	}
	hub := startHub(f, f.Cfg)
	f.ConfigOf["hub/2"] = f.Cfg
	f.Start("hub/2")
	euApp, usApp := f.Client("eu"), f.Client("us")
	for _, id := range []string{"eu", "us", "ap"} {
		f.User(id, "user-"+id)
	}
	hub.reconcile()

	// load signs users in across regions concurrently and lists the
	// regions' users from the hub.
	load := func(step string) {
		t.Helper()
		var wg sync.WaitGroup
		for _, c := range []struct {
			entry string
			app   region.RegisteredClient
			user  string
		}{
			{"eu", euApp, "user-us"}, // eu → hub (eu's assertion) → us (hub's); userinfo: hop eu → us
			{"us", usApp, "user-eu"}, // us → hub → eu (hub's client at eu); userinfo: hop us → eu
			{"eu", usApp, "user-us"}, // routed: redemption and userinfo hop eu → us
			{"ap", euApp, "user-ap"}, // ap → hub → ap for an eu app; redemption hop ap → eu
		} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if m := signIn(t, f, c.entry, c.app, c.user); m != nil && m["name"] != c.user {
					t.Errorf("%s: %s at %s via %s: userinfo %v", step, c.user, c.app.ID, c.entry, m)
				}
			}()
		}
		wg.Wait()
		hub.reconcile()
		if t.Failed() {
			t.Fatalf("%s: a federated call failed", step)
		}
	}

	// accepted reports which of the given keys each check accepts.
	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c, _ := f.At("eu")
	hopAccepted := func(k *ecdsa.PrivateKey) bool { // eu's hop to us
		u := fmt.Sprintf("http://us.id.localhost:%d/internal/keys", f.Port)
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set(routing.HopHeader, routing.SignHop(k, "eu", "us", http.MethodGet, "/internal/keys", time.Now()))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	euAtHub := func(k *ecdsa.PrivateKey) bool { // eu's client at the hub (a bogus code: 400 once authenticated)
		hubURL := fmt.Sprintf("http://hub.id.localhost:%d", f.Port)
		id := fedid.RegionClientID("eu")
		a, err := fedid.SignAssertion(k, id, []string{hubURL, hubURL + "/oauth/token"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		s, oe, _ := oidctest.PostForm(t, c, hubURL+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {"x"},
			"redirect_uri": {"http://eu.id.localhost/login/federated/callback"}, "code_verifier": {"v"}, "client_id": {id},
			"client_assertion_type": {fedid.ClientAssertionType}, "client_assertion": {a}}, "", "")
		switch {
		case s == http.StatusBadRequest && oe.Error == "invalid_grant":
			return true
		case s == http.StatusUnauthorized && oe.Error == "invalid_client":
			return false
		}
		t.Fatalf("hub token endpoint: %d %+v", s, oe)
		return false
	}
	hubAtUS := func(k *ecdsa.PrivateKey) bool { // the hub's client at us (user-keys listing)
		us, _ := f.Cfg.Region("us")
		aud := strings.TrimSuffix(f.Cfg.Issuer(us), "/") + fedid.UserKeysPath
		id, err := fedid.HubClientID(codec, "us")
		if err != nil {
			t.Fatal(err)
		}
		bearer, err := fedid.BearerAssertion(k, id, aud)
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest(http.MethodGet, aud, nil)
		req.Header.Set("Authorization", bearer)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	expect := func(step, what string, check func(*ecdsa.PrivateKey) bool, old, new pair, oldOK, newOK bool) {
		t.Helper()
		if got := check(old.key); got != oldOK {
			t.Fatalf("%s: %s under the old key accepted=%v, want %v", step, what, got, oldOK)
		}
		if got := check(new.key); got != newOK {
			t.Fatalf("%s: %s under the new key accepted=%v, want %v", step, what, got, newOK)
		}
	}
	load("before")
	lb := newBalancer(f)
	var apps appSet
	apps.add(euApp)
	apps.add(usApp)
	background := startLoad(t, f, lb, &apps)
	defer func() {
		calls, signIns, failures := background.stop()
		for _, err := range failures {
			t.Error(err)
		}
		if len(failures) > 0 {
			t.Logf("the nodes' warnings:\n%s", warnings.String())
		}
		t.Logf("%d routed calls and %d cross-region sign-ins, run continuously through every node's drain and restart (2 nodes per site), %d failures",
			calls, signIns, len(failures))
	}()

	cfg := *f.Cfg
	cfg.Regions = append([]config.Region(nil), f.Cfg.Regions...)
	// move gives every node of each site in order its copy of next (a
	// drain and restart behind the site's balancer) and loads after each
	// site.
	move := func(step string, next config.Config, nodes ...string) {
		t.Helper()
		for _, id := range nodes {
			n := next
			n.Regions = append([]config.Region(nil), next.Regions...)
			if err := n.Validate(); err != nil {
				t.Fatal(err)
			}
			lb.roll(id, &n)
			lb.roll(id+"/2", &n)
			background.await(1)
			load(fmt.Sprintf("%s, %s moved", step, id))
		}
	}
	everyNode := []string{"eu", "hub", "us", "ap"}

	// eu's key.
	cfg.Regions[0].FederationPublicKeys = []string{euNew.pub}
	move("eu step 1 (new key listed)", cfg, everyNode...)
	expect("eu step 1", "eu's hop to us", hopAccepted, euOld, euNew, true, true)
	expect("eu step 1", "eu's client at the hub", euAtHub, euOld, euNew, true, true)
	cfg.Regions[0].FederationKeyFile = euNew.file
	move("eu step 2 (eu signs with the new key)", cfg, "eu")
	cfg.Regions[0].FederationPublicKey, cfg.Regions[0].FederationPublicKeys = euNew.pub, nil
	move("eu step 3 (old key removed)", cfg, everyNode...)
	expect("eu step 3", "eu's hop to us", hopAccepted, euOld, euNew, false, true)
	expect("eu step 3", "eu's client at the hub", euAtHub, euOld, euNew, false, true)

	// The hub's key.
	expect("hub before", "the hub's client at us", hubAtUS, hubOld, hubNew, true, false)
	cfg.Hub.FederationPublicKeys = []string{hubNew.pub}
	move("hub step 1 (new key listed)", cfg, everyNode...)
	expect("hub step 1", "the hub's client at us", hubAtUS, hubOld, hubNew, true, true)
	cfg.Hub.FederationKeyFile = hubNew.file
	move("hub step 2 (the hub signs with the new key)", cfg, "hub")
	cfg.Hub.FederationPublicKey, cfg.Hub.FederationPublicKeys = hubNew.pub, nil
	move("hub step 3 (old key removed)", cfg, everyNode...)
	expect("hub step 3", "the hub's client at us", hubAtUS, hubOld, hubNew, false, true)
}
