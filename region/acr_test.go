package region_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// TestACRNamesWhatWasMet (issue 11 item 6): the ID token's acr is the
// first class of the request's acr_values that the login met, else the
// class it reached; a class that was not met is no error (acr_values is
// voluntary, OIDC Core §3.1.2.1). Discovery lists the classes; an
// oversized acr_values is an invalid_request to the application.
func TestACRNamesWhatWasMet(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{Name: "first", RedirectURIs: []string{redirectURI}, FirstParty: true})
	n.addUser("pat", "pat-password-123", nil)
	pwd, mfa := region.ACRPassword, region.ACRMFA

	for i, tc := range []struct {
		totp      bool
		acrValues string
		want      string
	}{
		{false, "", pwd},
		{false, mfa, pwd},
		{false, mfa + " " + pwd, pwd},
		{true, "", mfa},
		{true, pwd, pwd},
		{true, "urn:example:unknown " + mfa + " " + pwd, mfa},
		{true, "urn:example:unknown", mfa},
	} {
		extra := url.Values{}
		if tc.acrValues != "" {
			extra.Set("acr_values", tc.acrValues)
		}
		u := authorizeURL(n.URL, c.ID, extra)
		var loc *url.URL
		if tc.totp {
			// A user per case: a TOTP code is accepted once per time step.
			name := "tess" + string(rune('a'+i))
			secret := addTOTPUser(t, n, name, "tess-password-1")
			b := newBrowser(t)
			stop := oidctest.StopAt(redirectURI)
			p := oidctest.ReadPage(b.Follow(b.Get(u), stop))
			p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}}))
			p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}, "password": {"tess-password-1"}}))
			if p.Action != "/login/totp" {
				t.Fatalf("%q: no TOTP step (%d): %s", tc.acrValues, p.Status, p.Body)
			}
			resp := b.Follow(b.Submit(p, url.Values{"code": {codeAt(t, secret, time.Now())}}), stop)
			resp.Body.Close()
			var err error
			if loc, err = resp.Location(); err != nil {
				t.Fatalf("%q: no redirect after both factors: %d", tc.acrValues, resp.StatusCode)
			}
		} else {
			loc = newBrowser(t).Login(u, redirectURI, "pat", "pat-password-123")
		}
		if loc.Query().Get("code") == "" {
			t.Fatalf("totp=%v acr_values %q: no code: %s", tc.totp, tc.acrValues, loc)
		}
		m := exchange(t, n, c, loc.Query().Get("code"))
		idt, err := jwt.ParseSigned(m["id_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var cl struct {
			ACR string   `json:"acr"`
			AMR []string `json:"amr"`
		}
		_ = idt.UnsafeClaimsWithoutVerification(&cl)
		if cl.ACR != tc.want {
			t.Errorf("totp=%v acr_values %q: acr %q (amr %v), want %q", tc.totp, tc.acrValues, cl.ACR, cl.AMR, tc.want)
		}
	}

	// Discovery names the classes.
	resp, err := http.Get(n.URL + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		ACR []string `json:"acr_values_supported"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || !slices.Equal(doc.ACR, []string{pwd, mfa}) {
		t.Fatalf("acr_values_supported %v (%v)", doc.ACR, err)
	}

	// acr_values is kept with the request, so it is bounded: too many or
	// too long values are the application's invalid_request.
	for _, bad := range []string{
		strings.TrimSpace(strings.Repeat(pwd+" ", 9)),
		strings.Repeat("a", 256),
	} {
		b := newBrowser(t)
		resp := b.Follow(b.Get(authorizeURL(n.URL, c.ID, url.Values{"acr_values": {bad}})), oidctest.StopAt(redirectURI))
		resp.Body.Close()
		loc, err := resp.Location()
		if err != nil || loc.Query().Get("error") != "invalid_request" {
			t.Fatalf("acr_values of %d bytes: %d %v, want invalid_request to the application", len(bad), resp.StatusCode, loc)
		}
	}
}
