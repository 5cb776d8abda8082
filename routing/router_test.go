package routing

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/serve"
)

// seen records what reached a handler.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
	body []string
}

func (s *seen) handler(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.reqs = append(s.reqs, r.Clone(r.Context()))
		s.body = append(s.body, string(b))
		s.mu.Unlock()
		w.Header().Set("X-Served-By", name)
		_, _ = w.Write([]byte(name))
	})
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// counting wraps the upstream transport and counts every outbound attempt.
type counting struct {
	n    atomic.Int64
	next http.RoundTripper
}

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type fixture struct {
	codec   *Codec
	router  *Router
	local   *seen
	eu      *seen
	euSrv   *httptest.Server
	out     *counting
	euRoute *Router
}

// newFixture builds a router for region us whose upstream eu is a real
// router (with its own local handler) on a loopback listener.
func newFixture(t *testing.T, mutate func(*RouterConfig)) *fixture {
	f := &fixture{codec: testCodec(t), local: &seen{}, eu: &seen{}}
	var err error
	f.euRoute, err = NewRouter(keyed(RouterConfig{Local: "eu", Peers: []Peer{{Region: "us", URL: "http://us.id.test", Addr: "127.0.0.1:1"}}}),
		f.codec, f.eu.handler("eu"), quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	f.euSrv = httptest.NewServer(f.euRoute)
	t.Cleanup(f.euSrv.Close)
	cfg := RouterConfig{
		Local: "us",
		Peers: []Peer{
			{Region: "eu", URL: "http://eu.id.test:8080", Addr: f.euSrv.Listener.Addr().String()},
			{Region: "ap", URL: "http://ap.id.test:8080", Addr: "127.0.0.1:1"},
		},
		ConnectTimeout: time.Second, RequestTimeout: 5 * time.Second,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper { f.out = &counting{next: rt}; return f.out },
	}
	if mutate != nil {
		mutate(&cfg)
	}
	f.router, err = NewRouter(keyed(cfg), f.codec, f.local.handler("us"), quiet(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) mint(t *testing.T, k Kind, region string) string {
	s, err := f.codec.New(k, region)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func formReq(path string, form url.Values) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://id.test"+path, strings.NewReader(form.Encode()))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r
}

func fakeJWT(kid string) string {
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": kid})
	return base64.RawURLEncoding.EncodeToString(h) + ".eyJzdWIiOiJ4In0.c2ln"
}

func TestDecide(t *testing.T) {
	f := newFixture(t, nil)
	euCode, usCode := f.mint(t, KindCode, "eu"), f.mint(t, KindCode, "us")
	euRT, apAT := f.mint(t, KindRefresh, "eu"), f.mint(t, KindAccess, "ap")
	euClient, usClient := f.mint(t, KindClient, "eu"), f.mint(t, KindClient, "us")
	euAT := f.mint(t, KindAccess, "eu")
	euUser, euGroup := f.mint(t, KindUser, "eu"), f.mint(t, KindGroup, "eu")
	withBasic := func(r *http.Request, id string) *http.Request { r.SetBasicAuth(url.QueryEscape(id), "s"); return r }
	withBearer := func(r *http.Request, tok string) *http.Request {
		r.Header.Set("Authorization", "Bearer "+tok)
		return r
	}
	tests := []struct {
		name   string
		req    *http.Request
		action Action
		region string
		safe   bool
	}{
		{"authorize eu client", httptest.NewRequest("GET", "/authorize?client_id="+url.QueryEscape(euClient), nil), Proxy, "eu", false},
		{"authorize local client", httptest.NewRequest("GET", "/authorize?client_id="+url.QueryEscape(usClient), nil), Local, "us", false},
		{"authorize forged client", httptest.NewRequest("GET", "/authorize?client_id="+url.QueryEscape(flipChar(euClient)), nil), Local, "us", false},
		{"code from eu", formReq("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {euCode}}), Proxy, "eu", false},
		{"code from us", formReq("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {usCode}}), Local, "us", false},
		{"refresh from eu", formReq("/oauth/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {euRT}}), Proxy, "eu", false},
		{"client_credentials basic", withBasic(formReq("/oauth/token", url.Values{"grant_type": {"client_credentials"}}), euClient), Proxy, "eu", false},
		{"client_credentials post", formReq("/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {euClient}}), Proxy, "eu", false},
		{"introspect ap token", formReq("/oauth/introspect", url.Values{"token": {apAT}}), Proxy, "ap", true},
		{"revoke eu refresh", formReq("/revoke", url.Values{"token": {euRT}}), Proxy, "eu", false},
		{"userinfo eu bearer", withBearer(httptest.NewRequest("GET", "/userinfo", nil), euAT), Proxy, "eu", true},
		{"dereference eu", formReq("/dereference", url.Values{"token": {euAT}}), Proxy, "eu", true},
		{"jwt by kid", formReq("/oauth/introspect", url.Values{"token": {fakeJWT("eu-abc")}}), Proxy, "eu", true},
		{"jwt unknown kid region", formReq("/oauth/introspect", url.Values{"token": {fakeJWT("mars-abc")}}), Local, "us", false},
		{"flipped code", formReq("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {flipChar(euCode)}}), Local, "us", false},
		{"region swapped", formReq("/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {strings.Replace(euCode, ".eu.", ".ap.", 1)}}), Local, "us", false},
		{"url as region", formReq("/oauth/introspect", url.Values{"token": {strings.Replace(euAT, ".eu.", ".evil.example.", 1)}}), Local, "us", false},
		{"end_session by client_id", httptest.NewRequest("GET", "/end_session?client_id="+url.QueryEscape(euClient), nil), Proxy, "eu", false},
		{"end_session by id_token_hint", httptest.NewRequest("GET", "/end_session?id_token_hint="+fakeJWT("eu-abc"), nil), Proxy, "eu", false},
		{"end_session forged client", httptest.NewRequest("GET", "/end_session?client_id="+url.QueryEscape(flipChar(euClient)), nil), Local, "us", false},
		{"login page", httptest.NewRequest("GET", "/login?id=x", nil), Local, "us", false},
		{"discovery", httptest.NewRequest("GET", "/.well-known/openid-configuration", nil), Local, "us", false},
		{"scim get eu user", withBearer(httptest.NewRequest("GET", "/scim/v2/Users/"+euUser, nil), apAT), Proxy, "eu", true},
		{"scim patch eu user", withBearer(httptest.NewRequest("PATCH", "/scim/v2/Users/"+euUser, nil), apAT), Proxy, "eu", false},
		{"scim delete eu group", httptest.NewRequest("DELETE", "/scim/v2/Groups/"+euGroup, nil), Proxy, "eu", false},
		{"scim group id as a user", httptest.NewRequest("GET", "/scim/v2/Users/"+euGroup, nil), Local, "us", false},
		{"scim forged user id", withBearer(httptest.NewRequest("GET", "/scim/v2/Users/"+flipChar(euUser), nil), euAT), Local, "us", false},
		{"scim create by eu token", withBearer(httptest.NewRequest("POST", "/scim/v2/Users", nil), euAT), Proxy, "eu", false},
		{"scim list by ap token", withBearer(httptest.NewRequest("GET", "/scim/v2/Groups?filter=x", nil), apAT), Proxy, "ap", true},
		{"scim search by eu token", withBearer(httptest.NewRequest("POST", "/scim/v2/Users/.search", nil), euAT), Proxy, "eu", true},
		{"scim without token", httptest.NewRequest("POST", "/scim/v2/Users", nil), Local, "us", false},
		{"scim discovery with eu token", withBearer(httptest.NewRequest("GET", "/scim/v2/Schemas", nil), euAT), Proxy, "eu", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form := tt.req.URL.Query()
			if tt.req.Method == http.MethodPost {
				b, _ := io.ReadAll(tt.req.Body)
				pf, _ := url.ParseQuery(string(b))
				for k, v := range pf {
					form[k] = v
				}
			}
			d := f.router.Decide(tt.req, form)
			if d.Action != tt.action || d.Region != tt.region || d.Safe != tt.safe {
				t.Fatalf("Decide = %+v, want %v %s safe=%v", d, tt.action, tt.region, tt.safe)
			}
		})
	}
}

func flipChar(s string) string {
	b := []byte(s)
	i := strings.LastIndexByte(s, '.') + 3
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func TestForgedArtifactsNeverLeaveTheEdge(t *testing.T) {
	f := newFixture(t, nil)
	at := f.mint(t, KindAccess, "eu")
	other, _ := NewCodec([]string{"eu", "us", "ap", "zz"}, bytes.Repeat([]byte{9}, 32))
	foreign, _ := other.New(KindAccess, "eu")
	zz, _ := other.New(KindAccess, "zz")
	for name, tok := range map[string]string{
		"flipped":        flipChar(at),
		"foreign key":    foreign,
		"unknown region": zz,
		"url region":     strings.Replace(at, ".eu.", ".169.254.169.254.", 1),
		"host region":    strings.Replace(at, ".eu.", ".localhost:6379.", 1),
		"oversized":      at + strings.Repeat("x", 100000),
		"non-ascii":      strings.Replace(at, ".eu.", ".ëu.", 1),
		"empty":          "",
	} {
		t.Run(name, func(t *testing.T) {
			before := f.local.count()
			w := httptest.NewRecorder()
			f.router.ServeHTTP(w, formReq("/oauth/introspect", url.Values{"token": {tok}}))
			if got := f.out.n.Load(); got != 0 {
				t.Fatalf("%d outbound calls for a forged artifact", got)
			}
			if f.local.count() != before+1 {
				t.Fatal("forged artifact not answered locally")
			}
		})
	}
}

func TestProxyHop(t *testing.T) {
	f := newFixture(t, nil)
	code := f.mint(t, KindCode, "eu")
	form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "code_verifier": {"v"}}
	r := formReq("/oauth/token", form)
	r.Host = "id.test"
	r.SetBasicAuth("client", "secret")
	r.Header.Set("X-Forwarded-For", "6.6.6.6")
	r.Header.Set("Forwarded", "for=6.6.6.6")
	r.Header.Set(HopFromHeader, "eu")
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, r)
	if w.Code != 200 || w.Header().Get("X-Served-By") != "eu" {
		t.Fatalf("status %d served by %q", w.Code, w.Header().Get("X-Served-By"))
	}
	got := f.eu.reqs[0]
	if f.eu.body[0] != form.Encode() {
		t.Errorf("body changed: %q", f.eu.body[0])
	}
	if u, p, _ := got.BasicAuth(); u != "client" || p != "secret" {
		t.Errorf("client authentication not forwarded untouched")
	}
	if got.Host != "id.test" {
		t.Errorf("Host = %q, want the original host so the upstream answers with the same issuer", got.Host)
	}
	if strings.Contains(got.Header.Get("X-Forwarded-For"), "6.6.6.6") || got.Header.Get("Forwarded") != "" {
		t.Errorf("client-supplied forwarding headers reached the upstream: %v", got.Header)
	}
	if got.Header.Get(HopFromHeader) != "us" {
		t.Errorf("upstream saw hop-from %q, want us (verified by the upstream router)", got.Header.Get(HopFromHeader))
	}
}

func TestHopStopsLoops(t *testing.T) {
	f := newFixture(t, nil)
	// eu's router receives a hopped call for a us artifact: it must serve it
	// locally rather than bounce it back.
	at := f.mint(t, KindAccess, "us")
	r := formReq("/oauth/introspect", url.Values{"token": {at}})
	r.Header.Set(HopHeader, f.router.hop.sign("us", "eu", http.MethodPost, "/oauth/introspect", time.Now()))
	w := httptest.NewRecorder()
	f.euRoute.ServeHTTP(w, r)
	if w.Header().Get("X-Served-By") != "eu" {
		t.Fatal("hopped call was forwarded again")
	}
	// A forged hop header is ignored (and the call routed normally).
	r = formReq("/oauth/introspect", url.Values{"token": {at}})
	r.Header.Set(HopHeader, "v1;us;eu;"+time.Now().Format("20060102")+";forged")
	w = httptest.NewRecorder()
	f.euRoute.ServeHTTP(w, r)
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("forged hop: status %d, want the normal route (us unreachable here: 503)", w.Code)
	}
}

// TestHopSignedByTheCallingRegion plays region ap's compromise from eu's
// side and eu's from us's: a hop is accepted only with the signature of
// the region it names, for the method and path it was signed for, while
// fresh. Holding the routing key (every node has it) is not enough.
func TestHopSignedByTheCallingRegion(t *testing.T) {
	f := newFixture(t, nil)
	at := f.mint(t, KindAccess, "us")
	now := time.Now()
	apSigner := hopSigner{key: testHopPriv["ap"]}
	usSigner := hopSigner{key: testHopPriv["us"]}
	for _, tc := range []struct {
		name string
		hop  string
		ok   bool
	}{
		{"us signs as us", usSigner.sign("us", "eu", "POST", "/oauth/introspect", now), true},
		{"ap's key claims to be us", apSigner.sign("us", "eu", "POST", "/oauth/introspect", now), false},
		{"signed for another path", usSigner.sign("us", "eu", "POST", "/oauth/token", now), false},
		{"signed for another method", usSigner.sign("us", "eu", "GET", "/oauth/introspect", now), false},
		{"addressed to another region", usSigner.sign("us", "ap", "POST", "/oauth/introspect", now), false},
		{"expired", usSigner.sign("us", "eu", "POST", "/oauth/introspect", now.Add(-time.Minute)), false},
		{"unknown region", apSigner.sign("zz", "eu", "POST", "/oauth/introspect", now), false},
		{"v1 routing-key MAC", "v1;us;eu;" + strconv.FormatInt(now.Unix(), 10) + ";AAAAAAAAAAAAAAAAAAAAAA", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := formReq("/oauth/introspect", url.Values{"token": {at}})
			r.Header.Set(HopHeader, tc.hop)
			w := httptest.NewRecorder()
			f.euRoute.ServeHTTP(w, r)
			served := w.Header().Get("X-Served-By") == "eu"
			if served != tc.ok {
				t.Fatalf("served locally as a hop = %v, want %v (status %d)", served, tc.ok, w.Code)
			}
			if !tc.ok && w.Code != http.StatusServiceUnavailable {
				t.Fatalf("refused hop: status %d, want the normal route (us unreachable: 503)", w.Code)
			}
		})
	}
	// A hop accepted (and remembered) for one path is not a hop for
	// another path in the same second.
	ok := usSigner.sign("us", "eu", "POST", "/oauth/introspect", now)
	for _, path := range []string{"/oauth/introspect", "/userinfo"} {
		r := formReq(path, url.Values{})
		r.Header.Set(HopHeader, ok)
		f.euRoute.ServeHTTP(httptest.NewRecorder(), r)
	}
	f.eu.mu.Lock()
	last := f.eu.reqs[len(f.eu.reqs)-2:]
	f.eu.mu.Unlock()
	if last[0].Header.Get(HopFromHeader) != "us" || last[1].Header.Get(HopFromHeader) != "" {
		t.Fatalf("hop-from %q then %q, want us then none", last[0].Header.Get(HopFromHeader), last[1].Header.Get(HopFromHeader))
	}
}

// TestProxyAuthorize: an authorization request for another region's
// client is proxied there with its Host, never redirected: the browser
// stays on the host (and issuer) the client discovered.
func TestProxyAuthorize(t *testing.T) {
	f := newFixture(t, nil)
	client := f.mint(t, KindClient, "eu")
	q := "client_id=" + url.QueryEscape(client) + "&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=x&scope=openid"
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, httptest.NewRequest("GET", "http://us.id.test:8080/authorize?"+q, nil))
	if w.Code != http.StatusOK || w.Header().Get("X-Served-By") != "eu" || w.Header().Get("Location") != "" {
		t.Fatalf("status %d served by %q location %q", w.Code, w.Header().Get("X-Served-By"), w.Header().Get("Location"))
	}
	if n := f.eu.count(); n != 1 || f.eu.reqs[0].Host != "us.id.test:8080" {
		t.Fatalf("eu saw %d requests (host %v), want one with the original Host", n, f.eu.reqs)
	}
}

// deadAddr returns an address that refuses connections.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// resetAddr accepts connections, reads the request and drops it: the call
// was sent but never answered.
func resetAddr(t *testing.T) (string, *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			buf := make([]byte, 4096)
			_, _ = c.Read(buf)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String(), &n
}

// hangAddr accepts connections and never answers: a slow, not dead, region.
func hangAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

func TestFailover(t *testing.T) {
	dr := &seen{}
	drSrv := httptest.NewServer(dr.handler("eu-dr"))
	t.Cleanup(drSrv.Close)
	dead := deadAddr(t)
	reset, resetN := resetAddr(t)
	call := func(f *fixture, path string, form url.Values) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		f.router.ServeHTTP(w, formReq(path, form))
		return w
	}
	t.Run("unreachable region answered by DR", func(t *testing.T) {
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].DRAddr = dead, drSrv.Listener.Addr().String()
		})
		w := call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		if w.Header().Get("X-Served-By") != "eu-dr" {
			t.Fatalf("status %d body %s", w.Code, w.Body)
		}
		// A code redemption that never reached the primary may go to DR too.
		w = call(f, "/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}})
		if w.Header().Get("X-Served-By") != "eu-dr" {
			t.Fatalf("unsent redemption: status %d", w.Code)
		}
	})
	t.Run("code redemption never repeated after sending", func(t *testing.T) {
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].DRAddr = reset, drSrv.Listener.Addr().String()
		})
		before := dr.count()
		w := call(f, "/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}})
		if w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "temporarily_unavailable") {
			t.Fatalf("status %d body %s", w.Code, w.Body)
		}
		if dr.count() != before {
			t.Fatal("a sent code redemption was repeated at the DR site")
		}
		if resetN.Load() == 0 {
			t.Fatal("primary never reached")
		}
		// Introspection is safe to repeat: DR answers.
		w = call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		if w.Header().Get("X-Served-By") != "eu-dr" {
			t.Fatalf("introspection after reset: status %d", w.Code)
		}
	})
	t.Run("slow primary: safe calls answered by DR within the deadline", func(t *testing.T) {
		hang := hangAddr(t)
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].DRAddr = hang, drSrv.Listener.Addr().String()
			c.RequestTimeout = time.Second
		})
		start := time.Now()
		w := call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		if w.Header().Get("X-Served-By") != "eu-dr" || time.Since(start) >= time.Second {
			t.Fatalf("status %d after %s, want the DR answer within the 1s deadline", w.Code, time.Since(start))
		}
		before := dr.count()
		w = call(f, "/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}})
		if w.Code != http.StatusServiceUnavailable || dr.count() != before {
			t.Fatalf("slow primary, code redemption: status %d, DR calls %d; want 503 and none", w.Code, dr.count()-before)
		}
	})
	t.Run("no DR: 503 temporarily_unavailable", func(t *testing.T) {
		f := newFixture(t, func(c *RouterConfig) { c.Peers[0].Addr = dead })
		w := call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
			t.Fatalf("status %d", w.Code)
		}
		var e map[string]string
		_ = json.Unmarshal(w.Body.Bytes(), &e)
		if e["error"] != "temporarily_unavailable" {
			t.Fatalf("body %s", w.Body)
		}
	})
	t.Run("every primary address before the DR site", func(t *testing.T) {
		node2 := &seen{}
		node2Srv := httptest.NewServer(node2.handler("eu-2"))
		t.Cleanup(node2Srv.Close)
		drAddr := drSrv.Listener.Addr().String()
		tests := []struct {
			name  string
			addrs []string
			path  string
			form  func(f *fixture) url.Values
			want  string // X-Served-By, or "" for a 503
		}{
			{"node 1 refuses: introspection at node 2", []string{dead, node2Srv.Listener.Addr().String()}, "/oauth/introspect",
				func(f *fixture) url.Values { return url.Values{"token": {f.mint(t, KindAccess, "eu")}} }, "eu-2"},
			{"node 1 refuses: code redemption (never sent) at node 2", []string{dead, node2Srv.Listener.Addr().String()}, "/oauth/token",
				func(f *fixture) url.Values {
					return url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
				}, "eu-2"},
			{"node 1 took the redemption and dropped it: not repeated anywhere", []string{reset, node2Srv.Listener.Addr().String()}, "/oauth/token",
				func(f *fixture) url.Values {
					return url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
				}, ""},
			{"node 1 dropped introspection: node 2 answers", []string{reset, node2Srv.Listener.Addr().String()}, "/oauth/introspect",
				func(f *fixture) url.Values { return url.Values{"token": {f.mint(t, KindAccess, "eu")}} }, "eu-2"},
			{"every primary address refuses: DR", []string{dead, deadAddr(t)}, "/oauth/introspect",
				func(f *fixture) url.Values { return url.Values{"token": {f.mint(t, KindAccess, "eu")}} }, "eu-dr"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFixture(t, func(c *RouterConfig) {
					c.Peers[0].Addr, c.Peers[0].Addrs, c.Peers[0].DRAddrs = "", tt.addrs, []string{drAddr}
				})
				n2, d := node2.count(), dr.count()
				w := call(f, tt.path, tt.form(f))
				if got := w.Header().Get("X-Served-By"); got != tt.want || (tt.want == "" && w.Code != http.StatusServiceUnavailable) {
					t.Fatalf("served by %q (status %d), want %q", got, w.Code, tt.want)
				}
				if tt.want != "eu-dr" && dr.count() != d {
					t.Fatal("the DR site was called while a primary address could answer")
				}
				if tt.want == "" && node2.count() != n2 {
					t.Fatal("a sent code redemption was repeated at the second address")
				}
			})
		}
	})
	t.Run("an address with an open breaker is tried last, not given up", func(t *testing.T) {
		// A node back from a restart whose breaker is still open serves
		// while its peer is down (a rolling restart).
		back := &seen{}
		backSrv := httptest.NewServer(back.handler("eu-1"))
		t.Cleanup(backSrv.Close)
		tests := []struct {
			name string
			peer string
			path string
			form func(f *fixture) url.Values
			want string // X-Served-By, or "" for a 503
		}{
			{"peer refuses: introspection", dead, "/oauth/introspect",
				func(f *fixture) url.Values { return url.Values{"token": {f.mint(t, KindAccess, "eu")}} }, "eu-1"},
			{"peer refuses: code redemption (never sent)", dead, "/oauth/token",
				func(f *fixture) url.Values {
					return url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
				}, "eu-1"},
			{"peer took the redemption and dropped it: not repeated", reset, "/oauth/token",
				func(f *fixture) url.Values {
					return url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
				}, ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				node1 := backSrv.Listener.Addr().String()
				f := newFixture(t, func(c *RouterConfig) {
					c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{node1, tt.peer}
					c.BreakerThreshold, c.BreakerCooldown = 1, time.Hour
				})
				f.router.ups["eu"].breakers[node1].done(false, time.Now())
				before := back.count()
				w := call(f, tt.path, tt.form(f))
				if got := w.Header().Get("X-Served-By"); got != tt.want || (tt.want == "" && w.Code != http.StatusServiceUnavailable) {
					t.Fatalf("served by %q (status %d), want %q", got, w.Code, tt.want)
				}
				if tt.want == "" && back.count() != before {
					t.Fatal("a sent code redemption was repeated at the other node")
				}
			})
		}
	})
	t.Run("a draining address is tried after the site's others", func(t *testing.T) {
		drainingSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set(serve.DrainingHeader, "1")
			w.Header().Set("X-Served-By", "eu-1")
		}))
		t.Cleanup(drainingSrv.Close)
		other := &seen{}
		otherSrv := httptest.NewServer(other.handler("eu-2"))
		t.Cleanup(otherSrv.Close)
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{drainingSrv.Listener.Addr().String(), otherSrv.Listener.Addr().String()}
		})
		w := call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		if w.Header().Get("X-Served-By") != "eu-1" || w.Header().Get(serve.DrainingHeader) != "" {
			t.Fatalf("first call: served by %q, draining header %q passed on", w.Header().Get("X-Served-By"), w.Header().Get(serve.DrainingHeader))
		}
		for range 3 {
			code := url.Values{"grant_type": {"authorization_code"}, "code": {f.mint(t, KindCode, "eu")}}
			if w := call(f, "/oauth/token", code); w.Header().Get("X-Served-By") != "eu-2" {
				t.Fatalf("after the draining answer: served by %q, want the site's other node", w.Header().Get("X-Served-By"))
			}
		}
	})
	t.Run("caller cancellation never counts against an address", func(t *testing.T) {
		hang := hangAddr(t)
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr, c.Peers[0].Addrs = "", []string{hang, dead}
			c.BreakerThreshold, c.BreakerCooldown = 1, time.Hour
		})
		for range 3 {
			ctx, cancel := context.WithCancel(context.Background())
			r := formReq("/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}}).WithContext(ctx)
			time.AfterFunc(50*time.Millisecond, cancel)
			f.router.ServeHTTP(httptest.NewRecorder(), r)
		}
		if f.router.ups["eu"].breakers[hang].open(time.Now()) {
			t.Fatal("abandoned calls opened the breaker of the address they were waiting on")
		}
		b := f.router.ups["eu"].breakers[dead]
		b.mu.Lock()
		n := b.failures
		b.mu.Unlock()
		if n != 0 {
			t.Fatalf("the second address counted %d failures for calls abandoned at the first", n)
		}
	})
	t.Run("breaker opens and fails fast", func(t *testing.T) {
		f := newFixture(t, func(c *RouterConfig) {
			c.Peers[0].Addr = dead
			c.BreakerThreshold, c.BreakerCooldown = 3, time.Hour
		})
		for i := 0; i < 3; i++ {
			call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}})
		}
		n := f.out.n.Load()
		for i := 0; i < 10; i++ {
			if w := call(f, "/oauth/introspect", url.Values{"token": {f.mint(t, KindAccess, "eu")}}); w.Code != http.StatusServiceUnavailable {
				t.Fatalf("status %d", w.Code)
			}
		}
		if f.out.n.Load() != n {
			t.Fatalf("open breaker still dialled: %d more calls", f.out.n.Load()-n)
		}
	})
}

