package faults

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
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
// ("Runbook: fail over, promote, fail back") with real PostgreSQL servers:
// eu runs on a private primary, eu's DR site on a synchronous streaming hot
// standby of it. Under refresh-token load the primary's database crashes
// and eu's node stops; the DR site, still a standby, serves reads
// (introspection of every acknowledged token, discovery) and refuses writes
// with 503 temporarily_unavailable + Retry-After (HTML on browser
// endpoints) while /readyz says "standby"; the operator promotes it
// (node.Promote, what `regional promote --dr` runs) and the same DR node
// takes writes without a restart (rotations, a new user signs in). The old
// primary's database and node return: the node is fenced (503 everywhere,
// /readyz "fenced"), so a refresh token rotated at the DR site is not
// accepted again there; nothing the DR site acknowledged is lost; and every
// rotated refresh token stays rotated.
func TestFaultDRFailoverFencing(t *testing.T) {
	start := time.Now()
	primary := testenv.PostgresPrimary(t)
	standby := primary.Standby(t)
	t.Logf("primary and synchronous standby up in %s", time.Since(start).Round(time.Millisecond))

	f := startFederation(t, fedtest.Options{DR: true, Databases: map[string]string{"eu": primary.URL(), "eu/dr": standby.URL()},
		RolePoll: 200 * time.Millisecond})
	if r := f.Nodes["eu/dr"].Role(); r != region.RoleStandby {
		t.Fatalf("eu's DR node on a standby database: role %s", r)
	}
	if r := f.Nodes["eu"].Role(); r != region.RolePrimary {
		t.Fatalf("eu's node: role %s", r)
	}
	app := f.Client("eu", region.GrantAuthorizationCode, region.GrantRefreshToken, region.GrantClientCredentials)
	f.User("eu", "dee")
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

	// Step 0: load on eu; the database crashes under it, then the node stops.
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
	f.Halt("eu")
	close(stop)
	wg.Wait()
	acked := 0
	for _, w := range workers {
		acked += len(w.access)
	}
	t.Logf("eu's database crashed and its node stopped after %d acknowledged rotations", rotations)

	// Step 1: the DR site serves reads on its standby and refuses writes.
	dr, drBase := f.At("eu/dr")
	drSite := "http://" + f.Cfg.Upstream(*f.Cfg.Regions[0].DR)
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

	// Step 2: promote the DR site's database; the running node switches.
	eu, _ := f.Cfg.Region("eu")
	g, err := node.Promote(context.Background(), eu, true, f.Cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if g.Holder != "eu-dr.id.localhost" || g.Number < 2 {
		t.Fatalf("generation after promotion: %+v", g)
	}
	fedtest.EventuallyWithin(t, 10*time.Second, "the DR node to become primary", func() bool { return f.Nodes["eu/dr"].Role() == region.RolePrimary })
	if s, body := get(t, dr, drSite+"/readyz"); s != http.StatusOK {
		t.Fatalf("DR /readyz after promotion: %d %s", s, body)
	}

	// Step 3: the DR site takes writes.
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

	// Step 4: the old primary comes back and finds itself fenced.
	primary.Start()
	f.Start("eu")
	if r := f.Nodes["eu"].Role(); r != region.RoleFenced {
		t.Fatalf("the returning old primary: role %s, want fenced", r)
	}
	euSite := "http://" + f.Cfg.Upstream(eu.Site)
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
	if gen, err := f.Nodes["eu"].Generation(context.Background()); err != nil || gen.FencedBy != g.Number || gen.FencedHolder != g.Holder {
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

	// Step 5: rebuild the old primary from the DR site: a new standby of
	// the DR database replaces eu's, and eu's node starts on it as a
	// standby that serves what the DR site accepted.
	f.Halt("eu")
	primary.Stop()
	rebuilt := standby.Standby(t)
	f.Cfg.Regions[0].Database = rebuilt.URL()
	f.Start("eu")
	if r := f.Nodes["eu"].Role(); r != region.RoleStandby {
		t.Fatalf("eu rebuilt from the DR site: role %s, want standby", r)
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

	// Step 6: fail back. Stop the DR site's nodes, promote eu, start the
	// DR nodes again: they find themselves fenced by eu's new generation.
	f.Halt("eu/dr")
	g3, err := node.Promote(context.Background(), eu, false, f.Cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if g3.Number != g.Number+1 || g3.Holder != "eu.id.localhost" {
		t.Fatalf("generation after failback: %+v (DR held %+v)", g3, g)
	}
	fedtest.EventuallyWithin(t, 10*time.Second, "eu's node to become primary", func() bool { return f.Nodes["eu"].Role() == region.RolePrimary })
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
	t.Logf("failed back: eu holds generation %d and took a DR-issued refresh token; DR fenced; total %s",
		g3.Number, time.Since(start).Round(time.Millisecond))
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
