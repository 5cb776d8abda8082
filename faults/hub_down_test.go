package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
)

// binFederation is the hub topology of configs/regions.yaml (eu, us, ap
// and the hub, no DR sites) run by the real binaries, the hub's lookup
// table in a private Redis.
type binFederation struct {
	t     *testing.T
	bin   string
	cfg   fedtest.BinConfig
	nodes map[string]*proc // "eu", "us", "ap", "hub", "redis"
	apps  map[string]binClient
}

// privateRedis prepares a redis-server of the test's own on a free loopback
// port, with an append-only file fsynced on every write (so a kill loses
// nothing acknowledged).
func privateRedis(t *testing.T) (*proc, string) {
	bin := "redis-server"
	if _, err := os.Stat("/usr/bin/redis-server"); err == nil {
		bin = "/usr/bin/redis-server"
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	p := newProc(t, "redis-server", bin, "--port", port, "--bind", "127.0.0.1", "--dir", t.TempDir(), "--save", "",
		"--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no")
	p.readyFn = func() bool {
		c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: time.Second})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	}
	return p, addr
}

func startBinFederation(t *testing.T) *binFederation {
	f := &binFederation{t: t, bin: binaries(t), nodes: map[string]*proc{}, apps: map[string]binClient{}}
	rp, raddr := privateRedis(t)
	f.nodes["redis"] = rp
	rp.start()
	f.cfg = fedtest.WriteConfig(t, fedtest.BinOptions{Redis: "redis://" + raddr + "/0"})
	for _, id := range []string{"eu", "us", "ap"} {
		if _, err := f.regional(id, "", "migrate"); err != nil {
			t.Fatal(err)
		}
		out, err := f.regional(id, "", "clients", "add", "--redirect-uri", fedtest.AppRedirect, "--first-party", "--json")
		if err != nil {
			t.Fatal(err)
		}
		var c binClient
		if err := json.Unmarshal([]byte(out), &c); err != nil {
			t.Fatal(err)
		}
		f.apps[id] = c
		p := newProc(t, "regional serve "+id, filepath.Join(f.bin, "regional"), "serve", "--config", f.cfg.Path, "--region", id)
		p.readyURL = fmt.Sprintf("http://%s:%d/readyz", fedtest.SiteIP(id), f.cfg.Port)
		f.nodes[id] = p
	}
	h := newProc(t, "hub serve", filepath.Join(f.bin, "hub"), "serve", "--config", f.cfg.Path)
	h.readyURL = fmt.Sprintf("http://%s:%d/readyz", fedtest.SiteIP("hub"), f.cfg.Port)
	f.nodes["hub"] = h
	for _, n := range []string{"hub", "eu", "us", "ap"} {
		f.nodes[n].start()
	}
	return f
}

// regional runs `regional <args> --config … --region id`.
func (f *binFederation) regional(id, stdin string, args ...string) (string, error) {
	return runBin(filepath.Join(f.bin, "regional"), stdin, append(args, "--config", f.cfg.Path, "--region", id)...)
}

// addUser runs `regional users add` (password "pw-<name>") and fails the
// test unless it is acknowledged.
func (f *binFederation) addUser(id, name string) {
	if _, err := f.regional(id, "password-"+name+"\n", "users", "add", "--username", name, "--password-stdin"); err != nil {
		f.t.Fatal(err)
	}
}

// reconcile runs `hub reconcile` (a dry run) and returns its report.
func (f *binFederation) reconcile() (string, error) {
	return runBin(filepath.Join(f.bin, "hub"), "", "reconcile", "--config", f.cfg.Path)
}

// noDrift reports whether a reconcile report shows every region listed,
// nothing missing, moved, conflicting or stale.
func noDrift(report string) bool {
	lines := strings.Split(strings.TrimSpace(report), "\n")
	rows := 0
	for _, l := range lines[1:] {
		fs := strings.Fields(l)
		if len(fs) >= 6 && (fs[0] == "eu" || fs[0] == "us" || fs[0] == "ap") {
			rows++
			if fs[2] != "0" || fs[3] != "0" || fs[4] != "0" || fs[5] != "0" || len(fs) > 6 {
				return false
			}
		}
	}
	return rows == 3 && strings.Contains(report, "stale entries: 0 ")
}

