package hub_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/routing"
)

// lockedBuffer collects a log written from several goroutines.
type lockedBuffer struct{ fedtest.LogBuffer }

// audits returns the audit records of event in the log.
func (l *lockedBuffer) audits(event string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(l.String(), "\n") {
		m := map[string]any{}
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "audit" && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// conflictCount is the hub's meridian.hub.table.conflicts.
func (f *fed) conflictCount() int64 {
	f.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := f.metrics.Collect(f.ctx, &rm); err != nil {
		f.t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "meridian.hub.table.conflicts" {
				for _, dp := range sum.DataPoints {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// postToken posts a token request to base's token endpoint and returns the
// status and the OAuth error code.
func (f *fed) postToken(t *testing.T, base string, form url.Values) (int, string) {
	t.Helper()
	resp, err := f.client.PostForm(base+"/oauth/token", form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(raw, &e)
	return resp.StatusCode, e.Error
}

// issueCode signs username in at base for clientID (a federation client) with
// a fresh PKCE verifier and returns the authorization code sent to
// redirect, stopping before the browser delivers it (at stopPath).
func (f *fed) issueCode(t *testing.T, base, clientID, redirect, stopPath, username string) (string, string) {
	t.Helper()
	verifier := oauth2.GenerateVerifier()
	q := url.Values{"response_type": {"code"}, "client_id": {clientID}, "redirect_uri": {redirect}, "scope": {"openid"},
		"state": {"s-" + oauth2.GenerateVerifier()[:16]}, "nonce": {"n-" + oauth2.GenerateVerifier()[:16]},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}
	b := f.newBrowser()
	b.stopAt = func(u *url.URL) bool { return u.Path == stopPath }
	loc, p := b.login(base+"/authorize?"+q.Encode(), username, bobPassword)
	code := loc.Query().Get("code")
	if loc.Path != stopPath || code == "" {
		t.Fatalf("no code for %s: %s (%d %s)", clientID, loc, p.status, p.body)
	}
	return code, verifier
}

// TestCompromisedRegionCannotActAsAnotherParty plays an attacker holding
// every secret of region eu: its federation key, the routing key (every
// node has it: tags, client ids), its cookie key and k_hub. With them the
// attacker still cannot act as us, ap or the hub in any call.
func TestCompromisedRegionCannotActAsAnotherParty(t *testing.T) {
	logs := &lockedBuffer{}
	f := newFed(t, options{topology: federation.TopologyHub, hubLog: slog.New(slog.NewJSONHandler(logs, nil))})
	euKey := f.fedKeys["eu"] // the stolen key; f.codec and f.hasher are the stolen routing key and k_hub
	f.addUser("us", "grace", bobPassword, bobClaims())
	f.addUser("ap", "ken", bobPassword, bobClaims())
	f.waitResolves("grace", "us")
	f.waitResolves("ken", "ap")
	grace, _ := f.hasher.Key("grace")

	t.Run("forged hop to us claiming to be ap", func(t *testing.T) {
		get := func(hop string) int {
			req, _ := http.NewRequest(http.MethodGet, f.regionIssuer("us")+"/internal/keys", nil)
			if hop != "" {
				req.Header.Set(routing.HopHeader, hop)
			}
			req.Header.Set(routing.HopFromHeader, "ap") // a client-supplied value is always stripped
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.StatusCode
		}
		now := time.Now()
		if st := get(routing.SignHop(f.fedKeys["ap"], "ap", "us", "GET", "/internal/keys", now)); st != http.StatusOK {
			t.Fatalf("control: ap's own hop got %d", st)
		}
		for name, hop := range map[string]string{
			"no hop, hop-from header only": "",
			"signed with eu's key as ap":   routing.SignHop(euKey, "ap", "us", "GET", "/internal/keys", now),
			"signed with eu's key as hub":  routing.SignHop(euKey, "hub", "us", "GET", "/internal/keys", now),
			"ap's hop for another path":    routing.SignHop(f.fedKeys["ap"], "ap", "us", "POST", "/internal/end-session", now),
		} {
			if st := get(hop); st != http.StatusNotFound {
				t.Errorf("%s: status %d, want 404 (not served as an internal call)", name, st)
			}
		}
	})

	t.Run("eu as the hub's client at us", func(t *testing.T) {
		id, _ := federation.HubClientID(f.codec, "us")
		redirect := federation.HubRedirectURI(f.hubURL(), "us")
		code, verifier := f.issueCode(t, f.regionIssuer("us"), id, redirect, "/callback/us", "grace")
		form := func(signer string) url.Values {
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
				"code_verifier": {verifier}, "client_id": {id}}
			if signer != "" {
				a, err := federation.SignAssertion(f.fedKeys[signer], id, []string{f.regionIssuer("us")}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				v.Set("client_assertion_type", federation.ClientAssertionType)
				v.Set("client_assertion", a)
			}
			return v
		}
		// Refused with an OAuth error (the provider library answers a bad
		// assertion invalid_grant or invalid_client), and the code is left
		// for its rightful client.
		if st, e := f.postToken(t, f.regionIssuer("us"), form("eu")); st == http.StatusOK || (e != "invalid_client" && e != "invalid_grant") {
			t.Errorf("eu-signed assertion: %d %q", st, e)
		}
		v := form("") // the secret the routing key used to derive for this client
		v.Set("client_secret", f.codec.DeriveSecret("hub@us"))
		if st, e := f.postToken(t, f.regionIssuer("us"), v); st != http.StatusUnauthorized || e != "invalid_client" {
			t.Errorf("routing-key-derived secret: %d %q", st, e)
		}
		// Control: the same code, redeemed by the hub's own key.
		if st, e := f.postToken(t, f.regionIssuer("us"), form(federation.PartyHub)); st != http.StatusOK {
			t.Fatalf("control: the hub's own assertion: %d %q", st, e)
		}
		// The user-keys listing, with an eu-signed hub assertion.
		authz, _ := federation.BearerAssertion(euKey, id, f.regionIssuer("us")+federation.UserKeysPath)
		req, _ := http.NewRequest(http.MethodGet, f.regionIssuer("us")+federation.UserKeysPath, nil)
		req.Header.Set("Authorization", authz)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("user keys with an eu-signed hub assertion: %d", resp.StatusCode)
		}
	})

	t.Run("eu as us's client at the hub", func(t *testing.T) {
		id := federation.RegionClientID("us")
		redirect := f.regionIssuer("us") + federation.CallbackPath
		// The hub takes a code on its first redemption attempt, whatever
		// the client authentication, so each attempt gets its own code.
		form := func(signer string) url.Values {
			code, verifier := f.issueCode(t, f.hubURL(), id, redirect, federation.CallbackPath, "ken") // a user the hub brokers for us: resident in ap
			v := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
				"code_verifier": {verifier}, "client_id": {id}}
			if signer != "" {
				a, err := federation.SignAssertion(f.fedKeys[signer], id, []string{f.hubURL()}, time.Now())
				if err != nil {
					t.Fatal(err)
				}
				v.Set("client_assertion_type", federation.ClientAssertionType)
				v.Set("client_assertion", a)
			}
			return v
		}
		if st, e := f.postToken(t, f.hubURL(), form("eu")); st == http.StatusOK || (e != "invalid_client" && e != "invalid_grant") {
			t.Errorf("eu-signed assertion as us: %d %q", st, e)
		}
		v := form("")
		v.Set("client_secret", f.codec.DeriveSecret("region@hub|us"))
		if st, e := f.postToken(t, f.hubURL(), v); st == http.StatusOK || (e != "invalid_client" && e != "invalid_grant") {
			t.Errorf("routing-key-derived secret: %d %q", st, e)
		}
		// Control: a code redeemed with us's own key.
		if st, e := f.postToken(t, f.hubURL(), form("us")); st != http.StatusOK {
			t.Fatalf("control: us's own assertion: %d %q", st, e)
		}
	})

	t.Run("eu rewrites us's table entries", func(t *testing.T) {
		body := func(op string) []byte {
			b, _ := json.Marshal(federation.ChangesRequest{Changes: []federation.KeyChange{{Op: op, Key: grace.String()}}})
			return b
		}
		// As us, with eu's key: refused outright.
		for _, op := range []string{"delete", "put"} {
			if st, m, _ := postChanges(t, f, regionAuth(t, f, "us", "eu"), body(op)); st != http.StatusUnauthorized || m["error"] != "invalid_client" {
				t.Errorf("%s as us with eu's key: %d %v", op, st, m)
			}
		}
		// As eu: the delete of us's entry is refused and audited; the
		// re-add is held as a conflict, never written.
		if st, m, _ := postChanges(t, f, regionAuth(t, f, "eu", "eu"), body("delete")); st != http.StatusOK || m["ignored"] != 1.0 {
			t.Errorf("eu deletes us's entry: %d %v", st, m)
		}
		if st, m, _ := postChanges(t, f, regionAuth(t, f, "eu", "eu"), body("put")); st != http.StatusOK || m["conflicts"] != 1.0 {
			t.Errorf("eu claims us's user: %d %v", st, m)
		}
		if got, err := f.table.Resolve(f.ctx, "grace"); got != "us" || err != nil {
			t.Fatalf("grace now resolves to %q (%v), want us", got, err)
		}
		if a := logs.audits(hub.AuditTableRefused); len(a) != 1 || a[0]["region"] != "eu" || a[0]["holder"] != "us" || a[0]["key"] != grace.String() {
			t.Errorf("refused delete audit: %v", a)
		}
		if a := logs.audits(hub.AuditTableConflict); len(a) != 1 || a[0]["region"] != "eu" || a[0]["holder"] != "us" {
			t.Errorf("conflict audit: %v", a)
		}
		cs, err := f.broker.Conflicts(f.ctx)
		if err != nil || len(cs) != 1 || cs[0].Key != grace || cs[0].Holder != "us" || cs[0].Claimant != "eu" {
			t.Fatalf("conflicts: %+v %v", cs, err)
		}
		if n := f.conflictCount(); n != 1 {
			t.Errorf("conflict metric %d, want 1", n)
		}
		// The operator decides: us keeps its user.
		if err := f.broker.ResolveConflict(f.ctx, grace, "us"); err != nil {
			t.Fatal(err)
		}
		if cs, _ := f.broker.Conflicts(f.ctx); len(cs) != 0 {
			t.Fatalf("conflict still held: %+v", cs)
		}
		if got, _ := f.table.Resolve(f.ctx, "grace"); got != "us" {
			t.Fatalf("after resolution grace resolves to %q", got)
		}
		if len(logs.audits(hub.AuditConflictResolved)) != 1 {
			t.Error("resolution not audited")
		}
	})
}

// TestDoubleClaimHeldAsConflict: one username created in two regions is
// held as a conflict: the first claim stays in the table, the second is
// never written (not last-writer-wins), whichever order the pushers run in,
// until an operator resolves it.
func TestDoubleClaimHeldAsConflict(t *testing.T) {
	logs := &lockedBuffer{}
	f := newFed(t, options{topology: federation.TopologyHub, hubLog: slog.New(slog.NewJSONHandler(logs, nil))})
	f.addUser("us", "ada", bobPassword, bobClaims())
	f.waitResolves("ada", "us")
	f.addUser("ap", "ada", bobPassword, bobClaims())
	k, _ := f.hasher.Key("ada")
	fedtest.Eventually(t, "the double claim held", func() bool {
		cs, err := f.broker.Conflicts(f.ctx)
		return err == nil && len(cs) == 1 && cs[0].Key == k && cs[0].Holder == "us" && cs[0].Claimant == "ap"
	})
	if got, _ := f.table.Resolve(f.ctx, "ada"); got != "us" {
		t.Fatalf("ada resolves to %q, want us (the first claim)", got)
	}
	if a := logs.audits(hub.AuditTableConflict); len(a) == 0 || a[0]["region"] != "ap" || a[0]["holder"] != "us" {
		t.Fatalf("conflict audit: %v", a)
	}
	if f.conflictCount() < 1 {
		t.Fatal("conflict not counted")
	}
	if err := f.broker.ResolveConflict(f.ctx, k, "eu"); err == nil {
		t.Fatal("resolved to a region that claims nothing")
	}
	if err := f.broker.ResolveConflict(f.ctx, k, "ap"); err != nil {
		t.Fatal(err)
	}
	if got, _ := f.table.Resolve(f.ctx, "ada"); got != "ap" {
		t.Fatalf("after resolution ada resolves to %q, want ap", got)
	}
}
