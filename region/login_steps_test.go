package region_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/pquerna/otp/totp"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
)

// addTOTPUser creates a user enrolled in TOTP and returns the TOTP secret.
func addTOTPUser(t *testing.T, n *testProvider, name, password string) string {
	t.Helper()
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Meridian", AccountName: name})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := region.CreateUser(context.Background(), n.Store, region.UserSpec{Username: name, Password: password, TOTPSecret: key.Secret()}); err != nil {
		t.Fatal(err)
	}
	return key.Secret()
}

// totpPage walks a fresh authorization request through the username and
// password pages and returns the TOTP page the password step answers.
func totpPage(t *testing.T, b *oidctest.Browser, n *testProvider, clientID, name, password string) oidctest.Page {
	t.Helper()
	p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, clientID)), oidctest.StopAt(redirectURI)))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}}))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}, "password": {password}}))
	if p.Action != "/login/totp" || p.Hidden.Get("state") == "" {
		t.Fatalf("no TOTP step after the password (%d): %s", p.Status, p.Body)
	}
	return p
}

func codeAt(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCode(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// consentPage continues from the TOTP page with a valid code.
func consentPage(t *testing.T, b *oidctest.Browser, p oidctest.Page, secret string) oidctest.Page {
	t.Helper()
	c := oidctest.ReadPage(b.Submit(p, url.Values{"code": {codeAt(t, secret, time.Now())}}))
	if c.Action != "/consent" || c.Hidden.Get("state") == "" {
		t.Fatalf("no consent page after the TOTP step (%d): %s", c.Status, c.Body)
	}
	return c
}

// TestLoginStateBoundToStep posts the sealed state minted at each step to
// every step that could take it. Only the intended pair moves the login on;
// in particular the state the password step hands the TOTP page never
// completes a login at /consent (issue 11 item 1).
func TestLoginStateBoundToStep(t *testing.T) {
	// The region federates (hub topology), so its federated callback is
	// live: a login state posted there must not complete anything either.
	n, _ := startConfiguredNode(t, "eu", openSQLite(t), func(cfg *region.Config, base string) {
		fedKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		up, err := federate.NewLogin(federate.LoginConfig{Region: "eu", Bases: []string{base}, Topology: federation.TopologyHub,
			HubURL: "http://127.0.0.1:1", Codec: newCodec(t), Key: fedKey, CookieKey: cfg.CookieKey, HTTPClient: http.DefaultClient})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Federator = up
	})
	// A third-party client, so that every login meets the consent step.
	c := n.addClient(region.ClientSpec{Name: "third", RedirectURIs: []string{redirectURI}})
	stop := oidctest.StopAt(redirectURI)

	sources := []string{"password", "consent"}
	targets := []string{"/login/password", "/login/totp", "/consent", "/login/federated/callback"}
	intended := map[[2]string]bool{{"password", "/login/totp"}: true, {"consent", "/consent"}: true}
	i := 0
	for _, src := range sources {
		for _, dst := range targets {
			i++
			t.Run(src+"→"+dst, func(t *testing.T) {
				name := "mfa" + string(rune('a'+i))
				secret := addTOTPUser(t, n, name, "correct-horse-1")
				b := newBrowser(t)
				p := totpPage(t, b, n, c.ID, name, "correct-horse-1")
				if src == "consent" {
					p = consentPage(t, b, p, secret)
				}
				form := url.Values{"id": {p.Hidden.Get("id")}, "csrf": {p.Hidden.Get("csrf")}, "state": {p.Hidden.Get("state")}}
				var resp *http.Response
				switch dst {
				case "/login/password":
					form.Set("username", name)
					resp = b.Post(n.URL+dst, form)
				case "/login/totp":
					// The next time step's code: valid, and never used before.
					form.Set("code", codeAt(t, secret, time.Now().Add(30*time.Second)))
					resp = b.Post(n.URL+dst, form)
				case "/consent":
					form.Set("decision", "allow")
					resp = b.Post(n.URL+dst, form)
				case "/login/federated/callback":
					resp = b.Get(n.URL + dst + "?" + form.Encode())
				}
				resp = b.Follow(resp, stop)
				if resp.StatusCode == http.StatusNotFound {
					t.Fatalf("%s is not served", dst)
				}
				var advanced string
				if loc, err := resp.Location(); err == nil && strings.HasPrefix(loc.String(), redirectURI) && loc.Query().Get("code") != "" {
					advanced = "an authorization code"
					resp.Body.Close()
				} else if pg := oidctest.ReadPage(resp); pg.Action == "/consent" && pg.Hidden.Get("state") != "" {
					advanced = "the consent page"
				}
				if want := intended[[2]string{src, dst}]; want && advanced == "" {
					t.Fatalf("the intended step refused its own state (status %d)", resp.StatusCode)
				} else if !want && advanced != "" {
					t.Fatalf("a state minted at the %s step, posted to %s, reached %s", src, dst, advanced)
				}
			})
		}
	}
}

// TestTOTPUserNeedsBothFactors: a TOTP user of a first-party client (no
// consent page) gets a code only after the TOTP step, with amr naming both
// factors; the password step's state posted straight to /consent gets none.
func TestTOTPUserNeedsBothFactors(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{Name: "first", RedirectURIs: []string{redirectURI}, FirstParty: true})
	secret := addTOTPUser(t, n, "tess", "tess-password-1")
	stop := oidctest.StopAt(redirectURI)

	b := newBrowser(t)
	p := totpPage(t, b, n, c.ID, "tess", "tess-password-1")
	skip := url.Values{"id": {p.Hidden.Get("id")}, "csrf": {p.Hidden.Get("csrf")}, "state": {p.Hidden.Get("state")}, "decision": {"allow"}}
	resp := b.Follow(b.Post(n.URL+"/consent", skip), stop)
	if loc, err := resp.Location(); err == nil && loc.Query().Get("code") != "" {
		t.Fatal("the password alone produced an authorization code for a TOTP user")
	}
	resp.Body.Close()

	resp = b.Follow(b.Submit(p, url.Values{"code": {codeAt(t, secret, time.Now())}}), stop)
	loc, err := resp.Location()
	if err != nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code after both factors: %d", resp.StatusCode)
	}
	resp.Body.Close()
	m := exchange(t, n, c, loc.Query().Get("code"))
	idt, err := jwt.ParseSigned(m["id_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var cl struct {
		AMR []string `json:"amr"`
	}
	_ = idt.UnsafeClaimsWithoutVerification(&cl)
	if strings.Join(cl.AMR, " ") != "pwd otp mfa" {
		t.Fatalf("amr = %v, want pwd otp mfa", cl.AMR)
	}
}

// TestSessionBeforeTOTPEnrolment: an SSO session made with the password
// alone, before the user enrolled TOTP, does not issue a code afterwards:
// the next authorization asks for the code (prompt=none gets
// login_required), and completes with both factors.
func TestSessionBeforeTOTPEnrolment(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{Name: "first", RedirectURIs: []string{redirectURI}, FirstParty: true})
	u := n.addUser("eve", "eve-password-1", nil)
	b := newBrowser(t)
	if loc := b.Login(authURL(n, c.ID), redirectURI, "eve", "eve-password-1"); loc.Query().Get("code") == "" {
		t.Fatal("no code for the password-only login")
	}
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Meridian", AccountName: "eve"})
	if err != nil {
		t.Fatal(err)
	}
	u.TOTPSecret = key.Secret()
	if err := n.Store.UpdateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	stop := oidctest.StopAt(redirectURI)

	resp := b.Follow(b.Get(authURL(n, c.ID)+"&prompt=none"), stop)
	loc, err := resp.Location()
	resp.Body.Close()
	if err != nil || loc.Query().Get("code") != "" || loc.Query().Get("error") != "login_required" {
		t.Fatalf("prompt=none with a password-only session after TOTP enrolment: %v", loc)
	}

	p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, c.ID)), stop))
	if p.Action != "/login/totp" {
		t.Fatalf("the session was reused without the TOTP step (%d): %.300s", p.Status, p.Body)
	}
	if !gotCode(b, b.Submit(p, url.Values{"code": {codeAt(t, key.Secret(), time.Now())}})) {
		t.Fatal("no code after the TOTP step-up")
	}
}
