package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/routing"
)

const enterpriseURN = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"

// scimClient registers a client_credentials client in region id, allowed
// the given scopes, and returns a token it obtained for scope (sent to the
// global host as served by entry).
func scimToken(f *fedtest.Federation, id, entry string, allowed []string, scope string) string {
	f.T.Helper()
	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		f.T.Fatal(err)
	}
	c, err := region.CreateClient(context.Background(), f.Nodes[id].Store, codec, id, region.ClientSpec{Name: "provisioner-" + id,
		GrantTypes: []string{region.GrantClientCredentials}, Scopes: allowed})
	if err != nil {
		f.T.Fatal(err)
	}
	form := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		form.Set("scope", scope)
	}
	s, oe, tok := f.Token(entry, c, form)
	if s != http.StatusOK {
		f.T.Fatalf("client_credentials token at %s: %d %+v", id, s, oe)
	}
	return tok["access_token"].(string)
}

// passwordRefused starts a sign-in to app through entry, submits name and
// password, and reports whether the password page came back (refused)
// instead of the redirect to the app.
func passwordRefused(f *fedtest.Federation, entry string, app region.RegisteredClient, name, password string) bool {
	f.T.Helper()
	c, base := f.At(entry)
	q := url.Values{"client_id": {app.ID}, "response_type": {"code"}, "redirect_uri": {fedtest.AppRedirect}, "scope": {"openid"},
		"state": {"st"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(oauth2.GenerateVerifier())}, "code_challenge_method": {"S256"}}
	b := oidctest.NewBrowser(f.T, c.Transport)
	stop := oidctest.StopAt(fedtest.AppRedirect)
	p := oidctest.ReadPage(b.Follow(b.Get(base+"/authorize?"+q.Encode()), stop))
	if !strings.Contains(p.Body, `name="password"`) {
		p = oidctest.ReadPage(b.Follow(b.Submit(p, url.Values{"username": {name}}), stop))
	}
	resp := b.Follow(b.Submit(p, url.Values{"username": {name}, "password": {password}}), stop)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		resp.Body.Close()
		return false
	}
	p = oidctest.ReadPage(resp)
	if p.Status != http.StatusOK || !strings.Contains(p.Body, `name="password"`) {
		f.T.Fatalf("after the password: %d %s", p.Status, p.Body)
	}
	return true
}

func codecOf(t *testing.T, f *fedtest.Federation) *routing.Codec {
	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return codec
}

// scimResp is one SCIM answer.
type scimResp struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

func (r scimResp) str(k string) string { s, _ := r.body[k].(string); return s }

// scimCall sends a SCIM request to the global host as served by entry.
func scimCall(f *fedtest.Federation, entry, method, path, token string, body any, hdr ...string) scimResp {
	f.T.Helper()
	c, base := f.At(entry)
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			f.T.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, base+path, rd)
	if err != nil {
		f.T.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/scim+json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		f.T.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := scimResp{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			f.T.Fatalf("%s %s: %d, body is not JSON: %q", method, path, resp.StatusCode, raw)
		}
	}
	if resp.StatusCode >= 500 {
		f.T.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return out
}

// want checks a status and, for errors, the SCIM error body and scimType.
func (r scimResp) want(t *testing.T, what string, status int, scimType string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d: %s", what, r.status, status, r.raw)
	}
	if status >= 400 {
		schemas, _ := r.body["schemas"].([]any)
		if len(schemas) != 1 || schemas[0] != "urn:ietf:params:scim:api:messages:2.0:Error" || r.str("status") != strconv.Itoa(status) {
			t.Fatalf("%s: not a SCIM error body: %s", what, r.raw)
		}
		if r.str("scimType") != scimType {
			t.Fatalf("%s: scimType %q, want %q: %s", what, r.str("scimType"), scimType, r.raw)
		}
	}
}

// names returns the userName (or displayName) of a list's resources.
func (r scimResp) names() []string {
	var out []string
	res, _ := r.body["Resources"].([]any)
	for _, x := range res {
		m, _ := x.(map[string]any)
		n, _ := m["userName"].(string)
		if n == "" {
			n, _ = m["displayName"].(string)
		}
		out = append(out, n)
	}
	return out
}

