package federate_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/store"
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

// partyKeys are test federation identities: every region's and the hub's.
func partyKeys(t *testing.T) map[string]*ecdsa.PrivateKey {
	t.Helper()
	m := map[string]*ecdsa.PrivateKey{}
	for _, p := range []string{"eu", "us", "ap", federation.PartyHub} {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		m[p] = k
	}
	return m
}

func keyring(keys map[string]*ecdsa.PrivateKey, self string) *federation.Keyring {
	kr := &federation.Keyring{Self: self, Key: keys[self], Public: map[string]*ecdsa.PublicKey{}}
	for p, k := range keys {
		kr.Public[p] = &k.PublicKey
	}
	return kr
}

// TestCredentials: every node derives the same client ids, tagged for the
// right region; federation clients are private_key_jwt clients holding the
// calling party's public key and no secret; EnsureClient is idempotent and
// repairs.
func TestCredentials(t *testing.T) {
	c := codec(t)
	keys := partyKeys(t)
	id1, err := federation.HubClientID(c, "us")
	if err != nil {
		t.Fatal(err)
	}
	id2, _ := federation.HubClientID(codec(t), "us")
	if id1 != id2 {
		t.Fatal("derivation is not deterministic")
	}
	if tag, err := c.VerifyKind(id1, routing.KindClient); err != nil || tag.Region != "us" {
		t.Fatalf("hub client id %s: %+v %v", id1, tag, err)
	}
	peer, _ := federation.PeerClientID(c, "eu", "us")
	if peer == id1 {
		t.Fatal("peer credentials collide")
	}
	if r, ok := federation.RegionFromClientID("region-eu"); !ok || r != "eu" {
		t.Fatal("RegionFromClientID")
	}
	if _, ok := federation.RegionFromClientID("region-EU/../x"); ok {
		t.Fatal("RegionFromClientID accepted a bad id")
	}
	hubPub := &keys[federation.PartyHub].PublicKey
	aud := "https://us.example" + federation.UserKeysPath
	authz, _ := federation.BearerAssertion(keys[federation.PartyHub], id1, aud)
	if err := federation.CheckHubAssertion(c, "us", authz, aud, hubPub); err != nil {
		t.Fatal(err)
	}
	if err := federation.CheckHubAssertion(c, "eu", authz, aud, hubPub); err == nil {
		t.Fatal("the hub's assertion for us accepted at eu")
	}
	forged, _ := federation.BearerAssertion(keys["eu"], id1, aud)
	if err := federation.CheckHubAssertion(c, "us", forged, aud, hubPub); err == nil {
		t.Fatal("an assertion signed by eu's key accepted as the hub's")
	}

	ctx := context.Background()
	st, _ := fedtest.OpenStore(t, fedtest.SQLite)
	for range 2 {
		if err := federate.EnsureHubClient(ctx, st, c, "us", "http://hub.example", hubPub); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.GetClient(ctx, id1)
	if err != nil || !slices.Equal(got.RedirectURIs, []string{"http://hub.example/callback/us"}) ||
		!slices.Contains(got.Scopes, region.ScopeFederation) || !got.FirstParty || got.AuthMethod != region.AuthPrivateKey ||
		len(got.SecretHash) != 0 || got.JWKS != federation.JWKS(hubPub) {
		t.Fatalf("hub client: %+v %v", got, err)
	}
	if err := federate.EnsureHubClient(ctx, st, c, "us", "https://hub.example.com", hubPub); err != nil {
		t.Fatal(err)
	}
	if got, _ := st.GetClient(ctx, id1); got.RedirectURIs[0] != "https://hub.example.com/callback/us" {
		t.Fatalf("not repaired: %v", got.RedirectURIs)
	}
	if err := federate.EnsurePeerClients(ctx, st, c, "us", map[string][]string{"eu": {"http://eu.example", "http://id.example"}, "us": {"x"}}, keyring(keys, "us")); err != nil {
		t.Fatal(err)
	}
	got, err = st.GetClient(ctx, peer)
	if err != nil || !slices.Equal(got.RedirectURIs, []string{"http://eu.example" + federation.CallbackPath, "http://id.example" + federation.CallbackPath}) ||
		got.JWKS != federation.JWKS(&keys["eu"].PublicKey) {
		t.Fatalf("peer client: %+v %v", got, err)
	}
}

func getKeys(t *testing.T, h http.Handler, authz, query string) (int, map[string]any, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, federation.UserKeysPath+"?"+query, nil)
	if authz != "" {
		req.Header.Set("Authorization", authz)
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
	st, _ := fedtest.OpenStore(t, fedtest.SQLite)
	ctx := context.Background()
	names := []string{"alice", "bob.smith", "carol", "dave", "erin"}
	for _, n := range names {
		if err := st.CreateUser(ctx, store.User{ID: "id-" + n, Username: n, PasswordHash: "x", Claims: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	pk := partyKeys(t)
	const issuer = "https://us.example"
	handler, err := federate.NewUserKeysHandler(federate.UserKeysConfig{Region: "us", Issuer: issuer, Codec: c,
		HubKey: &pk[federation.PartyHub].PublicKey, Hasher: h, Users: st, CursorKey: bytes.Repeat([]byte{1}, 32)})
	if err != nil {
		t.Fatal(err)
	}
	id, _ := federation.HubClientID(c, "us")
	euID, _ := federation.HubClientID(c, "eu")
	assert := func(signer, clientID, aud string) string {
		a, err := federation.BearerAssertion(pk[signer], clientID, aud)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	aud := issuer + federation.UserKeysPath
	authz := assert(federation.PartyHub, id, aud)
	for name, a := range map[string]string{
		"none":                     "",
		"basic":                    "Basic " + id,
		"eu's key as the hub":      assert("eu", id, aud),
		"eu's hub client":          assert(federation.PartyHub, euID, aud),
		"another audience":         assert(federation.PartyHub, id, "https://eu.example"+federation.UserKeysPath),
		"the assertion, truncated": authz[:len(authz)-5],
	} {
		if code, m, _ := getKeys(t, handler, a, ""); code != http.StatusUnauthorized || m["error"] != "invalid_client" {
			t.Errorf("%s: %d %v", name, code, m)
		}
	}
	for _, q := range []string{"limit=0", "limit=x", "limit=999999", "after=bob.smith", "after=AAAA"} {
		if code, m, _ := getKeys(t, handler, authz, q); code != http.StatusBadRequest || m["error"] != "invalid_request" {
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
		code, _, body := getKeys(t, handler, authz, q.Encode())
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

// TestPusherLosesNothing: while the sink fails, entries stay in the
// outbox (retried with backoff); once it recovers they arrive in order,
// as keyed hashes, and are acknowledged.
func TestPusherLosesNothing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, _ := fedtest.OpenStore(t, fedtest.SQLite)
	h := hasher(t)
	sink := &recordingSink{down: true}
	p, err := federate.NewPusher(federate.PusherConfig{Region: "us", Outbox: st, Hasher: h, Sink: sink, Batch: 2,
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
	fedtest.Eventually(t, "retries", func() bool { _, fails, _ := sink.snapshot(); return fails >= 3 })
	if pending, err := st.PendingOutbox(ctx, 10); err != nil || len(pending) != 4 {
		t.Fatalf("outbox while the hub is down: %d entries, %v", len(pending), err)
	}
	sink.mu.Lock()
	sink.down = false
	sink.mu.Unlock()
	fedtest.Eventually(t, "delivery", func() bool { _, _, ch := sink.snapshot(); return len(ch) == 4 })
	fedtest.Eventually(t, "acknowledgement", func() bool { p, err := st.PendingOutbox(ctx, 10); return err == nil && len(p) == 0 })
	_, _, got := sink.snapshot()
	key := func(n string) string { k, _ := h.Key(n); return k.String() }
	want := []federation.KeyChange{{Op: "put", Key: key("alice")}, {Op: "put", Key: key("bob")}, {Op: "put", Key: key("carol")}, {Op: "delete", Key: key("bob")}}
	if !slices.Equal(got, want) {
		t.Fatalf("delivered %v, want %v", got, want)
	}
}

func TestNewUpstreamValidates(t *testing.T) {
	c := codec(t)
	good := federate.LoginConfig{Region: "eu", Bases: []string{"https://eu.example"}, Topology: federation.TopologyHub,
		HubURL: "https://hub.example", Codec: c, Key: partyKeys(t)["eu"], CookieKey: bytes.Repeat([]byte{1}, 32), HTTPClient: http.DefaultClient}
	if _, err := federate.NewLogin(good); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*federate.LoginConfig){
		"short key":       func(u *federate.LoginConfig) { u.CookieKey = []byte("short") },
		"unknown region":  func(u *federate.LoginConfig) { u.Region = "mars" },
		"bad topology":    func(u *federate.LoginConfig) { u.Topology = "star" },
		"mesh, no table":  func(u *federate.LoginConfig) { u.Topology = federation.TopologyMesh },
		"hub, bad issuer": func(u *federate.LoginConfig) { u.HubURL = "ftp://hub" },
		"no bases":        func(u *federate.LoginConfig) { u.Bases = nil },
	} {
		cfg := good
		mod(&cfg)
		if _, err := federate.NewLogin(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
