package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/region/store"
)

// drWorker rotates one refresh-token family at eu under load and records
// what the server acknowledged.
type drWorker struct {
	current   string   // the refresh token the worker holds
	rotated   []string // refresh tokens the server acknowledged rotating away
	access    []string // access tokens the server acknowledged issuing
	uncertain bool     // the last request failed: its outcome is unknown
	limit     int      // stop after this many rotations (0: until the fault)
}

// TestFaultDRFailoverFencing follows the runbook of docs/operations.md
// ("Runbook: fail over, promote, fail back, add a node") step by step with
// real PostgreSQL servers and a real `regional serve` process for eu: eu
// runs on a private primary, eu's DR site on a synchronous streaming hot
// standby of it. Under refresh-token load the primary's database crashes
// and eu's process is killed (SIGKILL); the DR site, still a standby,
// serves reads (introspection of every acknowledged token, discovery) and
// refuses writes with 503 temporarily_unavailable + Retry-After (HTML on
// browser endpoints) while /readyz says "standby"; the operator runs
// `regional promote --dr` and the same DR node takes writes without a
// restart (rotations, a new user signs in). The old primary's database and
// process return: the node is fenced (503 everywhere, /readyz "fenced"), so
// a refresh token rotated at the DR site is not accepted again there;
// nothing the DR site acknowledged is lost; every rotated refresh token
// stays rotated. Then the old primary is rebuilt from the DR site, the
// region fails back with `regional promote`, and the DR site is rebuilt as
// a standby of the new primary. Each step's comment names its runbook step.
func TestFaultDRFailoverFencing(t *testing.T) {
	start := time.Now()
	// Runbook step 0, "Before the bad hour": S is a synchronous streaming
	// standby of P (testenv's Standby sets synchronous_standby_names = '*'
	// and synchronous_commit = remote_apply on P).
	primary := testenv.PostgresPrimary(t)
	standby := primary.Standby(t)
	t.Logf("primary and synchronous standby up in %s", time.Since(start).Round(time.Millisecond))

	// eu's primary and DR site start below, eu's as a process.
	f := startFederation(t, fedtest.Options{DR: true, Databases: map[string]string{"eu": primary.URL(), "eu/dr": standby.URL()},
		RolePoll: 200 * time.Millisecond, Deferred: []string{"eu", "eu/dr"}})
	// eu's store as the operator's tools open it (registering the client
	// and the user below, reading the fence record in step 4).
	eu, _ := f.Cfg.Region("eu")
	euStore, _, err := node.OpenSiteStore(context.Background(), eu, false, f.Cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	// eu is a real `regional serve` process on the same config; the other
	// nodes run in this process.
	euProc := startRegionalProc(t, f, "eu", false)
	f.Start("eu/dr")
	if r := f.Nodes["eu/dr"].Role(); r != region.RoleStandby {
		t.Fatalf("eu's DR node on a standby database: role %s", r)
	}
	app, err := region.CreateClient(context.Background(), euStore, f.Codec(), "eu", region.ClientSpec{Name: "app-eu",
		RedirectURIs: []string{fedtest.AppRedirect}, FirstParty: true,
		GrantTypes: []string{region.GrantAuthorizationCode, region.GrantRefreshToken, region.GrantClientCredentials},
		Scopes:     []string{region.ScopeIntrospect, region.ScopeDereference}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := region.CreateUser(context.Background(), euStore, region.UserSpec{Username: "dee", Password: "password-dee",
		Claims: map[string]string{"name": "dee"}}); err != nil {
		t.Fatal(err)
	}
	euStore.Close()
	// Two workers finish before the fault (their last rotation is
	// certainly acknowledged); four are mid-request when it strikes.
	workers := make([]*drWorker, 6)
	for i := range workers {
		tok := f.Tokens("eu", app, "dee")
		workers[i] = &drWorker{current: tok["refresh_token"].(string), access: []string{tok["access_token"].(string)}}
		if i < 2 {
			workers[i].limit = 5
		}
	}

	// Runbook step 1, "The primary fails": load on eu; its database crashes
	// under it and its process is killed (SIGKILL).
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	rotations := 0
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, base := f.At("eu")
			c.Timeout = 5 * time.Second
			for {
				select {
				case <-stop:
					return
				default:
				}
				if w.limit > 0 && len(w.rotated) >= w.limit {
					return
				}
				s, tok := postToken(c, base, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {w.current}})
				if s != http.StatusOK {
					w.uncertain = true
					return
				}
				mu.Lock()
				rotations++
				mu.Unlock()
				w.rotated = append(w.rotated, w.current)
				w.current = tok["refresh_token"].(string)
				w.access = append(w.access, tok["access_token"].(string))
			}
		}()
	}
	fedtest.EventuallyWithin(t, 15*time.Second, "40 rotations under load", func() bool { mu.Lock(); defer mu.Unlock(); return rotations >= 40 })
	primary.Crash()
	euProc.kill()
	close(stop)
	wg.Wait()
	acked := 0
	for _, w := range workers {
		acked += len(w.access)
	}
	t.Logf("eu's database crashed and its process was killed after %d acknowledged rotations", rotations)

	// Runbook step 1 (continued): the DR site serves reads on its standby
	// and refuses writes; its /readyz says "standby".
	dr, drBase := f.At("eu/dr")
	drSite := "http://" + f.Cfg.DialAddr(*f.Cfg.Regions[0].DR)
	if s, body := get(t, dr, drSite+"/readyz"); s != http.StatusServiceUnavailable || !strings.Contains(body, "standby") {
		t.Fatalf("DR /readyz on a standby: %d %s (GeoDNS must not fail over to it before promotion)", s, body)
	}
	if s, _ := get(t, dr, drBase+"/.well-known/openid-configuration"); s != http.StatusOK {
		t.Fatalf("discovery at the standby DR site: %d", s)
	}
	for _, w := range workers {
		for _, at := range w.access {
			if s, m := f.Introspect("eu/dr", app, at); s != http.StatusOK || m["active"] != true {
				t.Fatalf("an acknowledged access token at the standby DR site: %d %v", s, m)
			}
		}
	}
	resp := postRaw(t, dr, drBase+"/oauth/token", app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {workers[0].current}})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
		!strings.Contains(string(body), `"temporarily_unavailable"`) {
		t.Fatalf("refresh at the standby DR site: %d Retry-After=%q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	resp = get2(t, dr, fedtest.AuthURL(drBase, app, "v-"+strings.Repeat("x", 43)))
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") ||
		resp.Header.Get("Retry-After") == "" {
		t.Fatalf("authorize at the standby DR site: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	t.Logf("standby DR site: %d acknowledged access tokens introspected active; writes refused with 503", acked)

	// Runbook step 2, "Promote the DR site": `regional promote --region eu
	// --dr`; the running DR node switches without a restart.
	g := promote(t, f, true)
	if g.Holder != "eu-dr.id.localhost" || g.Number < 2 {
		t.Fatalf("generation after promotion: %+v", g)
	}
	fedtest.EventuallyWithin(t, 10*time.Second, "the DR node to become primary", func() bool { return f.Nodes["eu/dr"].Role() == region.RolePrimary })
	if s, body := get(t, dr, drSite+"/readyz"); s != http.StatusOK {
		t.Fatalf("DR /readyz after promotion: %d %s", s, body)
	}

	// Runbook step 3, "The DR site takes writes".
	drAccess := []string{}
	preFailover := map[*drWorker]string{}
	for i, w := range workers {
		s, tok := postToken(dr, drBase, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {w.current}})
		switch {
		case s == http.StatusOK:
			preFailover[w] = w.current
			w.rotated = append(w.rotated, w.current)
			w.current = tok["refresh_token"].(string)
			drAccess = append(drAccess, tok["access_token"].(string))
		case w.uncertain:
			// Its last request at eu may have rotated it (the answer was
			// lost): presenting it again is a reuse, refused.
			t.Logf("worker %d: last rotation at eu had an unknown outcome; DR answered %d", i, s)
		default:
			t.Fatalf("worker %d: the current refresh token (acknowledged at eu) refused at the promoted DR site: %d %v", i, s, tok)
		}
	}
	if len(preFailover) < 2 {
		t.Fatalf("only %d refresh tokens rotated at the DR site", len(preFailover))
	}
	if _, err := region.CreateUser(context.Background(), f.Nodes["eu/dr"].Store, region.UserSpec{Username: "eve",
		Password: "password-eve", Claims: map[string]string{"name": "eve"}}); err != nil {
		t.Fatal(err)
	}
	eve := f.Tokens("eu/dr", app, "eve")
	drAccess = append(drAccess, eve["access_token"].(string))

	// Runbook step 4, "The old primary returns": its process asks the DR
	// site for its generation before it serves and fences itself.
	primary.Start()
	euProc = startRegionalProc(t, f, "eu", false)
	euSite := "http://" + f.Cfg.DialAddr(eu.Site)
	euc, euBase := f.At("eu")
	if s, body := get(t, euc, euSite+"/readyz"); s != http.StatusServiceUnavailable || !strings.Contains(body, "fenced") {
		t.Fatalf("old primary /readyz: %d %s", s, body)
	}
	for w, rt := range preFailover {
		// Still current in the old primary's database, rotated at DR.
		if s, tok := postToken(euc, euBase, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); s != http.StatusServiceUnavailable {
			t.Fatalf("a refresh token rotated at the DR site, at the fenced old primary: %d %v", s, tok)
		}
		_ = w
	}
	if s, m := f.Introspect("eu", app, eve["access_token"].(string)); s != http.StatusServiceUnavailable {
		t.Fatalf("introspection at the fenced old primary: %d %v", s, m)
	}
	if gen, err := siteGeneration(f, false); err != nil || gen.FencedBy != g.Number || gen.FencedHolder != g.Holder {
		t.Fatalf("the old primary's fence record: %+v %v (DR holds %+v)", gen, err, g)
	}

	// Nothing the DR site acknowledged is lost; nothing rotated is revived.
	for _, at := range drAccess {
		if s, m := f.Introspect("eu/dr", app, at); s != http.StatusOK || m["active"] != true {
			t.Fatalf("an access token issued at the DR site: %d %v", s, m)
		}
	}
	replays := 0
	for _, w := range workers {
		for _, rt := range w.rotated {
			if s, tok := postToken(dr, drBase, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); s == http.StatusOK {
				t.Fatalf("a rotated refresh token was accepted again at the DR site: %v", tok)
			}
			replays++
		}
	}
	t.Logf("old primary fenced; %d DR-issued tokens intact; %d rotated refresh tokens all refused; %s so far",
		len(drAccess), replays, time.Since(start).Round(time.Millisecond))

	// Runbook step 5, "Rebuild the old primary from the DR site": stop its
	// nodes, discard P, a new standby of the DR database (pg_basebackup -R)
	// replaces it in regions[eu].database, and eu's process starts on it as
	// a standby that serves what the DR site accepted.
	euProc.kill()
	primary.Stop()
	rebuilt := standby.Standby(t)
	f.Cfg.Regions[0].Database = rebuilt.URL()
	startRegionalProc(t, f, "eu", false) // runs until the test ends
	if s, body := get(t, euc, euSite+"/readyz"); s != http.StatusServiceUnavailable || !strings.Contains(body, "standby") {
		t.Fatalf("eu rebuilt from the DR site: /readyz %d %s, want standby", s, body)
	}
	// eve (created at the DR site) is there; the families the replays
	// revoked at the DR site are revoked here too.
	if s, m := f.Introspect("eu", app, eve["access_token"].(string)); s != http.StatusOK || m["active"] != true {
		t.Fatalf("eve's access token (DR site) at the rebuilt eu standby: %d %v", s, m)
	}
	for _, at := range drAccess[:len(drAccess)-1] {
		if s, m := f.Introspect("eu", app, at); s != http.StatusOK || m["active"] != false {
			t.Fatalf("an access token of a family revoked at the DR site, at the rebuilt eu standby: %d %v", s, m)
		}
	}

	// Runbook step 6, "Fail back": stop the DR site's nodes, `regional
	// promote --region eu`, start the DR nodes again: they find themselves
	// fenced by eu's new generation.
	f.Halt("eu/dr")
	g3 := promote(t, f, false)
	if g3.Number != g.Number+1 || g3.Holder != "eu.id.localhost" {
		t.Fatalf("generation after failback: %+v (DR held %+v)", g3, g)
	}
	fedtest.EventuallyWithin(t, 20*time.Second, "eu's node to become primary", func() bool {
		s, _ := get(t, euc, euSite+"/readyz")
		return s == http.StatusOK
	})
	f.Start("eu/dr")
	if r := f.Nodes["eu/dr"].Role(); r != region.RoleFenced {
		t.Fatalf("the DR site after failback: role %s, want fenced", r)
	}
	s, tok := postToken(euc, euBase, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {eve["refresh_token"].(string)}})
	if s != http.StatusOK {
		t.Fatalf("eve's refresh token (issued at the DR site), at eu after failback: %d %v", s, tok)
	}
	for _, w := range workers {
		for _, rt := range w.rotated {
			if s, tok := postToken(euc, euBase, app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}); s == http.StatusOK {
				t.Fatalf("a rotated refresh token was accepted at eu after failback: %v", tok)
			}
		}
	}
	// Runbook step 6 (continued): rebuild the DR site as a standby of the
	// new primary (step 5 with the roles swapped); its nodes come up as
	// standbys serving what eu accepted.
	f.Halt("eu/dr")
	standby.Stop()
	newStandby := rebuilt.Standby(t)
	f.Cfg.Regions[0].DR.Database = newStandby.URL()
	f.Start("eu/dr")
	if r := f.Nodes["eu/dr"].Role(); r != region.RoleStandby {
		t.Fatalf("the DR site rebuilt from eu: role %s, want standby", r)
	}
	if s, m := f.Introspect("eu/dr", app, tok["access_token"].(string)); s != http.StatusOK || m["active"] != true {
		t.Fatalf("an access token eu issued after failback, at the rebuilt DR standby: %d %v", s, m)
	}
	t.Logf("failed back: eu holds generation %d and took a DR-issued refresh token; DR rebuilt as a standby; total %s",
		g3.Number, time.Since(start).Round(time.Millisecond))
}

