package faults

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

// countingUpstream serves a region's real handler and counts what reaches
// it: code redemptions by code.
type countingUpstream struct {
	srv   *httptest.Server
	mu    sync.Mutex
	codes map[string]int
}

func newCountingUpstream(t *testing.T, h http.Handler) *countingUpstream {
	u := &countingUpstream{codes: map[string]int{}}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		form, _ := url.ParseQuery(string(body))
		u.mu.Lock()
		if form.Get("grant_type") == "authorization_code" {
			u.codes[form.Get("code")]++
		}
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *countingUpstream) redemptions(code string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.codes[code]
}

// linkRig is a us router whose only upstream, eu, is reached through two
// in-process TCP proxies (primary and DR address), each in front of eu's
// real handler behind a request counter.
type linkRig struct {
	f              *fedtest.Federation
	router         *routing.Router
	front          *httptest.Server
	primary, dr    *Proxy
	upP, upDR      *countingUpstream
	requestTimeout time.Duration
	cooldown       time.Duration
}

func newLinkRig(t *testing.T) *linkRig {
	f := startFederation(t, fedtest.Options{})
	rig := &linkRig{f: f, requestTimeout: 800 * time.Millisecond, cooldown: 400 * time.Millisecond}
	rig.upP = newCountingUpstream(t, f.Nodes["eu"].Router)
	rig.upDR = newCountingUpstream(t, f.Nodes["eu"].Router)
	var err error
	if rig.primary, err = NewProxy("127.0.0.1:0", rig.upP.srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rig.primary.Close() })
	if rig.dr, err = NewProxy("127.0.0.1:0", rig.upDR.srv.Listener.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rig.dr.Close() })
	eu, _ := f.Cfg.Region("eu")
	local := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "served locally", http.StatusTeapot) // an eu artifact must never be served by us
	})
	kr := f.Keyring("us")
	rig.router, err = routing.NewRouter(routing.RouterConfig{Local: "us",
		Peers:          []routing.Peer{{Region: "eu", URL: f.Cfg.Issuer(eu), Addr: rig.primary.Addr(), DRAddr: rig.dr.Addr()}},
		ConnectTimeout: 300 * time.Millisecond, RequestTimeout: rig.requestTimeout,
		BreakerThreshold: 3, BreakerCooldown: rig.cooldown, HopKey: kr.Key, HopKeys: setup.HopKeys(kr)}, f.Codec(), local, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		t.Fatal(err)
	}
	rig.front = httptest.NewServer(rig.router)
	t.Cleanup(rig.front.Close)
	return rig
}

// call posts form to path through the rig's router and returns the status,
// the decoded JSON body and the elapsed time.
func (rig *linkRig) call(t *testing.T, path string, app region.RegisteredClient, form url.Values) (int, map[string]any, time.Duration) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, rig.front.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Host = "id.localhost"
	req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&m)
	return resp.StatusCode, m, time.Since(start)
}

// waitIdle waits until a proxy has no open connections (bounded).
func waitIdle(t *testing.T, p *Proxy) {
	t.Helper()
	for i := 0; p.Open() > 0; i++ {
		if i > 500 {
			t.Fatalf("proxy still has %d open connections", p.Open())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFaultSlowLinkDeadline slows the link to eu beyond the router's
// request timeout: calls answer 503 temporarily_unavailable within the
// deadline, and a code redemption that may have reached eu is never sent
// again (not to eu, not to its DR site).
func TestFaultSlowLinkDeadline(t *testing.T) {
	rig := newLinkRig(t)
	f := rig.f
	app := f.Client("eu")
	f.User("eu", "lin")
	tok := f.Tokens("eu", app, "lin")
	at := tok["access_token"].(string)

	if s, m, _ := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}}); s != 200 || m["active"] != true {
		t.Fatalf("healthy link: %d %v", s, m)
	}

	// Responses slower than the deadline on the primary link; the DR link
	// is healthy.
	rig.primary.SetLatency(rig.requestTimeout + 700*time.Millisecond)
	rig.primary.Reset() // drop kept-alive connections so the next call dials the slow link

	// A code redemption: sent once, the deadline holds, never repeated.
	v := oauth2.GenerateVerifier()
	code := f.Login("eu", app, "lin", v)
	s, m, took := rig.call(t, "/oauth/token", app, url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}})
	if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Fatalf("code redemption over a slow link: %d %v", s, m)
	}
	if took > rig.requestTimeout+400*time.Millisecond {
		t.Fatalf("answered after %s; the request timeout is %s", took, rig.requestTimeout)
	}
	t.Logf("code redemption over a slow link: %d %v after %s (request timeout %s)", s, m["error"], took.Round(time.Millisecond), rig.requestTimeout)
	waitIdle(t, rig.primary)
	if n := rig.upP.redemptions(code) + rig.upDR.redemptions(code); n > 1 {
		t.Fatalf("the code reached eu %d times (primary %d, DR %d); a redemption must never be repeated",
			n, rig.upP.redemptions(code), rig.upDR.redemptions(code))
	}
	if n := rig.upDR.redemptions(code); n != 0 {
		t.Fatalf("the code was re-sent to the DR site %d times", n)
	}

	// Introspection is safe to repeat: the primary attempt gets half of the
	// deadline, so a primary that is slow (not dead) still leaves the DR
	// site time to answer within the deadline.
	s, m, took = rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}})
	t.Logf("introspection over a slow primary link: %d active=%v after %s", s, m["active"], took.Round(time.Millisecond))
	if s != http.StatusOK || m["active"] != true {
		t.Fatalf("introspection over the slow link: %d %v, want the DR site's answer", s, m)
	}
	if took > rig.requestTimeout {
		t.Fatalf("introspection answered after %s; the request timeout is %s", took, rig.requestTimeout)
	}
}