// TestSCIM provisions users and groups over SCIM against three real
// regional nodes, on SQLite, PostgreSQL and MySQL/MariaDB: creation at the token's
// region from any entry, reads and writes routed by the resource id's
// region, filters, paging, sorting, projection, ETags, PATCH, groups, a
// provisioned user signing in, and every attacker case.
func TestSCIM(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres", "mysql"} {
		t.Run(backend, func(t *testing.T) {
			testSCIM(t, fedtest.Start(t, fedtest.Options{Store: backend}))
		})
	}
}

func testSCIM(t *testing.T, f *fedtest.Federation) {
	tok := scimToken(f, "eu", "eu", []string{"scim"}, "scim")

	// Discovery.
	for _, p := range []string{"/scim/v2/ServiceProviderConfig", "/scim/v2/ResourceTypes", "/scim/v2/Schemas",
		"/scim/v2/Schemas/" + enterpriseURN, "/scim/v2/ResourceTypes/User"} {
		scimCall(f, "eu", http.MethodGet, p, tok, nil).want(t, p, http.StatusOK, "")
	}
	if r := scimCall(f, "us", http.MethodGet, "/scim/v2/Schemas", tok, nil); r.body["totalResults"] != float64(3) {
		t.Fatalf("Schemas: %s", r.raw)
	}

	// Creation at eu, once through eu and once through us with eu's token.
	alice := scimCall(f, "eu", http.MethodPost, "/scim/v2/Users", tok, map[string]any{
		"schemas":  []string{"urn:ietf:params:scim:schemas:core:2.0:User", enterpriseURN},
		"userName": "Alice.Smith", "externalId": "hr-1", "title": "Engineer", "password": "password-alice.smith",
		"name":        map[string]any{"givenName": "Alice", "familyName": "Smith"},
		"emails":      []any{map[string]any{"value": "alice@work.example.org", "type": "work", "primary": true}, map[string]any{"value": "alice@home.example", "type": "home"}},
		enterpriseURN: map[string]any{"department": "R&D", "employeeNumber": "42"},
	})
	alice.want(t, "create alice", http.StatusCreated, "")
	aliceID := alice.str("id")
	if tag, err := routing.Parse(aliceID); err != nil || tag.Kind != routing.KindUser || tag.Region != "eu" {
		t.Fatalf("alice's id %q: %+v %v", aliceID, tag, err)
	}
	if alice.header.Get("Location") == "" || alice.header.Get("ETag") == "" || alice.body["password"] != nil || alice.str("userName") != "alice.smith" {
		t.Fatalf("create answer: %v %s", alice.header, alice.raw)
	}
	bob := scimCall(f, "us", http.MethodPost, "/scim/v2/Users", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "bob", "displayName": "Bob"})
	bob.want(t, "create bob through us", http.StatusCreated, "")
	bobID := bob.str("id")
	if tag, _ := routing.Parse(bobID); tag.Region != "eu" || bob.header.Get("X-Meridian-Entry") != "us" {
		t.Fatalf("bob created through us: id %q, entry %q", bobID, bob.header.Get("X-Meridian-Entry"))
	}
	if u, err := f.Nodes["eu"].Store.GetUserByUsername(context.Background(), "bob"); err != nil || u.SCIMID != bobID {
		t.Fatalf("bob in eu's store: %+v %v", u, err)
	}
	if _, err := f.Nodes["us"].Store.GetUserByUsername(context.Background(), "bob"); err == nil {
		t.Fatal("bob was stored at us")
	}
	// The SCIM attributes reach the OpenID claims.
	if u, _ := f.Nodes["eu"].Store.GetUserByUsername(context.Background(), "alice.smith"); u.Claims["email"] != "alice@work.example.org" || u.Claims["name"] != "Alice Smith" {
		t.Fatalf("alice's claims %v", u.Claims)
	}
	scimCall(f, "eu", http.MethodPost, "/scim/v2/Users", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "ALICE.smith"}).
		want(t, "duplicate userName", http.StatusConflict, "uniqueness")

	// A user provisioned with a password signs in.
	app := f.Client("eu")
	if loc := f.LoginRedirect("ap", app, "alice.smith", oauth2.GenerateVerifier()); loc.Query().Get("code") == "" {
		t.Fatalf("provisioned user's sign-in: %s", loc)
	}

	// Deactivation (active false) refuses the password; reactivation
	// restores it.
	carol := scimCall(f, "eu", http.MethodPost, "/scim/v2/Users", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "carol", "password": "password-carol"})
	carol.want(t, "create carol", http.StatusCreated, "")
	setActive := func(active bool) {
		scimCall(f, "us", http.MethodPatch, "/scim/v2/Users/"+carol.str("id"), tok, map[string]any{
			"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
			"Operations": []any{map[string]any{"op": "replace", "path": "active", "value": active}}}).
			want(t, "set active", http.StatusOK, "")
	}
	// Carol signs in to the app; deactivating her ends her tokens.
	verifier := oauth2.GenerateVerifier()
	code := f.LoginRedirect("us", app, "carol", verifier).Query().Get("code")
	s, oe, ctok := f.Token("ap", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}})
	if s != http.StatusOK {
		t.Fatalf("carol's tokens: %d %+v", s, oe)
	}
	carolAT, _ := ctok["access_token"].(string)
	if _, m := f.Introspect("us", app, carolAT); m["active"] != true {
		t.Fatalf("carol's token before deactivation: %v", m)
	}
	setActive(false)
	if _, m := f.Introspect("ap", app, carolAT); m["active"] != false {
		t.Fatalf("carol's token after deactivation: %v", m)
	}
	if s, _, _ := f.Token("eu", app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {ctok["refresh_token"].(string)}}); s == http.StatusOK {
		t.Fatal("a deactivated user's refresh token still works")
	}
	if !passwordRefused(f, "ap", app, "carol", "password-carol") {
		t.Fatal("a deactivated user signed in")
	}
	setActive(true)
	if passwordRefused(f, "ap", app, "carol", "password-carol") {
		t.Fatal("a reactivated user was refused")
	}
	scimCall(f, "eu", http.MethodDelete, "/scim/v2/Users/"+carol.str("id"), tok, nil).want(t, "delete carol", http.StatusNoContent, "")

	// Reads through every entry reach eu.
	for _, entry := range []string{"eu", "us", "ap"} {
		r := scimCall(f, entry, http.MethodGet, "/scim/v2/Users/"+aliceID, tok, nil)
		r.want(t, "get alice through "+entry, http.StatusOK, "")
		if r.header.Get("ETag") != alice.header.Get("ETag") || r.str("userName") != "alice.smith" {
			t.Fatalf("get through %s: %v %s", entry, r.header, r.raw)
		}
	}
	scimCall(f, "us", http.MethodGet, "/scim/v2/Users/"+aliceID, tok, nil, "If-None-Match", alice.header.Get("ETag")).
		want(t, "If-None-Match", http.StatusNotModified, "")

	// Filters.
	for _, tc := range []struct {
		filter string
		want   []string
	}{
		{`userName eq "ALICE.SMITH"`, []string{"alice.smith"}},
		{`userName ne "alice.smith"`, []string{"bob"}},
		{`userName co "smi"`, []string{"alice.smith"}},
		{`userName sw "b"`, []string{"bob"}},
		{`title pr`, []string{"alice.smith"}},
		{`not (title pr)`, []string{"bob"}},
		{`emails[type eq "work" and value co "@work."]`, []string{"alice.smith"}},
		{`emails[type eq "work"] or displayName eq "Bob"`, []string{"alice.smith", "bob"}},
		{`emails.value ew "home.example"`, []string{"alice.smith"}},
		{`name.familyName eq "smith" and externalId eq "hr-1"`, []string{"alice.smith"}},
		{`externalId eq "HR-1"`, nil}, // externalId is caseExact
		{enterpriseURN + `:department eq "R&D"`, []string{"alice.smith"}},
		{`meta.created gt "2000-01-01T00:00:00Z" and meta.lastModified le "2999-01-01T00:00:00Z"`, []string{"alice.smith", "bob"}},
		{`meta.created lt "2000-01-01T00:00:00Z"`, nil},
		{`active eq true`, []string{"alice.smith", "bob"}},
		{`userName eq "x\" or userName pr or \"1"`, nil},
		{`userName eq "'; DROP TABLE users; --"`, nil},
	} {
		r := scimCall(f, "ap", http.MethodGet, "/scim/v2/Users?sortBy=userName&filter="+url.QueryEscape(tc.filter), tok, nil)
		r.want(t, tc.filter, http.StatusOK, "")
		if got := r.names(); !slices.Equal(got, tc.want) {
			t.Errorf("filter %s: %v, want %v", tc.filter, got, tc.want)
		}
	}

	// The same query as a SearchRequest, through another region.
	r := scimCall(f, "us", http.MethodPost, "/scim/v2/Users/.search", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:SearchRequest"},
		"filter":  `emails[type eq "work"]`, "attributes": []string{"userName"}, "count": 10})
	r.want(t, ".search", http.StatusOK, "")
	if !slices.Equal(r.names(), []string{"alice.smith"}) || strings.Contains(r.raw, "emails") {
		t.Fatalf(".search: %s", r.raw)
	}
	scimCall(f, "us", http.MethodPost, "/scim/v2/Users/.search", tok, map[string]any{"filter": "userName pr"}).
		want(t, ".search without its schema", http.StatusBadRequest, "invalidSyntax")

	// Paging, sorting, projection.
	r = scimCall(f, "eu", http.MethodGet, "/scim/v2/Users?sortBy=userName&sortOrder=descending&startIndex=2&count=1", tok, nil)
	if got := r.names(); !slices.Equal(got, []string{"alice.smith"}) || r.body["totalResults"] != float64(2) || r.body["startIndex"] != float64(2) {
		t.Fatalf("page 2 of 1 descending: %s", r.raw)
	}
	r = scimCall(f, "eu", http.MethodGet, "/scim/v2/Users?count=0", tok, nil)
	if r.body["totalResults"] != float64(2) || len(r.names()) != 0 {
		t.Fatalf("count=0: %s", r.raw)
	}
	r = scimCall(f, "eu", http.MethodGet, "/scim/v2/Users/"+aliceID+"?attributes=userName,name.givenName", tok, nil)
	if _, ok := r.body["emails"]; ok || r.str("id") != aliceID || r.body["name"].(map[string]any)["givenName"] != "Alice" || r.body["name"].(map[string]any)["familyName"] != nil {
		t.Fatalf("attributes=userName,name.givenName: %s", r.raw)
	}
	r = scimCall(f, "eu", http.MethodGet, "/scim/v2/Users/"+aliceID+"?excludedAttributes=emails,id", tok, nil)
	if _, ok := r.body["emails"]; ok || r.str("id") != aliceID || r.str("title") != "Engineer" {
		t.Fatalf("excludedAttributes=emails,id: %s", r.raw)
	}

	// PATCH and PUT with ETags.
	etag := alice.header.Get("ETag")
	r = scimCall(f, "us", http.MethodPatch, "/scim/v2/Users/"+aliceID, tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{
			map[string]any{"op": "Replace", "path": "title", "value": "Staff Engineer"},
			map[string]any{"op": "replace", "path": `emails[type eq "work"].value`, "value": "alice@new.example.org"},
			map[string]any{"op": "add", "path": "phoneNumbers", "value": []any{map[string]any{"value": "+1 555 0100", "type": "work"}}},
			map[string]any{"op": "remove", "path": enterpriseURN + ":employeeNumber"},
		}}, "If-Match", etag)
	r.want(t, "patch alice", http.StatusOK, "")
	if r.str("title") != "Staff Engineer" || r.header.Get("ETag") == etag || !strings.Contains(r.raw, "alice@new.example.org") ||
		strings.Contains(r.raw, "employeeNumber") || !strings.Contains(r.raw, "+1 555 0100") {
		t.Fatalf("patched alice: %v %s", r.header, r.raw)
	}
	newTag := r.header.Get("ETag")
	scimCall(f, "eu", http.MethodPatch, "/scim/v2/Users/"+aliceID, tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "replace", "path": "title", "value": "stale"}}}, "If-Match", etag).
		want(t, "patch with a stale If-Match", http.StatusPreconditionFailed, "")
	scimCall(f, "eu", http.MethodPut, "/scim/v2/Users/"+aliceID, tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "alice.smith"}, "If-Match", etag).
		want(t, "put with a stale If-Match", http.StatusPreconditionFailed, "")
	// A rename by PUT (password kept, other attributes replaced).
	r = scimCall(f, "ap", http.MethodPut, "/scim/v2/Users/"+aliceID, tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "alice.jones", "active": true,
		"name": map[string]any{"givenName": "Alice", "familyName": "Jones"}}, "If-Match", newTag)
	r.want(t, "put alice", http.StatusOK, "")
	if r.str("userName") != "alice.jones" || r.body["title"] != nil {
		t.Fatalf("replaced alice: %s", r.raw)
	}
	if _, err := f.Nodes["eu"].Store.GetUserByUsername(context.Background(), "alice.smith"); err == nil {
		t.Fatal("the old username is still taken after the rename")
	}

	// Groups.
	g := scimCall(f, "us", http.MethodPost, "/scim/v2/Groups", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "Engineering",
		"members": []any{map[string]any{"value": aliceID}}})
	g.want(t, "create group", http.StatusCreated, "")
	gid := g.str("id")
	if tag, _ := routing.Parse(gid); tag.Kind != routing.KindGroup || tag.Region != "eu" || !strings.Contains(g.raw, "alice.jones") {
		t.Fatalf("group: %s", g.raw)
	}
	scimCall(f, "eu", http.MethodPatch, "/scim/v2/Groups/"+gid, tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "add", "path": "members", "value": []any{map[string]any{"value": bobID}}}}}).
		want(t, "add bob", http.StatusOK, "")
	r = scimCall(f, "ap", http.MethodGet, "/scim/v2/Groups?filter="+url.QueryEscape(`members[value eq "`+bobID+`"]`), tok, nil)
	if !slices.Equal(r.names(), []string{"Engineering"}) {
		t.Fatalf("groups of bob: %s", r.raw)
	}
	if r := scimCall(f, "ap", http.MethodGet, "/scim/v2/Users/"+bobID, tok, nil); !strings.Contains(r.raw, gid) {
		t.Fatalf("bob's groups: %s", r.raw)
	}
	scimCall(f, "eu", http.MethodPatch, "/scim/v2/Groups/"+gid, tok, map[string]any{
		"schemas":    []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
		"Operations": []any{map[string]any{"op": "remove", "path": `members[value eq "` + aliceID + `"]`}}}).
		want(t, "remove alice", http.StatusOK, "")
	scimCall(f, "eu", http.MethodPost, "/scim/v2/Groups", tok, map[string]any{
		"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:Group"}, "displayName": "Strangers",
		"members": []any{map[string]any{"value": "m1.us.us.AAAA"}}}).want(t, "member of no region", http.StatusBadRequest, "invalidValue")

	// Deleting bob takes him out of the group.
	scimCall(f, "eu", http.MethodDelete, "/scim/v2/Users/"+bobID, tok, nil, "If-Match", `W/"999"`).
		want(t, "delete with a stale If-Match", http.StatusPreconditionFailed, "")
	scimCall(f, "us", http.MethodDelete, "/scim/v2/Users/"+bobID, tok, nil).want(t, "delete bob", http.StatusNoContent, "")
	scimCall(f, "ap", http.MethodGet, "/scim/v2/Users/"+bobID, tok, nil).want(t, "get deleted bob", http.StatusNotFound, "")
	if r := scimCall(f, "eu", http.MethodGet, "/scim/v2/Groups/"+gid, tok, nil); strings.Contains(r.raw, bobID) {
		t.Fatalf("deleted bob still in the group: %s", r.raw)
	}
	scimCall(f, "ap", http.MethodDelete, "/scim/v2/Groups/"+gid, tok, nil).want(t, "delete group", http.StatusNoContent, "")
	scimCall(f, "eu", http.MethodGet, "/scim/v2/Groups/"+gid, tok, nil).want(t, "get deleted group", http.StatusNotFound, "")

	testSCIMAttacks(t, f, tok, aliceID)
}

