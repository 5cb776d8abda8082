package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

func TestCrossRegionRouting(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{})
	app := f.Client("eu")
	rsUS := f.Client("us") // a resource server resident in us
	f.User("eu", "ada")
	verifier := oauth2.GenerateVerifier()

	// An authorize request for an eu client landing at us ends at eu.
	loc := f.LoginRedirect("us", app, "ada", verifier)
	code := loc.Query().Get("code")
	if code == "" || loc.Query().Get("iss") != fmt.Sprintf("http://id.localhost:%d", f.Port) {
		t.Fatalf("authorization response %s", loc)
	}

	// The eu code is redeemed at ap.
	s, oe, tok := f.Token("ap", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}})
	if s != 200 {
		t.Fatalf("code redemption through ap: %d %+v", s, oe)
	}
	at, rt := tok["access_token"].(string), tok["refresh_token"].(string)

	// The ID token verifies against the global issuer's discovery and JWKS,
	// whichever region serves them.
	for _, entry := range []string{"us", "ap"} {
		c, base := f.At(entry)
		ctx := oidc.ClientContext(context.Background(), c)
		p, err := oidc.NewProvider(ctx, base)
		if err != nil {
			t.Fatalf("discovery via %s: %v", entry, err)
		}
		if _, err := p.Verifier(&oidc.Config{ClientID: app.ID}).Verify(ctx, tok["id_token"].(string)); err != nil {
			t.Fatalf("ID token via %s: %v", entry, err)
		}
		// userinfo through this region.
		if _, err := p.UserInfo(ctx, oauth2.StaticTokenSource(&oauth2.Token{AccessToken: at, TokenType: "Bearer"})); err != nil {
			t.Fatalf("userinfo via %s: %v", entry, err)
		}
	}

	// Introspection through us and ap, by the app itself and by a resource
	// server resident in us (authenticated by us, answered by eu).
	for _, entry := range []string{"us", "ap", "eu"} {
		for _, caller := range []region.RegisteredClient{app, rsUS} {
			if s, m := f.Introspect(entry, caller, at); s != 200 || m["active"] != true {
				t.Fatalf("introspection via %s by %s: %d %v", entry, caller.Name, s, m)
			}
		}
	}

	// The refresh token is rotated at us.
	s, oe, tok2 := f.Token("us", app, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
	if s != 200 || tok2["refresh_token"] == rt {
		t.Fatalf("refresh through us: %d %+v", s, oe)
	}

	// Dereference through ap: opaque in, RFC 9068 JWT out.
	c, base := f.At("ap")
	s, oe, d := oidctest.PostForm(t, c, base+"/dereference", url.Values{"token": {tok2["access_token"].(string)}}, rsUS.ID, rsUS.Secret)
	if s != 200 || d["access_token"] == nil {
		t.Fatalf("dereference: %d %+v", s, oe)
	}
	// The JWT names eu's issuer and is signed by an eu key; it verifies
	// with the federation JWKS any region publishes.
	jws, err := jose.ParseSignedCompact(d["access_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
	}
	_ = json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &claims)
	issuers := map[string]string{}
	for i := range f.Cfg.Regions {
		issuers[f.Cfg.Regions[i].ID] = f.Cfg.Issuer(&f.Cfg.Regions[i])
	}
	if err := routing.CheckKeyRegion(jws.Signatures[0].Header.KeyID, claims.Iss, issuers); err != nil || claims.Iss != issuers["eu"] {
		t.Fatalf("dereferenced JWT: kid %s iss %s: %v", jws.Signatures[0].Header.KeyID, claims.Iss, err)
	}
	ks := fetchJWKS(t, c, base+"/keys")
	if _, err := jws.Verify(ks); err != nil {
		t.Fatalf("dereferenced JWT does not verify with the federation JWKS served by ap: %v", err)
	}

	// Revocation through ap; introspection through us sees it.
	s, _, _ = oidctest.PostForm(t, c, base+"/revoke", url.Values{"token": {tok2["access_token"].(string)}}, app.ID, app.Secret)
	if s != 200 {
		t.Fatalf("revocation through ap: %d", s)
	}
	if s, m := f.Introspect("us", app, tok2["access_token"].(string)); s != 200 || m["active"] != false {
		t.Fatalf("revoked token via us: %d %v", s, m)
	}
}