// TestFaultPartitionBreaker cuts both links to eu: calls fail closed with
// 503, the breakers open after the threshold (no connection is even
// attempted), and close again once the link heals and the cooldown passed.
func TestFaultPartitionBreaker(t *testing.T) {
	rig := newLinkRig(t)
	f := rig.f
	app := f.Client("eu")
	f.User("eu", "kai")
	tok := f.Tokens("eu", app, "kai")
	at := tok["access_token"].(string)
	if s, m, _ := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}}); s != 200 || m["active"] != true {
		t.Fatalf("healthy link: %d %v", s, m)
	}

	// A cut primary (connections accepted, then closed): a code redemption
	// is not retried at the DR site, because eu might have received it.
	rig.primary.Cut()
	v := oauth2.GenerateVerifier()
	code := f.Login("eu", app, "kai", v)
	redeem := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}}
	if s, m, _ := rig.call(t, "/oauth/token", app, redeem); s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Fatalf("code redemption over a cut link: %d %v", s, m)
	}
	if n := rig.upDR.redemptions(code) + rig.upP.redemptions(code); n != 0 {
		t.Fatalf("the code reached eu %d times over a cut link", n)
	}
	// Introspection over the cut primary is answered by the DR site.
	if s, m, _ := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}}); s != 200 || m["active"] != true {
		t.Fatalf("introspection with the primary cut: %d %v", s, m)
	}

	// Both links cut: every call fails closed; after the threshold the
	// breakers open and no connection is attempted.
	rig.dr.Cut()
	for i := 0; i < 3; i++ {
		if s, m, _ := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}}); s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" || m["active"] != nil {
			t.Fatalf("call %d with eu partitioned: %d %v", i, s, m)
		}
	}
	before := rig.primary.Accepted() + rig.dr.Accepted()
	s, m, took := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}})
	if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Fatalf("call with the breakers open: %d %v", s, m)
	}
	if after := rig.primary.Accepted() + rig.dr.Accepted(); after != before {
		t.Fatalf("with the breakers open the router still connected %d times", after-before)
	}
	t.Logf("breakers open: 503 in %s with no connection attempt", took.Round(time.Microsecond))

	// Heal: once the cooldown passed, one trial call closes the breaker.
	rig.primary.Heal()
	rig.dr.Heal()
	healed := time.Now()
	for i := 0; ; i++ {
		s, m, _ := rig.call(t, "/oauth/introspect", app, url.Values{"token": {at}})
		if s == 200 {
			if m["active"] != true {
				t.Fatalf("after healing: %v", m)
			}
			break
		}
		if s != http.StatusServiceUnavailable || i > 200 {
			t.Fatalf("after healing, call %d: %d %v", i, s, m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("breaker closed %s after the link healed (cooldown %s)", time.Since(healed).Round(time.Millisecond), rig.cooldown)
	// The redemption that failed can now be made exactly once.
	if s, m, _ := rig.call(t, "/oauth/token", app, redeem); s != 200 {
		t.Fatalf("redeeming after recovery: %d %v", s, m)
	}
	if n := rig.upP.redemptions(code) + rig.upDR.redemptions(code); n != 1 {
		t.Fatalf("the code reached eu %d times, want 1", n)
	}
}
