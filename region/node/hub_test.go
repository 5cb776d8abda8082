package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/hub/server"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// hubNode is the federation hub of a region/node federation, assembled
// the way `hub serve` assembles it (hub/server from the federation
// config), on the config's hub.listen (127.0.0.10). It sits next to the
// federation harness without changing it: cross-region sign-ins need a
// hub, the routed calls do not.
type hubNode struct {
	t    testing.TB
	f    *federation
	h    *server.Hub
	stop context.CancelFunc
	done chan struct{}
}

// startHub runs the hub with cfg (its own copy of the config during a
// rolling change) until halted or the test ends.
func startHub(f *federation, cfg *config.Config) *hubNode {
	t := f.t
	h, err := server.New(context.Background(), cfg, server.Options{DataDir: cfg.DataDir}, f.telemetry("hub"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Hub.Listen)
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hn := &hubNode{t: t, f: f, h: h, stop: cancel, done: make(chan struct{})}
	go func() { _ = h.ServeListeners(ctx, ln, nil); h.Close(); close(hn.done) }()
	t.Cleanup(hn.halt)
	return hn
}

// halt stops the hub and waits until its listener and stores are closed.
func (h *hubNode) halt() {
	h.stop()
	<-h.done
}

// reconcile fills the hub's table from every region's user listing (what
// `hub reconcile` does), so users created in a region's store resolve.
func (h *hubNode) reconcile() {
	rep, err := h.h.Broker.Reconcile(context.Background(), true)
	if err != nil || !rep.Complete {
		h.t.Fatalf("hub reconcile: %+v %v", rep, err)
	}
}

// viaHub is f.at(entry) whose resolver also knows the hub's host.
func (f *federation) viaHub(entry string) (*http.Client, string) {
	res := oidctest.NewResolver(map[string]string{"id.localhost": regionIPs[entry], "hub.id.localhost": "127.0.0.10"})
	for k, v := range regionIPs {
		res.Set(k+".id.localhost", v)
	}
	return res.Client(), fmt.Sprintf("http://id.localhost:%d", f.port)
}

// signIn runs a whole sign-in of name at app through the global host as
// served by entry (through the hub when name lives elsewhere than app),
// redeems the code through entry, and returns userinfo through entry. It
// reports failures with t.Errorf, so it may run in its own goroutine.
func (f *federation) signIn(t testing.TB, entry string, app region.RegisteredClient, name string) map[string]any {
	c, base := f.viaHub(entry)
	verifier := oauth2.GenerateVerifier()
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {appRedirect}, "scope": {"openid profile offline_access"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	loc := oidctest.NewBrowser(t, c.Transport).Login(base+"/authorize?"+q.Encode(), appRedirect, name, "password-"+name)
	code := loc.Query().Get("code")
	if code == "" {
		t.Errorf("sign-in of %s at %s via %s: %s", name, app.ID, entry, loc)
		return nil
	}
	s, oe, tok := oidctest.PostForm(t, c, base+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {appRedirect}, "code_verifier": {verifier}}, app.ID, app.Secret)
	if s != http.StatusOK {
		t.Errorf("code of %s's sign-in at %s via %s: %d %+v", name, app.ID, entry, s, oe)
		return nil
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	resp, err := c.Do(req)
	if err != nil {
		t.Errorf("userinfo: %v", err)
		return nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Errorf("userinfo of %s's sign-in at %s via %s: %d %s", name, app.ID, entry, resp.StatusCode, body)
		return nil
	}
	m := map[string]any{}
	_ = json.Unmarshal(body, &m)
	return m
}
