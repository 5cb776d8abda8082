package node_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/telemetry"
)

// mgmtObserved is a region's node restarted with real telemetry: its JSON log
// (audit events) and its admin listener (/metrics).
type mgmtObserved struct {
	n     *node.Node
	log   *fedtest.LogBuffer
	admin string
}

// observe replaces the federation's node for region id by one whose log
// and metrics the test reads, on the same listener address and store.
func mgmtObserve(t *testing.T, f *fedtest.Federation, id string) *mgmtObserved {
	t.Helper()
	f.Halt(id)
	o := &mgmtObserved{log: &fedtest.LogBuffer{}}
	ctx := context.Background()
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "test", Instance: id, LogLevel: "info"}, o.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	o.n, err = node.New(ctx, f.Cfg, id, node.Options{}, tel)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := f.Cfg.Region(id)
	pub, err := net.Listen("tcp", r.Listen)
	if err != nil {
		t.Fatal(err)
	}
	adm := listen(t)
	o.admin = "http://" + adm.Addr().String()
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = o.n.ServeListeners(sctx, pub, adm); o.n.Close(); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	f.Nodes[id] = o.n
	return o
}

// audits returns the audit records of event in the node's log.
func (o *mgmtObserved) audits(event string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(o.log.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == "audit" && m["event"] == event {
			out = append(out, m)
		}
	}
	return out
}

// call sends a JSON request to base+path with an optional bearer token and
// returns the status, the WWW-Authenticate header and the decoded body.
func mgmtCall(t *testing.T, c *http.Client, method, u, bearer string, body any) (int, string, map[string]any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, u, rd)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	if resp.StatusCode >= 500 {
		t.Fatalf("%s %s: %d %s", method, u, resp.StatusCode, raw)
	}
	if resp.Header.Get("Cache-Control") != "no-store" && resp.StatusCode != http.StatusNoContent {
		t.Errorf("%s %s: Cache-Control %q", method, u, resp.Header.Get("Cache-Control"))
	}
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), m
}

// mgmtSecretWorks reports whether id/secret gets a client_credentials token
// through region entry's global host.
func mgmtSecretWorks(t *testing.T, f *fedtest.Federation, entry, id, secret string) bool {
	t.Helper()
	c, base := f.At(entry)
	s, oe, _ := oidctest.PostForm(t, c, base+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, id, secret)
	if s != 200 && (s != 401 || oe.Error != "invalid_client") {
		t.Fatalf("client_credentials for %s: %d %+v", id, s, oe)
	}
	return s == 200
}

// mgmtToken returns a client_credentials access token for id/secret with scope.
func mgmtToken(t *testing.T, f *fedtest.Federation, entry, id, secret, scope string) string {
	t.Helper()
	c, base := f.At(entry)
	s, oe, m := oidctest.PostForm(t, c, base+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "scope": {scope}}, id, secret)
	if s != 200 {
		t.Fatalf("client_credentials token: %d %+v", s, oe)
	}
	return m["access_token"].(string)
}

