package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/memstore"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federation"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/routing"
)

func codec(t *testing.T) *routing.Codec {
	t.Helper()
	c, err := routing.NewCodec([]string{"eu", "us", "ap"}, bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func hasher(t *testing.T) *lookup.Hasher {
	t.Helper()
	h, err := lookup.NewHasher(bytes.Repeat([]byte{5}, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func openStore(t *testing.T) store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "region.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestCredentials: every node derives the same credentials; they are
// tagged for the right region; EnsureClient is idempotent and repairs.
func TestCredentials(t *testing.T) {
	c := codec(t)
	id1, err := federation.HubClientID(c, "us")
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := federation.HubClientID(codec(t), "us")
	if id1 != id2 || federation.HubClientSecret(c, "us") != federation.HubClientSecret(codec(t), "us") {
		t.Fatal("derivation is not deterministic")
	}
	if tag, err := c.VerifyKind(id1, routing.KindClient); err != nil || tag.Region != "us" {
		t.Fatalf("hub client id %s: %+v %v", id1, tag, err)
	}
	peer, _ := federation.PeerClientID(c, "eu", "us")
	if peer == id1 || federation.PeerClientSecret(c, "eu", "us") == federation.PeerClientSecret(c, "ap", "us") {
		t.Fatal("peer credentials collide")
	}
	if federation.RegionClientSecret(c, "eu") == federation.RegionClientSecret(c, "us") {
		t.Fatal("region secrets collide")
	}
	if r, ok := federation.RegionFromClientID("region-eu"); !ok || r != "eu" {
		t.Fatal("RegionFromClientID")
	}
	if _, ok := federation.RegionFromClientID("region-EU/../x"); ok {
		t.Fatal("RegionFromClientID accepted a bad id")
	}
	if err := federation.CheckHubCredentials(c, "us", id1, federation.HubClientSecret(c, "us")); err != nil {
		t.Fatal(err)
	}
	if err := federation.CheckHubCredentials(c, "eu", id1, federation.HubClientSecret(c, "us")); err == nil {
		t.Fatal("us credentials accepted at eu")
	}

	ctx := context.Background()
	st := openStore(t)
	for range 2 {
		if err := federation.EnsureHubClient(ctx, st, c, "us", "http://hub.example"); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.GetClient(ctx, id1)
	if err != nil || !slices.Equal(got.RedirectURIs, []string{"http://hub.example/callback/us"}) ||
		!slices.Contains(got.Scopes, region.ScopeFederation) || !got.FirstParty {
		t.Fatalf("hub client: %+v %v", got, err)
	}
	if err := federation.EnsureHubClient(ctx, st, c, "us", "https://hub.example.com"); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetClient(ctx, id1); got.RedirectURIs[0] != "https://hub.example.com/callback/us" {
		t.Fatalf("not repaired: %v", got.RedirectURIs)
	}
	if err := federation.EnsurePeerClients(ctx, st, c, "us", map[string][]string{"eu": {"http://eu.example", "http://id.example"}, "us": {"x"}}); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetClient(ctx, peer)
	if err != nil || !slices.Equal(got.RedirectURIs, []string{"http://eu.example" + federation.CallbackPath, "http://id.example" + federation.CallbackPath}) {
		t.Fatalf("peer client: %+v %v", got, err)
	}
}

func getKeys(t *testing.T, h http.Handler, id, secret, query string) (int, map[string]any, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, federation.UserKeysPath+"?"+query, nil)
	if id != "" {
		req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	m := map[string]any{}
	_ = json.Unmarshal(rec.Body.Bytes(), &m)
	return rec.Code, m, rec.Body.String()
}

// TestUserKeysHandler: only the hub's credentials for this region list,
// pages carry keys and an opaque cursor, never a username.
func TestUserKeysHandler(t *testing.T) {
	c, h := codec(t), hasher(t)
	st := openStore(t)
	ctx := context.Background()
	names := []string{"alice", "bob.smith", "carol", "dave", "erin"}
	for _, n := range names {
		if err := st.CreateUser(ctx, store.User{ID: "id-" + n, Username: n, PasswordHash: "x", Claims: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	handler, err := federation.NewUserKeysHandler(federation.UserKeysConfig{Region: "us", Codec: c, Hasher: h, Users: st, CursorKey: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := federation.HubClientID(c, "us")
	secret := federation.HubClientSecret(c, "us")
	euID, _ := federation.HubClientID(c, "eu")
	for name, creds := range map[string][2]string{"none": {"", ""}, "wrong secret": {id, "nope"}, "eu's hub client": {euID, federation.HubClientSecret(c, "eu")}} {
		if code, m, _ := getKeys(t, handler, creds[0], creds[1], ""); code != http.StatusUnauthorized || m["error"] != "invalid_client" {
			t.Errorf("%s: %d %v", name, code, m)
		}
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=999999", "after=bob.smith", "after=AAAA"} {
		if code, m, _ := getKeys(t, handler, id, secret, q); code != http.StatusBadRequest || m["error"] != "invalid_request" {
			t.Errorf("%s: %d %v", q, code, m)
		}
	}
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		q := url.Values{"limit": {"2"}}
		if after != "" {
			q.Set("after", after)
		}
		code, _, body := getKeys(t, handler, id, secret, q.Encode())
		if code != http.StatusOK {
			t.Fatalf("page %d: %d %s", pages, code, body)
		}
		for _, n := range names {
			if strings.Contains(body, n) {
				t.Fatalf("username %q in a page: %s", n, body)
			}
		}
		var page federation.UserKeysPage
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, page.Keys...)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	var want []string
	for _, n := range names {
		k, _ := h.Key(n)
		want = append(want, k.String())
	}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys %v, want %v", keys, want)
	}
}

// recordingSink fails while down is set and records what it accepted.
type recordingSink struct {
	mu      sync.Mutex
	down    bool
	fails   int
	changes []federation.KeyChange
}

func (s *recordingSink) Apply(_ context.Context, ch []federation.KeyChange) (federation.ChangesResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		s.fails++
		return federation.ChangesResult{}, errors.New("hub unreachable")
	}
	s.changes = append(s.changes, ch...)
	return federation.ChangesResult{Applied: len(ch)}, nil
}

func (s *recordingSink) snapshot() (bool, int, []federation.KeyChange) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.down, s.fails, slices.Clone(s.changes)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// TestPusherLosesNothing: while the sink fails, entries stay in the
// outbox (retried with backoff); once it recovers they arrive in order,
// as keyed hashes, and are acknowledged.
func TestPusherLosesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st := openStore(t)
	h := hasher(t)
	sink := &recordingSink{down: true}
	p, err := federation.NewPusher(federation.PusherConfig{Region: "us", Outbox: st, Hasher: h, Sink: sink, Batch: 2,
		Poll: 10 * time.Millisecond, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.Run(ctx) }()
	for _, n := range []string{"alice", "bob", "carol"} {
		if err := st.CreateUser(ctx, store.User{ID: "id-" + n, Username: n, PasswordHash: "x", Claims: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	p.Notify()
	waitFor(t, "retries", func() bool { _, fails, _ := sink.snapshot(); return fails >= 3 })
	if pending, err := st.PendingOutbox(ctx, 10); err != nil || len(pending) != 4 {
		t.Fatalf("outbox while the hub is down: %d entries, %v", len(pending), err)
	}
	sink.mu.Lock()
	sink.down = false
	sink.mu.Unlock()
	waitFor(t, "delivery", func() bool { _, _, ch := sink.snapshot(); return len(ch) == 4 })
	waitFor(t, "acknowledgement", func() bool { p, err := st.PendingOutbox(ctx, 10); return err == nil && len(p) == 0 })
	_, _, got := sink.snapshot()
	key := func(n string) string { k, _ := h.Key(n); return k.String() }
	want := []federation.KeyChange{{Op: "put", Key: key("alice")}, {Op: "put", Key: key("bob")}, {Op: "put", Key: key("carol")}, {Op: "delete", Key: key("bob")}}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

// TestApplyChanges: a region writes its own keys, cannot take over or
// delete another region's, and malformed input writes nothing.
func TestApplyChanges(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	h := hasher(t)
	k := func(n string) string { key, _ := h.Key(n); return key.String() }
	res, err := federation.ApplyChanges(ctx, st, "eu", []federation.KeyChange{{"put", k("a")}, {"put", k("b")}, {"delete", k("b")}, {"put", k("c")}})
	if err != nil || res.Applied != 4 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = federation.ApplyChanges(ctx, st, "us", []federation.KeyChange{{"put", k("a")}, {"delete", k("c")}, {"put", k("d")}})
	if err != nil || res != (federation.ChangesResult{Applied: 1, Conflicts: 1, Ignored: 1}) {
		t.Fatalf("%+v %v", res, err)
	}
	for _, bad := range [][]federation.KeyChange{{{"put", k("e")}, {"put", "xyz"}}, {{"put", k("e")}, {"rename", k("e")}}} {
		if _, err := federation.ApplyChanges(ctx, st, "us", bad); !errors.Is(err, federation.ErrBadChange) {
			t.Fatalf("bad input: %v", err)
		}
	}
	tb, _ := lookup.NewTable(h, st)
	for n, want := range map[string]string{"a": "eu", "c": "eu", "d": "us"} {
		if got, _ := tb.Resolve(ctx, n); got != want {
			t.Fatalf("%s in %q, want %s", n, got, want)
		}
	}
	if _, err := tb.Resolve(ctx, "e"); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatal("rejected batch wrote")
	}
}

// TestHTTPClientDialsOnlyFederationHosts: the back channel cannot be
// pointed at a host outside the configuration.
func TestHTTPClientDialsOnlyFederationHosts(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer srv.Close()
	c := federation.NewHTTPClient(federation.Routes{"hub.example": srv.Listener.Addr().String()}, federation.ClientOptions{})
	resp, err := c.Get("http://hub.example/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := c.Get(srv.URL); err == nil || !strings.Contains(err.Error(), "not a federation host") {
		t.Fatalf("dialed an unconfigured host: %v", err)
	}
}

// TestRPRejectsBeforeAnyRequest: a response naming another issuer
// (mix-up) or carrying an error is refused without calling anyone.
func TestRPRejectsBeforeAnyRequest(t *testing.T) {
	rp, err := federation.NewRP("https://hub.example", federation.Credentials{ClientID: "region-eu", ClientSecret: "s",
		RedirectURIs: []string{"https://eu.example" + federation.CallbackPath}}, federation.NewHTTPClient(nil, federation.ClientOptions{}), federation.RPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := federation.NewFlow()
	ctx := context.Background()
	cb := rp.RedirectURI("eu.example")
	for _, q := range []url.Values{{"code": {"c"}}, {"code": {"c"}, "iss": {"https://us.example"}}, {"code": {"c"}, "iss": {"https://hub.example/"}}} {
		if _, err := rp.Complete(ctx, q, f, cb); !errors.Is(err, federation.ErrIssuerMismatch) {
			t.Fatalf("%v: %v", q, err)
		}
	}
	var ae *federation.AuthError
	if _, err := rp.Complete(ctx, url.Values{"iss": {"https://hub.example"}, "error": {"access_denied"}}, f, cb); !errors.As(err, &ae) || ae.Code != "access_denied" {
		t.Fatalf("error response: %v", err)
	}
	if err := rp.Ready(ctx); !errors.Is(err, region.ErrFederationUnavailable) {
		t.Fatalf("unreachable provider: %v", err)
	}
}

func TestNewUpstreamValidates(t *testing.T) {
	c := codec(t)
	good := federation.UpstreamConfig{Region: "eu", Bases: []string{"https://eu.example"}, Topology: federation.TopologyHub,
		HubURL: "https://hub.example", Codec: c, CookieKey: bytes.Repeat([]byte{1}, 32), HTTPClient: http.DefaultClient}
	if _, err := federation.NewUpstream(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*federation.UpstreamConfig){
		"short key":       func(u *federation.UpstreamConfig) { u.CookieKey = []byte("short") },
		"unknown region":  func(u *federation.UpstreamConfig) { u.Region = "mars" },
		"bad topology":    func(u *federation.UpstreamConfig) { u.Topology = "star" },
		"mesh, no table":  func(u *federation.UpstreamConfig) { u.Topology = federation.TopologyMesh },
		"hub, bad issuer": func(u *federation.UpstreamConfig) { u.HubURL = "ftp://hub" },
		"no bases":        func(u *federation.UpstreamConfig) { u.Bases = nil },
	} {
		cfg := good
		mod(&cfg)
		if _, err := federation.NewUpstream(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