func TestBreakerHalfOpen(t *testing.T) {
	b := newBreaker(2, time.Minute)
	now := time.Now()
	b.done(false, now)
	b.done(false, now)
	if b.allow(now) || !b.open(now) {
		t.Fatal("breaker should be open")
	}
	later := now.Add(2 * time.Minute)
	if !b.allow(later) {
		t.Fatal("no trial call after cooldown")
	}
	if b.allow(later) {
		t.Fatal("two trial calls at once")
	}
	b.done(true, later)
	if !b.allow(later) || b.open(later) {
		t.Fatal("breaker did not close after a successful trial")
	}
}

func BenchmarkDecide(b *testing.B) {
	c := testCodec(b)
	rt, err := NewRouter(keyed(RouterConfig{Local: "us", Peers: []Peer{{Region: "eu", URL: "http://eu", Addr: "127.0.0.1:1"}}}), c, http.NotFoundHandler(), quiet(), nil)
	if err != nil {
		b.Fatal(err)
	}
	tok, _ := c.New(KindAccess, "eu")
	r := httptest.NewRequest("POST", "/oauth/introspect", nil)
	form := url.Values{"token": {tok}}
	b.ReportAllocs()
	for b.Loop() {
		if d := rt.Decide(r, form); d.Action != Proxy {
			b.Fatal(d)
		}
	}
}