// testSCIMAttacks plays the attacker against the SCIM endpoint.
func testSCIMAttacks(t *testing.T, f *fedtest.Federation, tok, aliceID string) {
	noScope := scimToken(f, "eu", "eu", []string{"scim"}, "")
	otherScope := scimToken(f, "eu", "eu", []string{region.ScopeIntrospect}, region.ScopeIntrospect)
	usTok := scimToken(f, "us", "us", []string{"scim"}, "scim")
	patchOp := func(ops ...map[string]any) map[string]any {
		l := make([]any, len(ops))
		for i, o := range ops {
			l[i] = o
		}
		return map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"}, "Operations": l}
	}
	for _, tc := range []struct {
		name, entry, method, path, token string
		body                             any
		status                           int
		scimType                         string
	}{
		{"no token", "eu", http.MethodGet, "/scim/v2/Users", "", nil, http.StatusUnauthorized, ""},
		{"no token, create", "us", http.MethodPost, "/scim/v2/Users", "", map[string]any{"userName": "mallory"}, http.StatusUnauthorized, ""},
		{"garbage token", "eu", http.MethodGet, "/scim/v2/Users/" + aliceID, "not-a-token", nil, http.StatusUnauthorized, ""},
		{"token without a scope", "eu", http.MethodGet, "/scim/v2/Users", noScope, nil, http.StatusForbidden, ""},
		{"token with another scope", "us", http.MethodGet, "/scim/v2/Users/" + aliceID, otherScope, nil, http.StatusForbidden, ""},
		{"another region's token on an eu user", "eu", http.MethodGet, "/scim/v2/Users/" + aliceID, usTok, nil, http.StatusUnauthorized, ""},
		{"another region's token deleting an eu user", "us", http.MethodDelete, "/scim/v2/Users/" + aliceID, usTok, nil, http.StatusUnauthorized, ""},
		{"forged id", "eu", http.MethodGet, "/scim/v2/Users/m1.us.eu.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", tok, nil, http.StatusNotFound, ""},
		{"a group id as a user id", "eu", http.MethodGet, "/scim/v2/Users/" + strings.Replace(aliceID, ".us.", ".gr.", 1), tok, nil, http.StatusNotFound, ""},
		{"oversized filter", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`userName eq "`+strings.Repeat("a", 2000)+`"`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"deeply nested filter", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(strings.Repeat("(", 600)+`userName pr`+strings.Repeat(")", 600)), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"unparsable filter", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`userName eq`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"SQL in a filter", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`userName eq "a" or 1=1`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"unknown attribute in a filter", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`password_hash pr`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"filter on the password", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`password sw "a"`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"ordering a boolean", "eu", http.MethodGet, "/scim/v2/Users?filter=" + url.QueryEscape(`active gt true`), tok, nil, http.StatusBadRequest, "invalidFilter"},
		{"bad sortBy", "eu", http.MethodGet, "/scim/v2/Users?sortBy=nope", tok, nil, http.StatusBadRequest, "invalidValue"},
		{"not JSON", "eu", http.MethodPost, "/scim/v2/Users", tok, "{", http.StatusBadRequest, "invalidSyntax"},
		{"no schemas", "eu", http.MethodPost, "/scim/v2/Users", tok, map[string]any{"userName": "mallory"}, http.StatusBadRequest, "invalidSyntax"},
		{"wrong type", "eu", http.MethodPost, "/scim/v2/Users", tok, map[string]any{"schemas": []string{"urn:ietf:params:scim:schemas:core:2.0:User"}, "userName": "m", "emails": "x"}, http.StatusBadRequest, "invalidValue"},
		{"oversized body", "eu", http.MethodPost, "/scim/v2/Users", tok, `{"userName":"` + strings.Repeat("a", 2<<20) + `"}`, http.StatusRequestEntityTooLarge, "tooLarge"},
		{"PATCH unknown path", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": "nosuch", "value": "x"}), http.StatusBadRequest, "invalidPath"},
		{"PATCH unparsable path", "us", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": `emails[type eq`, "value": "x"}), http.StatusBadRequest, "invalidPath"},
		{"PATCH unknown sub-attribute", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "add", "path": "name.nick", "value": "x"}), http.StatusBadRequest, "invalidPath"},
		{"PATCH the id", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": "id", "value": "x"}), http.StatusBadRequest, "mutability"},
		{"PATCH meta.version", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": "meta.version", "value": "x"}), http.StatusBadRequest, "mutability"},
		{"PATCH remove userName", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "remove", "path": "userName"}), http.StatusBadRequest, "mutability"},
		{"PATCH remove without a path", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "remove"}), http.StatusBadRequest, "noTarget"},
		{"PATCH no match", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": `emails[type eq "fax"].value`, "value": "x"}), http.StatusBadRequest, "noTarget"},
		{"PATCH unknown op", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "move", "path": "title"}), http.StatusBadRequest, "invalidSyntax"},
		{"PATCH without the PatchOp schema", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, map[string]any{"Operations": []any{}}, http.StatusBadRequest, "invalidSyntax"},
		{"PATCH a wrong type", "eu", http.MethodPatch, "/scim/v2/Users/" + aliceID, tok, patchOp(map[string]any{"op": "replace", "path": "active", "value": "maybe"}), http.StatusBadRequest, "invalidValue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scimCall(f, tc.entry, tc.method, tc.path, tc.token, tc.body).want(t, tc.name, tc.status, tc.scimType)
		})
	}
	// A JWT access token (RFC 9068) of eu works through another region too.
	jwtClient, err := region.CreateClient(context.Background(), f.Nodes["eu"].Store, codecOf(t, f), "eu", region.ClientSpec{Name: "jwt-provisioner",
		GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{"scim"}, AccessTokenFormat: region.FormatJWT})
	if err != nil {
		t.Fatal(err)
	}
	s, oe, jt := f.Token("ap", jwtClient, url.Values{"grant_type": {"client_credentials"}, "scope": {"scim"}})
	jwtTok, _ := jt["access_token"].(string)
	if s != http.StatusOK || !strings.HasPrefix(jwtTok, "eyJ") {
		t.Fatalf("JWT token: %d %+v %v", s, oe, jt)
	}
	if r := scimCall(f, "us", http.MethodGet, "/scim/v2/Users/"+aliceID, jwtTok, nil); r.status != http.StatusOK {
		t.Fatalf("JWT access token through us: %s", r.raw)
	}

	// Another region's token lists only that region's users.
	if r := scimCall(f, "eu", http.MethodGet, "/scim/v2/Users", usTok, nil); r.status != http.StatusOK || strings.Contains(r.raw, aliceID) {
		t.Fatalf("us token listing through eu: %s", r.raw)
	}
	// A client not allowed the scope gets no token for it.
	c, err := region.CreateClient(context.Background(), f.Nodes["eu"].Store, codecOf(t, f), "eu", region.ClientSpec{Name: "not-allowed",
		GrantTypes: []string{region.GrantClientCredentials}})
	if err != nil {
		t.Fatal(err)
	}
	if s, _, _ := f.Token("us", c, url.Values{"grant_type": {"client_credentials"}, "scope": {"scim"}}); s == http.StatusOK {
		t.Fatal("a client without the scim scope got a scim token")
	}
	// Alice is unchanged by all of it.
	if r := scimCall(f, "eu", http.MethodGet, "/scim/v2/Users/"+aliceID, tok, nil); r.str("userName") != "alice.jones" {
		t.Fatalf("alice after the attacks: %s", r.raw)
	}
}