// startRegionalProc runs `regional serve --region id [--dr]` (the binary
// of this checkout) on f's configuration, written to a file as an operator
// would, and waits until its public /healthz answers (its role, primary,
// standby or fenced, is then settled). The process is killed (SIGKILL)
// with kill or when the test ends.
func startRegionalProc(t *testing.T, f *fedtest.Federation, id string, dr bool) *proc {
	t.Helper()
	path := fedtest.ConfigFile(t, f.Cfg)
	argv := []string{filepath.Join(binaries(t), "regional"), "serve", "--config", path, "--region", id}
	r, _ := f.Cfg.Region(id)
	site := r.Site
	if dr {
		argv = append(argv, "--dr")
		site = *r.DR
	}
	p := newProc(t, "regional serve "+id, argv...)
	p.readyURL = "http://" + f.Cfg.DialAddr(site) + "/healthz"
	p.start()
	return p
}

// promote runs `regional promote --region eu [--dr]` on the configuration
// the last process was started with and returns the generation it claimed.
func promote(t *testing.T, f *fedtest.Federation, dr bool) store.Generation {
	t.Helper()
	path := fedtest.ConfigFile(t, f.Cfg)
	args := []string{"promote", "--config", path, "--region", "eu"}
	if dr {
		args = append(args, "--dr")
	}
	out, err := runBin(filepath.Join(binaries(t), "regional"), "", args...)
	if err != nil {
		t.Fatal(err)
	}
	g, err := siteGeneration(f, dr)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%s holds generation %d", g.Holder, g.Number); !strings.Contains(out, want) {
		t.Fatalf("regional promote printed %q, want %q", out, want)
	}
	return g
}

// siteGeneration reads the fencing generation record of eu's primary or
// DR site database.
func siteGeneration(f *fedtest.Federation, dr bool) (store.Generation, error) {
	eu, _ := f.Cfg.Region("eu")
	st, _, err := node.OpenSiteStore(context.Background(), eu, dr, f.Cfg.DataDir)
	if err != nil {
		return store.Generation{}, err
	}
	defer st.Close()
	repl, ok := st.(store.Replication)
	if !ok {
		return store.Generation{}, fmt.Errorf("eu's store has no generation")
	}
	return repl.Generation(context.Background())
}

// postToken posts a token request with app's credentials.
func postToken(c *http.Client, base string, app region.RegisteredClient, form url.Values) (int, map[string]any) {
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
	resp, err := c.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	return resp.StatusCode, jsonDecode(resp)
}

func postRaw(t *testing.T, c *http.Client, u string, app region.RegisteredClient, form url.Values) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func get2(t *testing.T, c *http.Client, u string) *http.Response {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func get(t *testing.T, c *http.Client, u string) (int, string) {
	t.Helper()
	resp := get2(t, c, u)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
