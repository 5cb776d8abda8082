package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// hubNode is the federation hub of a region/node federation, assembled
// the way `hub serve` assembles it (fedtest runs hub/server from the
// federation config) on the config's hub.listen (127.0.0.10), started
// after the regions: cross-region sign-ins need a hub, the routed calls do
// not.
type hubNode struct {
	f *fedtest.Federation
}

// startHub runs the hub with cfg (its own copy of the config during a
// rolling change) until halted or the test ends.
func startHub(f *fedtest.Federation, cfg *config.Config) *hubNode {
	f.T.Helper()
	f.ConfigOf["hub"] = cfg
	f.StartHub()
	return &hubNode{f: f}
}

// reconcile fills the hub's table from every region's user listing (what
// `hub reconcile` does), so users created in a region's store resolve.
func (h *hubNode) reconcile() {
	rep, err := h.f.Hub.Broker.Reconcile(context.Background(), true)
	if err != nil || !rep.Complete {
		h.f.T.Fatalf("hub reconcile: %+v %v", rep, err)
	}
}

// signIn runs a whole sign-in of name at app through the global host as
// served by entry (through the hub when name lives elsewhere than app),
// redeems the code through entry, and returns userinfo through entry. It
// reports failures with t.Errorf, so it may run in its own goroutine.
func signIn(t testing.TB, f *fedtest.Federation, entry string, app region.RegisteredClient, name string) map[string]any {
	c, base := f.At(entry)
	m, err := signInVia(t, c, base, app, name)
	if err != nil {
		t.Errorf("%v", err)
		return nil
	}
	return m
}

// signInVia is signIn with client c whose global host is base.
func signInVia(t testing.TB, c *http.Client, base string, app region.RegisteredClient, name string) (map[string]any, error) {
	verifier := oauth2.GenerateVerifier()
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid profile offline_access"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	loc := oidctest.NewBrowser(t, c.Transport).Login(base+"/authorize?"+q.Encode(), fedtest.AppRedirect, name, "password-"+name)
	code := loc.Query().Get("code")
	if code == "" {
		return nil, fmt.Errorf("sign-in of %s at %s via %s: %s", name, app.ID, base, loc)
	}
	s, oe, tok := oidctest.PostForm(t, c, base+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code},
		"redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}}, app.ID, app.Secret)
	if s != http.StatusOK {
		return nil, fmt.Errorf("code of %s's sign-in at %s: %d %+v", name, app.ID, s, oe)
	}
	req, _ := http.NewRequest(http.MethodGet, base+"/userinfo", nil)
	req.Header.Set("Authorization", "Bearer "+tok["access_token"].(string))
	resp, err := c.Do(req)
	if err != nil {
		return nil, fmt.Errorf("userinfo: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("userinfo of %s's sign-in at %s: %d %s", name, app.ID, resp.StatusCode, body)
	}
	m := map[string]any{}
	_ = json.Unmarshal(body, &m)
	return m, nil
}
