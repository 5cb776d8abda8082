package hub_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
)

func (f *fed) bulkUsers(regionID, format string, n int) {
	f.t.Helper()
	hash, err := region.HashPassword("bulk users' shared password")
	if err != nil {
		f.t.Fatal(err)
	}
	now := time.Now().UTC()
	for i := range n {
		name := format
		if n > 1 {
			name = fmt.Sprintf(format, i)
		}
		if err := f.Nodes[regionID].Store.CreateUser(f.ctx, store.User{ID: regionID + "-" + name, Username: name,
			PasswordHash: hash, Claims: map[string]string{}, CreatedAt: now, UpdatedAt: now}); err != nil {
			f.t.Fatal(err)
		}
	}
	f.Notify(regionID)
}

func (f *fed) waitOutboxes() {
	f.t.Helper()
	for id, n := range f.Nodes {
		fedtest.Eventually(f.t, id+"'s outbox to drain", func() bool {
			p, err := n.Store.PendingOutbox(f.ctx, 1)
			return err == nil && len(p) == 0
		})
	}
}

func regionReport(t *testing.T, rep hub.ReconcileReport, id string) hub.RegionReconcile {
	t.Helper()
	for _, r := range rep.Regions {
		if r.Region == id {
			return r
		}
	}
	t.Fatalf("no report for %s", id)
	return hub.RegionReconcile{}
}

// TestReconcile pages through the regions' user keys (more than one page
// for us), reports and fixes missing, moved and stale entries, never fixes
// a username two regions claim, and never deletes anything when a region
// cannot be listed.
func TestReconcile(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.bulkUsers("us", "user%04d", hub.PageSize+150)
	f.bulkUsers("eu", "eu-user%d", 3)
	f.bulkUsers("ap", "dup", 1)
	f.bulkUsers("ap", "ap-only", 1)
	f.waitOutboxes()
	f.bulkUsers("eu", "dup", 1) // refused by the hub as a conflict
	f.waitOutboxes()
	ctx := f.ctx
	if err := f.table.Remove(ctx, "user0001"); err != nil {
		t.Fatal(err)
	}
	if err := f.table.Assign(ctx, "user0002", "ap"); err != nil {
		t.Fatal(err)
	}
	if err := f.table.Assign(ctx, "ghost", "eu"); err != nil {
		t.Fatal(err)
	}

	rep, err := f.broker.Reconcile(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	us := regionReport(t, rep, "us")
	if !rep.Complete || us.Users != hub.PageSize+150 || us.Missing != 1 || us.Moved != 1 || rep.Stale != 1 || rep.Fixed != 0 {
		t.Fatalf("report: %+v", rep)
	}
	if regionReport(t, rep, "eu").Conflicts != 1 || regionReport(t, rep, "ap").Conflicts != 1 {
		t.Fatalf("conflict of dup not reported: %+v", rep)
	}

	if rep, err = f.broker.Reconcile(ctx, true); err != nil || rep.Fixed != 2 || rep.StaleRemoved != 1 {
		t.Fatalf("fix: %+v, %v", rep, err)
	}
	for name, want := range map[string]string{"user0001": "us", "user0002": "us", "dup": "ap"} {
		if got, err := f.table.Resolve(ctx, name); got != want || err != nil {
			t.Fatalf("%s: %q, %v; want %s", name, got, err, want)
		}
	}
	if _, err := f.table.Resolve(ctx, "ghost"); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("stale entry survived: %v", err)
	}
	if rep, err = f.broker.Reconcile(ctx, false); err != nil || rep.Stale != 0 || regionReport(t, rep, "us").Missing != 0 {
		t.Fatalf("after fix: %+v, %v", rep, err)
	}

	// A region that cannot be listed keeps its entries.
	f.Halt("ap")
	rep, err = f.broker.Reconcile(ctx, true)
	if err != nil || rep.Complete || regionReport(t, rep, "ap").Err == nil || rep.StaleRemoved != 0 || rep.Stale != 1 ||
		regionReport(t, rep, "eu").Unverified != 1 || rep.Fixed != 0 {
		t.Fatalf("with ap down: %+v, %v", rep, err)
	}
	if got, err := f.table.Resolve(ctx, "dup"); got != "ap" || err != nil {
		t.Fatalf("ap's user was touched while ap could not be listed: %q, %v", got, err)
	}
}