// TestConcurrentRedemption races the same code at eu and through us: exactly
// one redemption wins, every time.
func TestConcurrentRedemption(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "bob")
	for i := 0; i < 15; i++ {
		verifier := oauth2.GenerateVerifier()
		code := f.LoginRedirect("eu", app, "bob", verifier).Query().Get("code")
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {verifier}}
		var wins, losses atomic.Int64
		var wg sync.WaitGroup
		for _, entry := range []string{"eu", "us", "eu", "us", "ap"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch s, oe, _ := f.Token(entry, app, form); {
				case s == 200:
					wins.Add(1)
				case s == 400 && oe.Error == "invalid_grant":
					losses.Add(1)
				default:
					t.Errorf("unexpected answer %d %+v", s, oe)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || losses.Load() != 4 {
			t.Fatalf("round %d: %d successes, %d invalid_grant; want exactly one success", i, wins.Load(), losses.Load())
		}
	}
}

// TestRegionDown stops eu: its artifacts get 503 temporarily_unavailable
// within the configured deadline (never a guessed answer); us's are unaffected.
func TestRegionDown(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{})
	euApp, usApp := f.Client("eu"), f.Client("us")
	f.User("eu", "eve")
	f.User("us", "sam")
	v1, v2 := oauth2.GenerateVerifier(), oauth2.GenerateVerifier()
	c1 := f.LoginRedirect("eu", euApp, "eve", v1).Query().Get("code")
	c2 := f.LoginRedirect("us", usApp, "sam", v2).Query().Get("code")
	_, _, euTok := f.Token("eu", euApp, url.Values{"grant_type": {"authorization_code"}, "code": {c1}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v1}})
	_, _, usTok := f.Token("us", usApp, url.Values{"grant_type": {"authorization_code"}, "code": {c2}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v2}})

	f.Halt("eu")
	start := time.Now()
	s, m := f.Introspect("us", euApp, euTok["access_token"].(string))
	if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" {
		t.Fatalf("eu token with eu down: %d %v", s, m)
	}
	if d := time.Since(start); d > f.Cfg.Federation.RequestTimeout+time.Second {
		t.Fatalf("answered after %s, beyond the configured deadline", d)
	}
	if s, m := f.Introspect("ap", usApp, usTok["access_token"].(string)); s != 200 || m["active"] != true {
		t.Fatalf("us token while eu is down: %d %v", s, m)
	}
	if s, oe, _ := f.Token("ap", usApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {usTok["refresh_token"].(string)}}); s != 200 {
		t.Fatalf("us refresh while eu is down: %d %+v", s, oe)
	}
}

// TestOneTraceAcrossHop checks that a routed call's router span and the
// upstream's server span share one trace.
func TestOneTraceAcrossHop(t *testing.T) {
	f := fedtest.Start(t, fedtest.Options{Spans: true})
	app := f.Client("eu")
	f.User("eu", "tia")
	v := oauth2.GenerateVerifier()
	code := f.LoginRedirect("eu", app, "tia", v).Query().Get("code")
	_, _, tok := f.Token("eu", app, url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {fedtest.AppRedirect}, "code_verifier": {v}})
	f.Spans.Reset()
	// Send the call with a known trace context through us.
	c, base := f.At("us")
	req, _ := http.NewRequest(http.MethodPost, base+"/oauth/introspect", bytes.NewBufferString(url.Values{"token": {tok["access_token"].(string)}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(app.ID), url.QueryEscape(app.Secret))
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	servers := map[string]bool{}
	for _, sp := range f.Spans.GetSpans() {
		if sp.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" {
			servers[sp.SpanKind.String()] = true
		}
	}
	if !servers["server"] || !servers["client"] {
		t.Fatalf("spans in the trace: %v; want the router's client span and the upstream's server span", servers)
	}
	n := 0
	for _, sp := range f.Spans.GetSpans() {
		if sp.SpanContext.TraceID().String() == "4bf92f3577b34da6a3ce929d0e0e4736" && sp.SpanKind.String() == "server" {
			n++
		}
	}
	if n < 2 {
		t.Fatalf("%d server spans in the trace, want the entry region's and eu's", n)
	}
}

// fetchJWKS returns a key set as a JWS verification key.
func fetchJWKS(t testing.TB, c *http.Client, u string) *jose.JSONWebKeySet {
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return &set
}
