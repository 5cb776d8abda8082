package region_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// TestLoginAuditRecords: failed logins, lockouts, MFA failures, consent
// decisions and successful logins each leave a JSON audit record naming
// the region and the user where known, and no record carries a password,
// TOTP code, CSRF token, login state or authorization code (issue 11 item
// 16, login part).
func TestLoginAuditRecords(t *testing.T) {
	n, logs := startLoggedNode(t, "eu", openSQLite(t))
	secret := addTOTPUser(t, n, "ava", "ava-secret-password")
	lock := addCheapUser(t, n, "lou", "lou-secret-password")
	third := n.addClient(region.ClientSpec{Name: "third", RedirectURIs: []string{redirectURI}})
	secrets := []string{"ava-secret-password", "lou-secret-password", "wrong-password-xyz", "unknown-user-password"}

	// A wrong password, then an unknown user.
	b := newBrowser(t)
	p := passwordPage(t, b, n, third.ID, "ava")
	secrets = append(secrets, p.Hidden.Get("csrf"))
	oidctest.ReadPage(b.Submit(p, url.Values{"username": {"ava"}, "password": {"wrong-password-xyz"}}))
	oidctest.ReadPage(b.Submit(p, url.Values{"username": {"nobody-here"}, "password": {"unknown-user-password"}}))

	// Password, a wrong code, the right code, consent.
	tp := oidctest.ReadPage(b.Submit(p, url.Values{"username": {"ava"}, "password": {"ava-secret-password"}}))
	wrong := codeAt(t, secret, time.Now().Add(5*time.Minute))
	right := codeAt(t, secret, time.Now())
	secrets = append(secrets, tp.Hidden.Get("state"), wrong, right)
	oidctest.ReadPage(b.Submit(tp, url.Values{"code": {wrong}}))
	cp := oidctest.ReadPage(b.Submit(tp, url.Values{"code": {right}}))
	if cp.Action != "/consent" {
		t.Fatalf("no consent page: %d", cp.Status)
	}
	secrets = append(secrets, cp.Hidden.Get("state"))
	resp := b.Follow(b.Submit(cp, url.Values{"decision": {"allow"}}), oidctest.StopAt(redirectURI))
	loc, err := resp.Location()
	resp.Body.Close()
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatal("no code after consent")
	}
	secrets = append(secrets, loc.Query().Get("code"))
	for _, c := range b.C.Jar.Cookies(mustURL(t, n.URL)) {
		secrets = append(secrets, c.Value)
	}

	// Ten failures for lou, then the limit.
	lb := newBrowser(t)
	lp := passwordPage(t, lb, n, third.ID, "lou")
	for range 10 {
		oidctest.ReadPage(lb.Submit(lp, url.Values{"username": {"lou"}, "password": {"wrong-password-xyz"}}))
	}
	if got := oidctest.ReadPage(lb.Submit(lp, url.Values{"username": {"lou"}, "password": {"lou-secret-password"}})); got.Status != http.StatusTooManyRequests {
		t.Fatalf("11th attempt: status %d", got.Status)
	}

	tests := []struct {
		event string
		want  map[string]any // attributes of one of the event's records
	}{
		{region.AuditLoginFailed, map[string]any{"reason": "bad_password", "user_id": userID(t, n, "ava")}},
		{region.AuditLoginFailed, map[string]any{"reason": "unknown_user"}},
		{region.AuditMFAFailed, map[string]any{"reason": "invalid_code", "user_id": userID(t, n, "ava")}},
		{region.AuditLoginSucceeded, map[string]any{"user_id": userID(t, n, "ava"), "amr": "pwd otp mfa", "client_id": third.ID}},
		{region.AuditConsent, map[string]any{"decision": "allow", "user_id": userID(t, n, "ava"), "client_id": third.ID}},
		{region.AuditLockout, map[string]any{"step": "password", "user_id": lock.ID, "client_ip": "127.0.0.1"}},
	}
	for _, tc := range tests {
		found := false
		for _, r := range logs.audit(t, tc.event) {
			match := r["region"] == "eu"
			for k, v := range tc.want {
				match = match && r[k] == v
			}
			found = found || match
		}
		if !found {
			t.Errorf("no %s audit record with %v in:\n%v", tc.event, tc.want, logs.audit(t, tc.event))
		}
	}
	if got := len(logs.audit(t, region.AuditLoginFailed)); got != 12 {
		t.Errorf("%d login.failed records, want 12 (2 for ava and the unknown name, 10 for lou)", got)
	}
	all := logs.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(all, s) {
			t.Errorf("the log contains a secret %q", s)
		}
	}
}

func userID(t *testing.T, n *testProvider, name string) string {
	t.Helper()
	u, err := n.Store.GetUserByUsername(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