// waitNoDrift polls `hub reconcile` until it reports no drift (bounded).
func (f *binFederation) waitNoDrift(step string) string {
	deadline := time.Now().Add(45 * time.Second)
	for {
		out, err := f.reconcile()
		if err == nil && noDrift(out) {
			return out
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("%s: hub reconcile still reports drift: %v\n%s", step, err, out)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// browser is a browser whose global host resolves to region entry.
func (f *binFederation) browser(entry string) (*oidctest.Browser, string) {
	res := oidctest.NewResolver(map[string]string{"id.localhost": fedtest.SiteIP(entry), "hub.id.localhost": fedtest.SiteIP("hub")})
	for _, id := range []string{"eu", "us", "ap"} {
		res.Set(id+".id.localhost", fedtest.SiteIP(id))
	}
	return oidctest.NewBrowser(f.t, res.Client().Transport), "http://id.localhost:" + strconv.Itoa(f.cfg.Port)
}

// login signs name in to region app's application through the global host
// as served by entry, and checks that the code redeems.
func (f *binFederation) login(entry, app, name string) {
	t := f.t
	t.Helper()
	b, base := f.browser(entry)
	c := f.apps[app]
	v := oauth2.GenerateVerifier()
	q := url.Values{"client_id": {c.ID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid"}, "state": {"s"},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(v)}, "code_challenge_method": {"S256"}}
	loc := b.Login(base+"/authorize?"+q.Encode(), fedtest.AppRedirect, name, "password-"+name)
	s, oe, _ := oidctest.PostForm(t, b.C, base+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")},
		"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}}, c.ID, c.Secret)
	if s != 200 {
		t.Fatalf("%s's code at %s: %d %+v", name, entry, s, oe)
	}
}

// crossRegionPage starts logins for app's application at entry, enters
// name and follows the browser (into the hub when followToHub) to the first
// page that is not a redirect, which it returns. For up to the RP's health
// TTL (2s) after the hub fails, the entry region may still send browsers to
// the hub it last saw healthy: without followToHub those attempts are
// counted and retried (bounded), and the count is returned.
func (f *binFederation) crossRegionPage(step, entry, app, name string, followToHub bool) (oidctest.Page, string, int) {
	t := f.t
	t.Helper()
	c := f.apps[app]
	for blind := 0; ; blind++ {
		b, base := f.browser(entry)
		q := url.Values{"client_id": {c.ID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid"}, "state": {"s"},
			"code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
		p := oidctest.ReadPage(b.Follow(b.Get(base+"/authorize?"+q.Encode()), oidctest.StopAt(fedtest.AppRedirect)))
		if p.Status != 200 || !strings.Contains(p.Body, `name="username"`) {
			t.Fatalf("%s: login page: %d", step, p.Status)
		}
		resp := b.Submit(p, url.Values{"username": {name}})
		if followToHub {
			resp = b.Follow(resp, oidctest.StopAt(fedtest.AppRedirect))
		}
		if loc, err := resp.Location(); err == nil && strings.HasPrefix(loc.Host, "hub.id.localhost") {
			resp.Body.Close()
			if blind > 100 {
				t.Fatalf("%s: %s still sends browsers to the dead hub", step, entry)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if loc, err := resp.Location(); err == nil && loc.Query().Get("code") != "" {
			t.Fatalf("%s: a code was issued: %s", step, loc)
		}
		return oidctest.ReadPage(resp), resp.Header.Get("Content-Type"), blind
	}
}

// pageMessage is the first paragraph of an error page.
func pageMessage(body string) string {
	_, after, ok := strings.Cut(body, "<h1>")
	if !ok {
		return ""
	}
	_, after, _ = strings.Cut(after, "<p>")
	msg, _, _ := strings.Cut(after, "</p>")
	return msg
}

// TestFaultHubAndRedisDown kills the hub, then the hub's Redis: resident
// logins continue, cross-region logins get the clear 503 page, users added
// meanwhile reach the hub's table after recovery (region outboxes), and
// `hub reconcile` reports no drift.
func TestFaultHubAndRedisDown(t *testing.T) {
	f := startBinFederation(t)
	f.addUser("us", "bob")
	f.waitNoDrift("start")
	f.login("eu", "eu", "bob") // cross-region: eu app, us user, through the hub

	// The hub dies.
	f.nodes["hub"].kill()
	f.login("us", "us", "bob") // resident: the hub is not on the path
	hubDown := time.Now()
	p, ctype, blind := f.crossRegionPage("hub down", "eu", "eu", "bob", false)
	if p.Status != http.StatusServiceUnavailable || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(p.Body, "temporarily unavailable") {
		t.Fatalf("cross-region login with the hub down: %d %s\n%s", p.Status, ctype, p.Body)
	}
	t.Logf("hub down: %d %q %s after the kill (%d logins sent to the dead hub before)", p.Status, pageMessage(p.Body),
		time.Since(hubDown).Round(time.Millisecond), blind)
	f.addUser("ap", "carol") // waits in ap's outbox
	f.nodes["hub"].start()
	f.waitNoDrift("hub back")
	f.login("eu", "eu", "carol")

	// The hub's Redis dies (the hub keeps running): its /readyz says so.
	f.nodes["redis"].kill()
	resp, err := http.Get(f.nodes["hub"].readyURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("hub /readyz with Redis down: %d, want 503", resp.StatusCode)
	}
	f.login("us", "us", "bob")
	redisDown := time.Now()
	// The hub itself is up: the browser reaches it, the hub cannot serve,
	// and the login ends on an HTML error page, without a code.
	p, ctype, _ = f.crossRegionPage("redis down", "eu", "eu", "bob", true)
	if p.Status != 503 || !strings.HasPrefix(ctype, "text/html") || !strings.Contains(p.Body, "temporarily unavailable") {
		t.Fatalf("cross-region login with Redis down: %d %s, want the 503 temporarily-unavailable page\n%s", p.Status, ctype, p.Body)
	}
	t.Logf("redis down: %d %q at %s, %s after the kill", p.Status, pageMessage(p.Body), p.URL.Host, time.Since(redisDown).Round(time.Millisecond))
	f.addUser("eu", "dave")
	f.nodes["redis"].start()
	out := f.waitNoDrift("redis back")
	f.login("us", "us", "dave")
	f.login("ap", "ap", "bob")
	t.Logf("after both outages, hub reconcile:\n%s", out)
}