// TestSCIMIndependentClient drives the SCIM endpoint of a real federation
// with an independent SCIM implementation (SCIMMY, testdata/scimclient):
// its schemas check every request and answer, its filter and PatchOp must
// agree with the server's, through two regions' entries. It needs node and
// `npm ci` in testdata/scimclient (.ci/run does both).
func TestSCIMIndependentClient(t *testing.T) {
	dir := filepath.Join("testdata", "scimclient")
	nodeBin, err := exec.LookPath("node")
	if err == nil {
		_, err = os.Stat(filepath.Join(dir, "node_modules", "scimmy", "package.json"))
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the independent SCIM client is not installed: %v", err)
		}
		t.Skipf("node or SCIMMY missing (npm ci in %s): %v", dir, err)
	}
	f := fedtest.Start(t, fedtest.Options{})
	tok := scimToken(f, "eu", "eu", []string{"scim"}, "scim")
	entry := func(id string) string { return "http://" + net.JoinHostPort(fedtest.SiteIP(id), strconv.Itoa(f.Port)) }
	cmd := exec.CommandContext(t.Context(), nodeBin, "client.mjs", entry("eu"), entry("us"), tok)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	t.Logf("SCIMMY client:\n%s", out)
	if err != nil {
		t.Fatalf("the independent SCIM client failed: %v", err)
	}
}