// regionAuth is the Authorization header of region claimed's client at
// the hub, signed with party signer's federation key.
func regionAuth(t *testing.T, f *fed, claimed, signer string) string {
	t.Helper()
	a, err := federation.BearerAssertion(f.fedKeys[signer], federation.RegionClientID(claimed), f.hubURL()+federation.ChangesPath)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func postChanges(t *testing.T, f *fed, authz string, body []byte) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.hubURL()+federation.ChangesPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if authz != "" {
		req.Header.Set("Authorization", authz)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	m := map[string]any{}
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, resp.Header
}

// TestChangesEndpoint: only a region's own credentials are accepted, bad
// input is an RFC 6749 JSON error with nothing written, a region cannot
// take over or delete another region's users.
func TestChangesEndpoint(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	own := func(id string) string { return regionAuth(t, f, id, id) }
	key, err := f.hasher.Key("someone")
	if err != nil {
		t.Fatal(err)
	}
	body := func(op string, keys ...string) []byte {
		var req federation.ChangesRequest
		for _, k := range keys {
			req.Changes = append(req.Changes, federation.KeyChange{Op: op, Key: k})
		}
		b, _ := json.Marshal(req)
		return b
	}
	k := key.String()

	if st, m, h := postChanges(t, f, "", body("put", k)); st != http.StatusUnauthorized || m["error"] != "invalid_client" || h.Get("WWW-Authenticate") == "" {
		t.Fatalf("no credentials: %d %v", st, m)
	}
	if st, _, _ := postChanges(t, f, regionAuth(t, f, "eu", "us"), body("put", k)); st != http.StatusUnauthorized {
		t.Fatalf("another region's key: %d", st)
	}
	for name, b := range map[string][]byte{
		"not JSON":    []byte("{"),
		"unknown op":  body("move", k),
		"bad key":     body("put", k, "zz"),
		"extra field": []byte(`{"changes":[],"usernames":["x"]}`),
	} {
		if st, m, _ := postChanges(t, f, own("eu"), b); st != http.StatusBadRequest || m["error"] != "invalid_request" {
			t.Fatalf("%s: %d %v", name, st, m)
		}
	}
	if _, err := f.lookup.Get(f.ctx, key); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("a rejected request wrote: %v", err)
	}
	if st, m, _ := postChanges(t, f, own("eu"), body("put", k)); st != http.StatusOK || m["applied"] != 1.0 {
		t.Fatalf("put: %d %v", st, m)
	}
	if st, m, _ := postChanges(t, f, own("ap"), body("put", k)); st != http.StatusOK || m["conflicts"] != 1.0 {
		t.Fatalf("takeover: %d %v", st, m)
	}
	if st, m, _ := postChanges(t, f, own("ap"), body("delete", k)); st != http.StatusOK || m["ignored"] != 1.0 {
		t.Fatalf("foreign delete: %d %v", st, m)
	}
	if r, _ := f.lookup.Get(f.ctx, key); r != "eu" {
		t.Fatalf("entry is %q, want eu", r)
	}
	if st, m, _ := postChanges(t, f, own("eu"), body("delete", k)); st != http.StatusOK || m["applied"] != 1.0 {
		t.Fatalf("delete: %d %v", st, m)
	}
}

// TestResolveEndpoint plays someone who wants the hub to say whether a
// name exists: only a region's own credentials for the resolve path are
// accepted (no credentials, another region's key, an assertion for the
// changes path: 401), bad input is a JSON error, and a region learns only
// known or not, never where.
func TestResolveEndpoint(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	auth := func(claimed, signer, path string) string {
		a, err := federation.BearerAssertion(f.fedKeys[signer], federation.RegionClientID(claimed), f.hubURL()+path)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	keyOf := func(name string) string {
		k, err := f.hasher.Key(name)
		if err != nil {
			t.Fatal(err)
		}
		return k.String()
	}
	post := func(authz, body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, f.hubURL()+federation.ResolvePath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		m := map[string]any{}
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	known := `{"keys":["` + keyOf("bob.smith") + `"]}`
	for _, c := range []struct {
		name, authz, body string
		status            int
		want              map[string]any
	}{
		{"no credentials", "", known, http.StatusUnauthorized, map[string]any{"error": "invalid_client"}},
		{"another region's key", auth("eu", "us", federation.ResolvePath), known, http.StatusUnauthorized, map[string]any{"error": "invalid_client"}},
		{"the hub's own key", auth("eu", federation.PartyHub, federation.ResolvePath), known, http.StatusUnauthorized, map[string]any{"error": "invalid_client"}},
		{"assertion for the changes path", auth("eu", "eu", federation.ChangesPath), known, http.StatusUnauthorized, map[string]any{"error": "invalid_client"}},
		{"not JSON", auth("eu", "eu", federation.ResolvePath), "bob.smith", http.StatusBadRequest, map[string]any{"error": "invalid_request"}},
		{"a username, not a key", auth("eu", "eu", federation.ResolvePath), `{"keys":["bob.smith"]}`, http.StatusBadRequest, map[string]any{"error": "invalid_request"}},
		{"three keys", auth("eu", "eu", federation.ResolvePath), `{"keys":["` + keyOf("a") + `","` + keyOf("b") + `","` + keyOf("c") + `"]}`, http.StatusBadRequest, map[string]any{"error": "invalid_request"}},
		{"known", auth("eu", "eu", federation.ResolvePath), known, http.StatusOK, map[string]any{"known": true}},
		{"unknown", auth("ap", "ap", federation.ResolvePath), `{"keys":["` + keyOf("nobody.at.all") + `"]}`, http.StatusOK, map[string]any{"known": false}},
	} {
		st, m := post(c.authz, c.body)
		if st != c.status {
			t.Errorf("%s: %d %v, want %d", c.name, st, m, c.status)
			continue
		}
		for k, v := range c.want {
			if m[k] != v {
				t.Errorf("%s: %s = %v, want %v (%v)", c.name, k, m[k], v, m)
			}
		}
		if st == http.StatusOK && len(m) != 1 {
			t.Errorf("%s: answer %v says more than known", c.name, m)
		}
	}
}
