package federation_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/memstore"
)

// TestApplyChanges: a region writes its own keys, cannot take over or
// delete another region's, and malformed input writes nothing.
func TestApplyChanges(t *testing.T) {
	ctx := context.Background()
	st := memstore.New()
	h := hasher(t)
	k := func(n string) string { key, _ := h.Key(n); return key.String() }
	res, err := federation.ApplyChanges(ctx, st, "eu", []federation.KeyChange{{Op: "put", Key: k("a")}, {Op: "put", Key: k("b")}, {Op: "delete", Key: k("b")}, {Op: "put", Key: k("c")}})
	if err != nil || res.Applied != 4 {
		t.Fatalf("%+v %v", res, err)
	}
	res, err = federation.ApplyChanges(ctx, st, "us", []federation.KeyChange{{Op: "put", Key: k("a")}, {Op: "delete", Key: k("c")}, {Op: "put", Key: k("d")}})
	if err != nil || res != (federation.ChangesResult{Applied: 1, Conflicts: 1, Ignored: 1}) {
		t.Fatalf("%+v %v", res, err)
	}
	for _, bad := range [][]federation.KeyChange{{{Op: "put", Key: k("e")}, {Op: "put", Key: "xyz"}}, {{Op: "put", Key: k("e")}, {Op: "rename", Key: k("e")}}} {
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
	c := federation.NewHTTPClient(federation.Routes{"hub.example": {srv.Listener.Addr().String()}}, federation.ClientOptions{})
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
	rp, err := federation.NewRP("https://hub.example", federation.Credentials{ClientID: "region-eu", Key: testKey(t),
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
	if err := rp.Ready(ctx); !errors.Is(err, federation.ErrUnavailable) {
		t.Fatalf("unreachable provider: %v", err)
	}
}

func hasher(t *testing.T) *lookup.Hasher {
	t.Helper()
	h, err := lookup.NewHasher(bytes.Repeat([]byte{5}, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func testKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBackChannelLeavesADrainingNode: once a node answers that it drains
// (as every node does during federation.drain_period), the back channel
// sends its next calls to the site's other address, before the node stops
// accepting.
func TestBackChannelLeavesADrainingNode(t *testing.T) {
	served := func(name string, draining bool) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining {
				w.Header().Set(serve.DrainingHeader, "1")
			}
			_, _ = w.Write([]byte(name))
		}))
		t.Cleanup(s.Close)
		return s
	}
	node1, node2 := served("node1", true), served("node2", false)
	c := federation.NewHTTPClient(federation.Routes{"eu.id.example": {node1.Listener.Addr().String(), node2.Listener.Addr().String()}},
		federation.ClientOptions{})
	get := func() string {
		resp, err := c.Post("http://eu.id.example/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("x=1"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "node1" {
		t.Fatalf("first call served by %s, want node1 (the first address)", got)
	}
	for range 3 {
		if got := get(); got != "node2" {
			t.Fatalf("after node1 answered that it drains: served by %s, want node2", got)
		}
	}
}

// TestBackChannelResendsARefusedCall: a call a node refused as it shut
// down (503 with serve.RefusedHeader: it ran nothing) is sent once more,
// POST body and all, and the site's other node answers; any other 503 is
// the caller's answer.
func TestBackChannelResendsARefusedCall(t *testing.T) {
	var refusedN, busyN, node2N atomic.Int64
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refusedN.Add(1)
		w.Header().Set(serve.DrainingHeader, "1")
		w.Header().Set(serve.RefusedHeader, "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(refusing.Close)
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		busyN.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(busy.Close)
	node2 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		node2N.Add(1)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(append([]byte("node2:"), b...))
	}))
	t.Cleanup(node2.Close)
	post := func(c *http.Client) (int, string) {
		resp, err := c.Post("http://eu.id.example/oauth/token", "application/x-www-form-urlencoded", strings.NewReader("x=1"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	c := federation.NewHTTPClient(federation.Routes{"eu.id.example": {refusing.Listener.Addr().String(), node2.Listener.Addr().String()}},
		federation.ClientOptions{})
	if code, body := post(c); code != http.StatusOK || body != "node2:x=1" || refusedN.Load() != 1 || node2N.Load() != 1 {
		t.Fatalf("refused call: %d %q (refusing node %d calls, node 2 %d); want node 2's answer to the same body",
			code, body, refusedN.Load(), node2N.Load())
	}
	c = federation.NewHTTPClient(federation.Routes{"eu.id.example": {busy.Listener.Addr().String(), node2.Listener.Addr().String()}},
		federation.ClientOptions{})
	if code, _ := post(c); code != http.StatusServiceUnavailable || busyN.Load() != 1 || node2N.Load() != 1 {
		t.Fatalf("a plain 503: %d (busy node %d calls, node 2 %d); want the 503, not repeated", code, busyN.Load(), node2N.Load()-1)
	}
}

func TestIdleFor(t *testing.T) {
	for _, tt := range []struct{ drain, max, want time.Duration }{
		{0, 90 * time.Second, 90 * time.Second},
		{50 * time.Second, 90 * time.Second, 25 * time.Second},
		{2 * time.Second, time.Minute, time.Second},
		{10 * time.Minute, 90 * time.Second, 90 * time.Second},
	} {
		if got := federation.IdleFor(tt.drain, tt.max); got != tt.want {
			t.Errorf("IdleFor(%s, %s) = %s, want %s", tt.drain, tt.max, got, tt.want)
		}
	}
}

// TestBackChannelLetsGoOfIdleConnections: a connection idle for longer
// than IdleFor is not reused (a node closes those still idle when its
// drain ends); one idle for less is.
func TestBackChannelLetsGoOfIdleConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) }))
	t.Cleanup(srv.Close)
	c := federation.NewHTTPClient(federation.Routes{"eu.id.example": {srv.Listener.Addr().String()}},
		federation.ClientOptions{IdleFor: 200 * time.Millisecond})
	reused := func() bool {
		var got bool
		req, _ := http.NewRequest(http.MethodPost, "http://eu.id.example/x", strings.NewReader("x=1"))
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { got = i.Reused }}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return got
	}
	reused()
	if !reused() {
		t.Fatal("a connection idle for a moment was not reused")
	}
	time.Sleep(400 * time.Millisecond)
	if reused() {
		t.Fatal("a connection idle for longer than IdleFor was reused")
	}
}