func mgmtOperatorClient(t *testing.T, f *fedtest.Federation, id string, scopes ...string) region.RegisteredClient {
	t.Helper()
	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := region.CreateClient(context.Background(), f.Nodes[id].Store, codec, id, region.ClientSpec{
		Name: "ops-" + id, GrantTypes: []string{region.GrantClientCredentials}, Scopes: scopes})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// mgmtWithRegistration opens dynamic registration in eu with an initial access token.
func mgmtWithRegistration(t *testing.T, token string) fedtest.Options {
	return fedtest.Options{Configure: func(c *config.Config) {
		path := filepath.Join(c.DataDir, "eu-registration-token")
		if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		for i := range c.Regions {
			if c.Regions[i].ID == "eu" {
				c.Regions[i].RegistrationTokenFile = path
			}
		}
	}}
}

// TestClientConfigurationEndpoint (RFC 7592) over HTTP against three real
// nodes: a dynamically registered eu client reads, updates and deletes
// itself with its registration access token through any region's host;
// every wrong, missing or foreign token is 401 invalid_token, an update
// may not change the client_id, choose a secret or register a forbidden
// redirect URI, the token is stored as a digest and rotated on update.
func TestClientConfigurationEndpoint(t *testing.T) {
	const initial = "initial-access-token-for-eu-0123456789"
	f := fedtest.Start(t, mgmtWithRegistration(t, initial))
	o := mgmtObserve(t, f, "eu")
	c, _ := f.At("us")
	regHost := fmt.Sprintf("http://eu.id.localhost:%d", f.Port)

	register := func(name string) map[string]any {
		t.Helper()
		s, _, m := mgmtCall(t, c, "POST", regHost+"/register", initial, map[string]any{
			"client_name": name, "redirect_uris": []string{"https://app.example/cb"},
			"grant_types": []string{"authorization_code", "client_credentials"}})
		if s != 201 || m["registration_access_token"] == nil || m["client_secret"] == nil {
			t.Fatalf("register: %d %v", s, m)
		}
		return m
	}
	a, b := register("A"), register("B")
	aID, aTok, aSecret := a["client_id"].(string), a["registration_access_token"].(string), a["client_secret"].(string)
	bTok := b["registration_access_token"].(string)
	if want := regHost + "/register/" + aID; a["registration_client_uri"] != want {
		t.Fatalf("registration_client_uri %v, want %s", a["registration_client_uri"], want)
	}
	stored, err := o.n.Store.GetClient(context.Background(), aID)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256([]byte(aTok)); !bytes.Equal(stored.RegistrationTokenHash, sum[:]) {
		t.Fatal("the registration access token is not stored as its SHA-256 digest")
	}

	// Reads through the global host as served by us and ap reach eu.
	for _, entry := range []string{"us", "ap", "eu"} {
		hc, base := f.At(entry)
		s, _, m := mgmtCall(t, hc, "GET", base+"/register/"+aID, aTok, nil)
		if s != 200 || m["client_id"] != aID || m["registration_access_token"] != aTok || m["client_name"] != "A" || m["client_secret"] != nil {
			t.Fatalf("read via %s: %d %v", entry, s, m)
		}
	}

	// The attacker: no token, a wrong one, another client's, the initial
	// access token, a token on an operator-made client, a forged client id.
	ops := f.Client("eu")
	_, base := f.At("ap")
	for name, tc := range map[string]struct{ id, tok string }{
		"no token":               {aID, ""},
		"wrong token":            {aID, "not-the-token"},
		"another client's token": {aID, bTok},
		"initial access token":   {aID, initial},
		"operator-made client":   {ops.ID, aTok},
		"forged client id":       {aID[:len(aID)-2] + "xx", aTok},
	} {
		for _, method := range []string{"GET", "PUT", "DELETE"} {
			s, www, m := mgmtCall(t, c, method, base+"/register/"+tc.id, tc.tok, map[string]any{"client_id": tc.id, "redirect_uris": []string{"https://evil.example/cb"}})
			if s != 401 || m["error"] != "invalid_token" || !strings.Contains(www, `error="invalid_token"`) {
				t.Fatalf("%s %s: %d %v %q", name, method, s, m, www)
			}
		}
	}

	// Bad updates: another client_id, none, a chosen secret, forbidden
	// redirect schemes.
	valid := func() map[string]any {
		return map[string]any{"client_id": aID, "client_name": "A2", "redirect_uris": []string{"https://app.example/new"},
			"grant_types": []string{"authorization_code", "client_credentials"}}
	}
	for name, tc := range map[string]struct {
		mutate func(map[string]any)
		code   string
	}{
		"other client_id":      {func(m map[string]any) { m["client_id"] = b["client_id"] }, "invalid_client_metadata"},
		"no client_id":         {func(m map[string]any) { delete(m, "client_id") }, "invalid_client_metadata"},
		"chosen secret":        {func(m map[string]any) { m["client_secret"] = "my-own-secret" }, "invalid_client_metadata"},
		"javascript: redirect": {func(m map[string]any) { m["redirect_uris"] = []string{"javascript:alert(1)"} }, "invalid_redirect_uri"},
		"plain http redirect":  {func(m map[string]any) { m["redirect_uris"] = []string{"http://evil.example/cb"} }, "invalid_redirect_uri"},
		"token response type":  {func(m map[string]any) { m["response_types"] = []string{"token"} }, "invalid_client_metadata"},
	} {
		body := valid()
		tc.mutate(body)
		if s, _, m := mgmtCall(t, c, "PUT", base+"/register/"+aID, aTok, body); s != 400 || m["error"] != tc.code {
			t.Fatalf("update with %s: %d %v", name, s, m)
		}
	}

	// A valid update (naming the current secret is allowed) rotates the
	// registration access token; the client's secret keeps working.
	body := valid()
	body["client_secret"] = aSecret
	s, _, m := mgmtCall(t, c, "PUT", base+"/register/"+aID, aTok, body)
	newTok, _ := m["registration_access_token"].(string)
	if s != 200 || newTok == "" || newTok == aTok || m["client_name"] != "A2" || m["client_secret"] != nil {
		t.Fatalf("update: %d %v", s, m)
	}
	if s, _, _ := mgmtCall(t, c, "GET", base+"/register/"+aID, aTok, nil); s != 401 {
		t.Fatalf("the replaced registration token still reads: %d", s)
	}
	if s, _, m := mgmtCall(t, c, "GET", base+"/register/"+aID, newTok, nil); s != 200 || fmt.Sprint(m["redirect_uris"]) != "[https://app.example/new]" {
		t.Fatalf("read after update: %d %v", s, m)
	}
	if !mgmtSecretWorks(t, f, "us", aID, aSecret) {
		t.Fatal("the client's secret stopped working after a metadata update")
	}

	// Delete: the client and its token are gone.
	if s, _, _ := mgmtCall(t, c, "DELETE", base+"/register/"+aID, newTok, nil); s != 204 {
		t.Fatalf("delete: %d", s)
	}
	if s, _, _ := mgmtCall(t, c, "GET", base+"/register/"+aID, newTok, nil); s != 401 {
		t.Fatalf("read after delete: %d", s)
	}
	if mgmtSecretWorks(t, f, "us", aID, aSecret) {
		t.Fatal("a deleted client still gets tokens")
	}

	ops2 := map[string]int{}
	for _, e := range o.audits(region.AuditClientConfig) {
		ops2[fmt.Sprint(e["operation"], "/", e["outcome"])]++
		if strings.Contains(fmt.Sprint(e), aTok) || strings.Contains(fmt.Sprint(e), newTok) {
			t.Fatal("an audit record carries a registration access token")
		}
	}
	for _, want := range []string{"read/ok", "read/denied", "update/ok", "update/denied", "delete/ok", "delete/denied"} {
		if ops2[want] == 0 {
			t.Errorf("no %s client.configuration audit event (have %v)", want, ops2)
		}
	}
	scrape := mgmtScrape(t, o.admin)
	for _, want := range [][]string{
		{"meridian_client_management_requests_total{", `api="rfc7592"`, `operation="read"`, `result="unauthenticated"`},
		{"meridian_client_management_requests_total{", `api="rfc7592"`, `operation="update"`, `result="ok"`},
		{"meridian_audit_events_total{", `event="client.configuration"`},
	} {
		if !mgmtHasSeries(scrape, want...) {
			t.Errorf("/metrics lacks %v", want)
		}
	}
}

// mgmtHasSeries reports whether the scrape has a series named by the first
// part with every label of the rest.
func mgmtHasSeries(scrape string, parts ...string) bool {
	for _, l := range strings.Split(scrape, "\n") {
		if !strings.HasPrefix(l, parts[0]) {
			continue
		}
		all := true
		for _, p := range parts[1:] {
			all = all && strings.Contains(l, p)
		}
		if all {
			return true
		}
	}
	return false
}

func mgmtScrape(t *testing.T, admin string) string {
	t.Helper()
	resp, err := http.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestAdminClientsAPI: the admin API over HTTP against three real nodes.
// An eu admin client (client_credentials, meridian:admin) manages eu's
// clients through any region's host: list, create, get, update, rotate
// the secret (the old one works during the overlap and not after, the new
// one works), delete. A token without the scope is 403
// insufficient_scope, another region's admin token is 401 invalid_token
// at eu, every change is an admin.change audit event and counted.
func TestAdminClientsAPI(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{})
	o := mgmtObserve(t, f, "eu")
	admin := mgmtOperatorClient(t, f, "eu", region.ScopeAdmin)
	tok := mgmtToken(t, f, "us", admin.ID, admin.Secret, region.ScopeAdmin) // issued by eu, fetched through us

	c, usBase := f.At("us")
	_, apBase := f.At("ap")

	// Create through ap: the collection is routed by the token's region.
	s, _, m := mgmtCall(t, c, "POST", apBase+"/admin/clients", tok, map[string]any{
		"client_name": "Backend", "grant_types": []string{"client_credentials"}, "scope": "meridian:introspect"})
	if s != 201 || m["client_secret"] == nil || m["scope"] != "meridian:introspect" {
		t.Fatalf("create: %d %v", s, m)
	}
	id, first := m["client_id"].(string), m["client_secret"].(string)
	if !strings.Contains(id, ".eu.") {
		t.Fatalf("created client id %s is not eu's", id)
	}
	if !mgmtSecretWorks(t, f, "ap", id, first) {
		t.Fatal("the created client's secret does not work")
	}

	s, _, m = mgmtCall(t, c, "GET", usBase+"/admin/clients", tok, nil)
	if s != 200 || m["region"] != "eu" || !strings.Contains(fmt.Sprint(m["clients"]), id) || strings.Contains(fmt.Sprint(m["clients"]), "client_secret:") {
		t.Fatalf("list via us: %d %v", s, m)
	}
	if s, _, m = mgmtCall(t, c, "GET", apBase+"/admin/clients/"+id, tok, nil); s != 200 || m["client_name"] != "Backend" {
		t.Fatalf("get via ap: %d %v", s, m)
	}

	// Updates: client_id is fixed, redirect URIs are checked, secrets are
	// not chosen; a valid one replaces the metadata.
	for name, tc := range map[string]struct {
		body map[string]any
		code string
	}{
		"other client_id": {map[string]any{"client_id": admin.ID, "grant_types": []string{"client_credentials"}}, "invalid_client_metadata"},
		"http redirect":   {map[string]any{"redirect_uris": []string{"http://evil.example/cb"}}, "invalid_redirect_uri"},
		"data: redirect":  {map[string]any{"redirect_uris": []string{"data:text/html,x"}}, "invalid_redirect_uri"},
		"chosen secret":   {map[string]any{"client_secret": "mine", "grant_types": []string{"client_credentials"}}, "invalid_client_metadata"},
		"bad grant":       {map[string]any{"grant_types": []string{"password"}}, "invalid_client_metadata"},
	} {
		if s, _, m := mgmtCall(t, c, "PUT", usBase+"/admin/clients/"+id, tok, tc.body); s != 400 || m["error"] != tc.code {
			t.Fatalf("update with %s: %d %v", name, s, m)
		}
	}
	s, _, m = mgmtCall(t, c, "PUT", usBase+"/admin/clients/"+id, tok, map[string]any{"client_id": id, "client_name": "Backend v2",
		"grant_types": []string{"client_credentials"}, "scope": "meridian:introspect meridian:dereference"})
	if s != 200 || m["client_name"] != "Backend v2" || m["scope"] != "meridian:introspect meridian:dereference" {
		t.Fatalf("update: %d %v", s, m)
	}

	// Rotation with an overlap: both secrets work, both stored as digests.
	s, _, m = mgmtCall(t, c, "POST", usBase+"/admin/clients/"+id+"/secret", tok, map[string]any{"overlap_seconds": 2})
	second, _ := m["client_secret"].(string)
	until, _ := m["previous_secret_expires_at"].(float64)
	if s != 200 || second == "" || second == first || until == 0 {
		t.Fatalf("rotate: %d %v", s, m)
	}
	st, err := o.n.Store.GetClient(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(st.SecretHash, region.HashClientSecret(second)) || !bytes.Equal(st.PreviousSecretHash, region.HashClientSecret(first)) {
		t.Fatal("the secrets are not stored as (new, previous) digests")
	}
	if !mgmtSecretWorks(t, f, "ap", id, first) || !mgmtSecretWorks(t, f, "us", id, second) {
		t.Fatal("during the overlap both secrets must work")
	}
	// After the overlap the old secret fails and the new one works.
	time.Sleep(time.Until(time.Unix(int64(until)+1, 0)))
	if mgmtSecretWorks(t, f, "ap", id, first) {
		t.Fatal("the previous secret works after its overlap")
	}
	if !mgmtSecretWorks(t, f, "ap", id, second) {
		t.Fatal("the new secret stopped working")
	}
	// Overlap 0 ends the previous secret at once; overlaps are bounded.
	s, _, m = mgmtCall(t, c, "POST", usBase+"/admin/clients/"+id+"/secret", tok, map[string]any{"overlap_seconds": 0})
	third, _ := m["client_secret"].(string)
	if s != 200 || third == "" || mgmtSecretWorks(t, f, "eu", id, second) || !mgmtSecretWorks(t, f, "eu", id, third) {
		t.Fatalf("rotate without overlap: %d %v", s, m)
	}
	for _, bad := range []any{-1, 100 * 24 * 3600, "soon"} {
		if s, _, m := mgmtCall(t, c, "POST", usBase+"/admin/clients/"+id+"/secret", tok, map[string]any{"overlap_seconds": bad}); s != 400 || m["error"] != "invalid_request" {
			t.Fatalf("overlap %v: %d %v", bad, s, m)
		}
	}
	if !mgmtSecretWorks(t, f, "eu", id, third) {
		t.Fatal("a refused rotation changed the secret")
	}

	// Malformed documents get the protocol's error, never a 500.
	for _, raw := range []string{"not json", "[]", `{"redirect_uris": "https://a.example/cb"}`, `{"grant_types": 5}`,
		`{"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}, "token_endpoint_auth_method": "private_key_jwt", "grant_types": ["client_credentials"]}`,
		`{"token_endpoint_auth_method": "none", "grant_types": ["client_credentials"]}`, `{"access_token_format": "saml", "grant_types": ["client_credentials"]}`} {
		req, _ := http.NewRequest("POST", apBase+"/admin/clients", strings.NewReader(raw))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != 400 || (m["error"] != "invalid_client_metadata" && m["error"] != "invalid_redirect_uri") {
			t.Fatalf("create with %s: %d %v", raw, resp.StatusCode, m)
		}
	}

	// An admin client with RFC 9068 JWT access tokens: the router finds eu
	// by the JWT's kid, eu verifies it.
	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	jwtAdmin, err := region.CreateClient(context.Background(), o.n.Store, codec, "eu", region.ClientSpec{Name: "ops-jwt",
		GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{region.ScopeAdmin}, AccessTokenFormat: region.FormatJWT})
	if err != nil {
		t.Fatal(err)
	}
	jwtTok := mgmtToken(t, f, "ap", jwtAdmin.ID, jwtAdmin.Secret, region.ScopeAdmin)
	if !strings.HasPrefix(jwtTok, "eyJ") {
		t.Fatalf("not a JWT access token: %s", jwtTok)
	}
	if s, _, m := mgmtCall(t, c, "GET", usBase+"/admin/clients", jwtTok, nil); s != 200 || m["region"] != "eu" {
		t.Fatalf("list with a JWT admin token via us: %d %v", s, m)
	}

	// Federation clients (the hub's client at eu) are the federation
	// configuration's: the admin can read them but not change, delete or
	// rotate them, nor grant meridian:federation to another client.
	_, _, m = mgmtCall(t, c, "GET", usBase+"/admin/clients", tok, nil)
	var hubClient string
	for _, cl := range m["clients"].([]any) {
		if doc := cl.(map[string]any); strings.Contains(fmt.Sprint(doc["scope"]), region.ScopeFederation) {
			hubClient = doc["client_id"].(string)
		}
	}
	if hubClient == "" {
		t.Fatal("no federation client listed at eu")
	}
	for _, tc := range []struct {
		method, path string
		body         map[string]any
	}{
		{"PUT", "/admin/clients/" + hubClient, map[string]any{"redirect_uris": []string{"https://evil.example/cb"}}},
		{"DELETE", "/admin/clients/" + hubClient, nil},
		{"POST", "/admin/clients/" + hubClient + "/secret", nil},
	} {
		if s, _, m := mgmtCall(t, c, tc.method, apBase+tc.path, tok, tc.body); s != 403 || m["error"] != "access_denied" {
			t.Fatalf("%s %s: %d %v", tc.method, tc.path, s, m)
		}
	}
	for _, tc := range []struct{ method, path string }{{"POST", "/admin/clients"}, {"PUT", "/admin/clients/" + id}} {
		if s, _, m := mgmtCall(t, c, tc.method, apBase+tc.path, tok, map[string]any{"grant_types": []string{"client_credentials"},
			"scope": region.ScopeFederation}); s != 400 || m["error"] != "invalid_client_metadata" {
			t.Fatalf("granting %s by %s %s: %d %v", region.ScopeFederation, tc.method, tc.path, s, m)
		}
	}

	// The attacker. Without a token, or with a made-up one: 401.
	for _, bad := range []string{"", "not-a-token", tok[:len(tok)-2] + "xx"} {
		if s, www, m := mgmtCall(t, c, "GET", usBase+"/admin/clients/"+id, bad, nil); s != 401 || m["error"] != "invalid_token" || !strings.Contains(www, "invalid_token") {
			t.Fatalf("token %q: %d %v %q", bad, s, m, www)
		}
	}
	// A valid eu token without the admin scope: 403 insufficient_scope.
	rs := mgmtOperatorClient(t, f, "eu", region.ScopeIntrospect)
	plain := mgmtToken(t, f, "us", rs.ID, rs.Secret, region.ScopeIntrospect)
	for _, tc := range []struct{ method, path string }{{"GET", "/admin/clients"}, {"GET", "/admin/clients/" + id},
		{"DELETE", "/admin/clients/" + id}, {"POST", "/admin/clients/" + id + "/secret"}} {
		s, www, m := mgmtCall(t, c, tc.method, apBase+tc.path, plain, map[string]any{})
		if s != 403 || m["error"] != "insufficient_scope" || !strings.Contains(www, `scope="meridian:admin"`) {
			t.Fatalf("%s %s without the admin scope: %d %v %q", tc.method, tc.path, s, m, www)
		}
	}
	// us's admin token manages us's clients, not eu's: at eu it is not a
	// token at all.
	usAdmin := mgmtOperatorClient(t, f, "us", region.ScopeAdmin)
	usTok := mgmtToken(t, f, "ap", usAdmin.ID, usAdmin.Secret, region.ScopeAdmin)
	for _, tc := range []struct{ method, path string }{{"GET", "/admin/clients/" + id}, {"PUT", "/admin/clients/" + id},
		{"DELETE", "/admin/clients/" + id}, {"POST", "/admin/clients/" + id + "/secret"}} {
		if s, _, m := mgmtCall(t, c, tc.method, usBase+tc.path, usTok, map[string]any{"grant_types": []string{"client_credentials"}}); s != 401 || m["error"] != "invalid_token" {
			t.Fatalf("us admin token on an eu client, %s %s: %d %v", tc.method, tc.path, s, m)
		}
	}
	if s, _, m := mgmtCall(t, c, "GET", apBase+"/admin/clients", usTok, nil); s != 200 || m["region"] != "us" || strings.Contains(fmt.Sprint(m["clients"]), id) {
		t.Fatalf("us admin lists: %d %v", s, m)
	}
	if !mgmtSecretWorks(t, f, "eu", id, third) {
		t.Fatal("a refused call changed the client")
	}

	// Delete through ap; the client is gone.
	if s, _, _ := mgmtCall(t, c, "DELETE", apBase+"/admin/clients/"+id, tok, nil); s != 204 {
		t.Fatalf("delete: %d", s)
	}
	if s, _, m := mgmtCall(t, c, "GET", usBase+"/admin/clients/"+id, tok, nil); s != 404 || m["error"] != "not_found" {
		t.Fatalf("get after delete: %d %v", s, m)
	}
	if mgmtSecretWorks(t, f, "eu", id, third) {
		t.Fatal("a deleted client still gets tokens")
	}

	// Deleting a client revokes the tokens issued to it.
	introspector := f.Client("eu")
	if s, m := f.Introspect("us", introspector, plain); s != 200 || m["active"] != true {
		t.Fatalf("the resource server's token before its deletion: %d %v", s, m)
	}
	if s, _, _ := mgmtCall(t, c, "DELETE", usBase+"/admin/clients/"+rs.ID, tok, nil); s != 204 {
		t.Fatalf("delete the resource server: %d", s)
	}
	if s, m := f.Introspect("ap", introspector, plain); s != 200 || m["active"] != false {
		t.Fatalf("the deleted client's token: %d %v", s, m)
	}

	actions := map[string]int{}
	for _, e := range o.audits(region.AuditAdminChange) {
		if e["actor"] != admin.ID || e["via"] != "admin_api" {
			t.Errorf("admin.change without the actor: %v", e)
		}
		for _, secret := range []string{first, second, third} {
			if strings.Contains(fmt.Sprint(e), secret) {
				t.Fatal("an audit record carries a client secret")
			}
		}
		actions[fmt.Sprint(e["action"])]++
	}
	for action, n := range map[string]int{"client.created": 1, "client.updated": 1, "client.secret_rotated": 2, "client.deleted": 2} {
		if actions[action] != n {
			t.Errorf("%d %s audit events, want %d (have %v)", actions[action], action, n, actions)
		}
	}
	if len(o.audits(region.AuditAdminDenied)) == 0 {
		t.Error("no admin.denied audit event")
	}
	scrape := mgmtScrape(t, o.admin)
	for _, want := range [][]string{
		{"meridian_client_management_requests_total{", `api="admin"`, `operation="rotate_secret"`, `result="ok"`},
		{"meridian_client_management_requests_total{", `api="admin"`, `operation="get"`, `result="forbidden"`},
		{"meridian_client_management_requests_total{", `api="admin"`, `operation="get"`, `result="unauthenticated"`},
		{"meridian_audit_events_total{", `event="admin.change"`},
		{"meridian_audit_events_total{", `event="admin.denied"`},
	} {
		if !mgmtHasSeries(scrape, want...) {
			t.Errorf("/metrics lacks %v", want)
		}
	}
	if t.Failed() {
		for _, l := range strings.Split(scrape, "\n") {
			if strings.HasPrefix(l, "meridian_client") || strings.HasPrefix(l, "meridian_audit") {
				t.Log(l)
			}
		}
	}
}
