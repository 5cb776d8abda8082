package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/webauthn"
	"github.com/chromedp/chromedp"
)

// virtualAuthenticator gives the browser a CTAP2 platform authenticator
// that holds discoverable credentials and verifies the user (CDP
// WebAuthn domain), as a phone or laptop with a passkey would.
func virtualAuthenticator(t *testing.T, ctx context.Context) webauthn.AuthenticatorID {
	var id webauthn.AuthenticatorID
	err := step(ctx, chromedp.ActionFunc(func(ctx context.Context) error {
		if err := webauthn.Enable().Do(ctx); err != nil {
			return err
		}
		var err error
		id, err = webauthn.AddVirtualAuthenticator(&webauthn.VirtualAuthenticatorOptions{
			Protocol: webauthn.AuthenticatorProtocolCtap2, Ctap2version: webauthn.Ctap2versionCtap21,
			Transport: webauthn.AuthenticatorTransportInternal, HasResidentKey: true, HasUserVerification: true,
			IsUserVerified: true, AutomaticPresenceSimulation: true,
		}).Do(ctx)
		return err
	}))
	if err != nil {
		t.Fatalf("virtual authenticator: %v", err)
	}
	return id
}

// where describes the browser's page for a failure message.
func where(ctx context.Context) string {
	var loc, body string
	_ = step(ctx, chromedp.Location(&loc), chromedp.Text("body", &body, chromedp.ByQuery))
	return loc + ": " + strings.Join(strings.Fields(body), " ")
}

func credentials(ctx context.Context, id webauthn.AuthenticatorID) ([]*webauthn.Credential, error) {
	var out []*webauthn.Credential
	err := step(ctx, chromedp.ActionFunc(func(ctx context.Context) error {
		var err error
		out, err = webauthn.GetCredentials(id).Do(ctx)
		return err
	}))
	return out, err
}

// TestBrowserPasskeyAcrossRegions registers a passkey in self-service,
// signs in with it through another region's entry, and removes it: grace
// is resident in us; the browser is steered to ap (GeoDNS); the demo app
// is registered in eu. /account on the global host (served by ap) signs
// grace in through the hub and sends the browser to us, her home region,
// which serves the page; the demo app's login goes eu → hub → us, where
// the passkey replaces the password.
func TestBrowserPasskeyAcrossRegions(t *testing.T) {
	f := startLocalFederation(t)
	ctx := browser(t, "127.0.0.13")
	defer shoot(t, ctx, "browser-passkey")
	auth := virtualAuthenticator(t, ctx)
	global := fmt.Sprintf("http://id.localhost:%d", f.Port)
	home := fmt.Sprintf("http://us.id.localhost:%d", f.Port)

	// 1. Self-service at the home region, reached through the global host.
	if err := step(ctx, chromedp.Navigate(global+"/account")); err != nil {
		t.Fatal(err)
	}
	if err := signIn(ctx, "grace", "meridian-demo"); err != nil {
		t.Fatalf("account sign-in: %v", err)
	}
	if who, err := text(ctx, "#account-user"); err != nil || who != "grace" {
		t.Fatalf("account page: %q %v; browser at %s", who, err, where(ctx))
	}
	var loc string
	if err := step(ctx, chromedp.Location(&loc)); err != nil || !strings.HasPrefix(loc, home+"/account") {
		t.Fatalf("/account served at %q, want the home region's host %s", loc, home)
	}
	if err := step(ctx, chromedp.SetValue(`#passkey-name`, "virtual", chromedp.ByID), chromedp.Click(`#passkey-go`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if msg, err := text(ctx, "#account-message"); err != nil || !strings.Contains(msg, "passkey was added") {
		t.Fatalf("after registering: %q %v", msg, err)
	}
	if list, _ := text(ctx, "#passkeys"); !strings.Contains(list, "virtual") {
		t.Fatalf("passkey list: %q", list)
	}
	creds, err := credentials(ctx, auth)
	if err != nil || len(creds) != 1 || !creds[0].IsResidentCredential || creds[0].RpID != "id.localhost" {
		t.Fatalf("authenticator holds %+v (%v), want one discoverable credential for id.localhost", creds, err)
	}

	// 2. A new browser session (cookies gone, the authenticator kept): the
	// demo app's login through ap's entry, the hub and us, with the passkey.
	if err := step(ctx, network.ClearBrowserCookies()); err != nil {
		t.Fatal(err)
	}
	if err := step(ctx, chromedp.Navigate(f.DemoURL+"/"), chromedp.Click(`#login`, chromedp.ByID),
		chromedp.WaitVisible(`#username`, chromedp.ByID),
		chromedp.SendKeys(`#username`, "grace", chromedp.ByID), chromedp.Submit(`#username`, chromedp.ByID),
		chromedp.WaitVisible(`#use-passkey`, chromedp.ByID), chromedp.Click(`#use-passkey`, chromedp.ByID),
		chromedp.WaitVisible(`#passkey-go`, chromedp.ByID), chromedp.Click(`#passkey-go`, chromedp.ByID)); err != nil {
		t.Fatalf("passkey login pages: %v", err)
	}
	claims, err := text(ctx, "#claims")
	if err != nil {
		t.Fatalf("no claims after the passkey login: %v; browser at %s", err, where(ctx))
	}
	if !strings.Contains(claims, `"hwk"`) || !strings.Contains(claims, `"mfa"`) || strings.Contains(claims, `"pwd"`) {
		t.Fatalf("amr of a passkey login should name hwk and mfa, not pwd: %s", claims)
	}
	if ui, _ := text(ctx, "#userinfo"); !strings.Contains(ui, "grace@us.example") {
		t.Fatalf("userinfo: %s", ui)
	}
	creds, err = credentials(ctx, auth)
	if err != nil || len(creds) != 1 || creds[0].SignCount < 2 {
		t.Fatalf("the credential should have signed twice or more (registration, login): %+v %v", creds, err)
	}

	// 3. Remove it at the home region (the passkey sign-in is recent).
	if err := step(ctx, chromedp.Navigate(home+"/account"), chromedp.WaitVisible(`.remove-passkey`, chromedp.ByQuery),
		chromedp.Click(`.remove-passkey`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if msg, err := text(ctx, "#account-message"); err != nil || !strings.Contains(msg, "removed") {
		t.Fatalf("after removing: %q %v", msg, err)
	}
	if list, _ := text(ctx, "#passkeys"); strings.Contains(list, "virtual") {
		t.Fatalf("passkey still listed: %q", list)
	}
	// The removed passkey no longer signs in: the assertion is refused.
	if err := step(ctx, network.ClearBrowserCookies(), chromedp.Navigate(f.DemoURL+"/"), chromedp.Click(`#login`, chromedp.ByID),
		chromedp.WaitVisible(`#username`, chromedp.ByID),
		chromedp.SendKeys(`#username`, "grace", chromedp.ByID), chromedp.Submit(`#username`, chromedp.ByID),
		chromedp.WaitVisible(`#use-passkey`, chromedp.ByID), chromedp.Click(`#use-passkey`, chromedp.ByID),
		chromedp.WaitVisible(`#passkey-go`, chromedp.ByID), chromedp.Click(`#passkey-go`, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if msg, err := text(ctx, ".err"); err != nil || !strings.Contains(msg, "could not be used") {
		t.Fatalf("a removed passkey: %q %v; browser at %s", msg, err, where(ctx))
	}
}
