package routing

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

// TestFrontLeanPath serves us's router behind Front on a real listener:
// a call owned by another region is proxied without the instrumented chain
// (while lean holds) with every hop guarantee of the router (client
// Meridian-Hop-From stripped, signed hop verified by eu, body intact);
// calls served here, hopped calls and calls for which lean does not hold
// go through the chain, and the router in it does not read the body again.
func TestFrontLeanPath(t *testing.T) {
	f := newFixture(t, nil)
	srv, chain, lean := frontServer(t, f)
	euAT, usAT := f.mint(t, KindAccess, "eu"), f.mint(t, KindAccess, "us")
	post := func(path string, form url.Values, hdr map[string]string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	tests := []struct {
		name      string
		lean      bool
		form      url.Values
		hdr       map[string]string
		servedBy  string
		viaChain  bool
		status    int
		hopFromEU string // Meridian-Hop-From as eu's local handler saw it
	}{
		{"routed call, lean", true, url.Values{"token": {euAT}}, map[string]string{HopFromHeader: "ap"}, "eu", false, 200, "us"},
		{"routed call, not lean", false, url.Values{"token": {euAT}}, map[string]string{HopFromHeader: "ap"}, "eu", true, 200, "us"},
		{"local call, lean", true, url.Values{"token": {usAT}}, map[string]string{HopFromHeader: "eu"}, "us", true, 200, ""},
		{"forged hop header, lean", true, url.Values{"token": {euAT}}, map[string]string{HopHeader: "v2;eu;us;1;forged"}, "eu", true, 200, "us"},
		{"forged artifact, lean", true, url.Values{"token": {flipChar(euAT)}}, nil, "us", true, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lean.Store(tc.lean)
			c0, eu0, us0 := chain.Load(), f.eu.count(), f.local.count()
			resp, body := post("/oauth/introspect", tc.form, tc.hdr)
			if resp.StatusCode != tc.status || resp.Header.Get("X-Served-By") != tc.servedBy || body != tc.servedBy {
				t.Fatalf("status %d served by %q body %q, want %d by %s", resp.StatusCode, resp.Header.Get("X-Served-By"), body, tc.status, tc.servedBy)
			}
			if resp.Header.Get("X-Meridian-Entry") != "us" {
				t.Errorf("X-Meridian-Entry = %q", resp.Header.Get("X-Meridian-Entry"))
			}
			if got := chain.Load() - c0; (got == 1) != tc.viaChain || got > 1 {
				t.Errorf("instrumented chain ran %d times, want via chain %v", got, tc.viaChain)
			}
			var s *seen
			if tc.servedBy == "eu" {
				s = f.eu
				if f.eu.count() != eu0+1 {
					t.Fatal("eu did not serve the call")
				}
			} else {
				s = f.local
				if f.local.count() != us0+1 {
					t.Fatal("us did not serve the call")
				}
			}
			s.mu.Lock()
			got, gotBody := s.reqs[len(s.reqs)-1], s.body[len(s.body)-1]
			s.mu.Unlock()
			if gotBody != tc.form.Encode() {
				t.Errorf("body at %s = %q, want %q", tc.servedBy, gotBody, tc.form.Encode())
			}
			if h := got.Header.Get(HopFromHeader); h != tc.hopFromEU {
				t.Errorf("%s saw Meridian-Hop-From %q, want %q (set only after verification)", tc.servedBy, h, tc.hopFromEU)
			}
		})
	}
	// An oversized body gets the protocol's error on the lean path too.
	lean.Store(true)
	resp, body := post("/oauth/introspect", url.Values{"token": {euAT}, "pad": {strings.Repeat("a", maxForm)}}, nil)
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, "invalid_request") {
		t.Fatalf("oversized body: %d %s", resp.StatusCode, body)
	}
}

// TestFrontLeanHop serves us's router behind Front and sends it calls as
// eu's router would (signed hop header): a hop that verifies is served by
// the local handler without the instrumented chain while lean holds and
// the call carries no trace context; a traced call, lean not holding, and
// every hop value that does not verify for this call (signed for another
// path or another region, forged) go through the chain, where the router
// strips it. The local handler sees Meridian-Hop-From only for a verified
// hop, whatever the client sent.
func TestFrontLeanHop(t *testing.T) {
	f := newFixture(t, nil)
	srv, chain, lean := frontServer(t, f)
	usAT := f.mint(t, KindAccess, "us")
	toUS := f.euRoute.ups["us"]
	signed := f.euRoute.hopValue(toUS, http.MethodPost, "/oauth/introspect")
	otherPath := f.euRoute.hopValue(toUS, http.MethodPost, "/oauth/revoke")
	apRoute, err := NewRouter(keyed(RouterConfig{Local: "ap", Peers: []Peer{{Region: "eu", URL: "http://eu.id.test", Addr: "127.0.0.1:1"}}}),
		f.codec, http.NotFoundHandler(), quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	forEU := apRoute.hopValue(apRoute.ups["eu"], http.MethodPost, "/oauth/introspect") // ap → eu, replayed to us
	tests := []struct {
		name     string
		lean     bool
		hdr      map[string]string
		viaChain bool
		hopFrom  string
	}{
		{"verified hop, lean", true, map[string]string{HopHeader: signed, HopFromHeader: "ap"}, false, "eu"},
		{"verified hop, traced", true, map[string]string{HopHeader: signed, "Traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, true, "eu"},
		{"verified hop, not lean", false, map[string]string{HopHeader: signed}, true, "eu"},
		{"hop signed for another path", true, map[string]string{HopHeader: otherPath, HopFromHeader: "eu"}, true, ""},
		{"hop signed for another region", true, map[string]string{HopHeader: forEU}, true, ""},
		{"forged hop", true, map[string]string{HopHeader: "v2;eu;us;1;forged"}, true, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lean.Store(tc.lean)
			c0, us0 := chain.Load(), f.local.count()
			form := url.Values{"token": {usAT}}
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/oauth/introspect", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			for k, v := range tc.hdr {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "us" || resp.Header.Get("X-Meridian-Entry") != "us" {
				t.Fatalf("status %d body %q entry %q, want 200 from us", resp.StatusCode, body, resp.Header.Get("X-Meridian-Entry"))
			}
			if got := chain.Load() - c0; (got == 1) != tc.viaChain || got > 1 {
				t.Errorf("instrumented chain ran %d times, want via chain %v", got, tc.viaChain)
			}
			if f.local.count() != us0+1 {
				t.Fatal("us did not serve the call")
			}
			f.local.mu.Lock()
			got, gotBody := f.local.reqs[len(f.local.reqs)-1], f.local.body[len(f.local.body)-1]
			f.local.mu.Unlock()
			if h := got.Header.Get(HopFromHeader); h != tc.hopFrom {
				t.Errorf("local handler saw Meridian-Hop-From %q, want %q", h, tc.hopFrom)
			}
			if gotBody != form.Encode() {
				t.Errorf("body %q, want %q", gotBody, form.Encode())
			}
		})
	}
}

// frontServer serves f's us router behind Front on a real listener; chain
// counts the calls that went through the instrumented chain (next), lean
// is what Front's lean function answers.
func frontServer(t *testing.T, f *fixture) (*httptest.Server, *atomic.Int64, *atomic.Bool) {
	t.Helper()
	chain, lean := new(atomic.Int64), new(atomic.Bool)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chain.Add(1)
		f.router.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(f.router.Front(next, func(*http.Request) bool { return lean.Load() }))
	t.Cleanup(srv.Close)
	return srv, chain, lean
}
