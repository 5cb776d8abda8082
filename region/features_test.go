package region_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/pquerna/otp/totp"
	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/routing"
)

// TestCodeFlowEndToEndPostgres is the full relying-party flow on the real
// PostgreSQL.
func TestCodeFlowEndToEndPostgres(t *testing.T) {
	testCodeFlow(t, startProvider(t, "us", openPostgres(t)))
}

func exchange(t *testing.T, n *testProvider, c region.RegisteredClient, code string) map[string]any {
	t.Helper()
	s, oe, m := postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirectURI}, "code_verifier": {testVerifier}}, c.ID, c.Secret)
	if s != 200 {
		t.Fatalf("code exchange: %d %+v", s, oe)
	}
	return m
}

func authURL(n *testProvider, clientID string) string {
	return n.URL + "/authorize?" + url.Values{"client_id": {clientID}, "response_type": {"code"}, "redirect_uri": {redirectURI},
		"scope": {"openid profile"}, "state": {"s"}, "code_challenge": {oauth2.S256ChallengeFromVerifier(testVerifier)}, "code_challenge_method": {"S256"}}.Encode()
}

func TestJWTAccessTokens(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("jo", "jo-password-123", nil)
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true, AccessTokenFormat: region.FormatJWT})
	loc := newBrowser(t).Login(authURL(n, c.ID), redirectURI, "jo", "jo-password-123")
	at := exchange(t, n, c, loc.Query().Get("code"))["access_token"].(string)

	// RFC 9068 shape, signed by a key that names the region.
	sig, err := jose.ParseSignedCompact(at, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("not a JWS: %v", err)
	}
	if kid := sig.Signatures[0].Header.KeyID; !strings.HasPrefix(kid, "eu-") {
		t.Fatalf("kid %q does not name the region", kid)
	}
	p, err := oidc.NewProvider(context.Background(), n.URL)
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Jti      string `json:"jti"`
		ClientID string `json:"client_id"`
	}
	tok, err := p.VerifierContext(context.Background(), &oidc.Config{SkipClientIDCheck: true}).Verify(context.Background(), at)
	if err != nil {
		t.Fatalf("JWT access token does not verify with the region's JWKS: %v", err)
	}
	_ = tok.Claims(&claims)
	if tg, err := n.Codec.Verify(claims.Jti); err != nil || tg.Kind != routing.KindTokenID || claims.ClientID != c.ID {
		t.Fatalf("jti %q client_id %q", claims.Jti, claims.ClientID)
	}
	// By value and by reference agree: introspection and userinfo accept it,
	// and revocation (by jti) ends it.
	s, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {at}}, c.ID, c.Secret)
	if s != 200 || m["active"] != true {
		t.Fatalf("introspection of JWT access token: %d %v", s, m)
	}
	if _, err := p.UserInfo(context.Background(), oauth2.StaticTokenSource(&oauth2.Token{AccessToken: at, TokenType: "Bearer"})); err != nil {
		t.Fatalf("userinfo with JWT access token: %v", err)
	}
	postForm(t, n.URL+"/revoke", url.Values{"token": {at}}, c.ID, c.Secret)
	if _, _, m := postForm(t, n.URL+"/oauth/introspect", url.Values{"token": {at}}, c.ID, c.Secret); m["active"] != false {
		t.Fatalf("revoked JWT access token still active: %v", m)
	}
}

func TestTOTPLogin(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	key, err := totp.Generate(totp.GenerateOpts{Issuer: "Meridian", AccountName: "otto"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := region.CreateUser(context.Background(), n.Store, region.UserSpec{Username: "otto", Password: "otto-password-1", TOTPSecret: key.Secret()}); err != nil {
		t.Fatal(err)
	}
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	b := newBrowser(t)
	stop := oidctest.StopAt(redirectURI)
	p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, c.ID)), stop))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"otto"}}))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"otto"}, "password": {"otto-password-1"}}))
	if !strings.Contains(p.Body, `name="code"`) {
		t.Fatalf("no TOTP step after the password: %s", p.Body)
	}
	wrong := oidctest.ReadPage(b.Submit(p, url.Values{"code": {"000000"}}))
	if !strings.Contains(wrong.Body, "not valid") {
		t.Fatal("a wrong TOTP code was not refused")
	}
	code, _ := totp.GenerateCode(key.Secret(), time.Now())
	resp := b.Follow(b.Submit(wrong, url.Values{"code": {code}}), stop)
	loc, _ := resp.Location()
	if loc == nil || loc.Query().Get("code") == "" {
		t.Fatalf("no code after TOTP: %d", resp.StatusCode)
	}
	m := exchange(t, n, c, loc.Query().Get("code"))
	idt, _ := jwt.ParseSigned(m["id_token"].(string), []jose.SignatureAlgorithm{jose.ES256})
	var cl struct {
		AMR []string `json:"amr"`
	}
	_ = idt.UnsafeClaimsWithoutVerification(&cl)
	if strings.Join(cl.AMR, " ") != "pwd otp mfa" {
		t.Fatalf("amr = %v", cl.AMR)
	}
}

func TestConsentForThirdPartyClients(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("cora", "cora-password-1", nil)
	third := n.addClient(region.ClientSpec{Name: "Third Party Co", RedirectURIs: []string{redirectURI}})
	stop := oidctest.StopAt(redirectURI)
	for _, decision := range []string{"deny", "allow"} {
		t.Run(decision, func(t *testing.T) {
			b := newBrowser(t)
			p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, third.ID)), stop))
			p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"cora"}}))
			p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"cora"}, "password": {"cora-password-1"}}))
			if !strings.Contains(p.Body, "Third Party Co") || !strings.Contains(p.Body, "openid") {
				t.Fatalf("no consent page: %s", p.Body)
			}
			resp := b.Follow(b.Submit(p, url.Values{"decision": {decision}}), stop)
			loc, _ := resp.Location()
			if decision == "deny" && (loc == nil || loc.Query().Get("error") != "access_denied" || loc.Query().Get("iss") == "") {
				t.Fatalf("deny: %v", loc)
			}
			if decision == "allow" && (loc == nil || loc.Query().Get("code") == "") {
				t.Fatalf("allow: %v", loc)
			}
		})
	}
}

func TestPrivateKeyJWT(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub := jose.JSONWebKey{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{pub}})
	c := n.addClient(region.ClientSpec{Name: "svc", GrantTypes: []string{region.GrantAuthorizationCode}, RedirectURIs: []string{redirectURI},
		JWKS: string(jwks), FirstParty: true})
	if c.Secret != "" || c.AuthMethod != region.AuthPrivateKey {
		t.Fatalf("private_key_jwt client got %q / %q", c.Secret, c.AuthMethod)
	}
	n.addUser("pk", "pk-password-12", nil)
	loc := newBrowser(t).Login(authURL(n, c.ID), redirectURI, "pk", "pk-password-12")
	assertion := func(key any, aud string) string {
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
		now := time.Now()
		s, _ := jwt.Signed(signer).Claims(jwt.Claims{Issuer: c.ID, Subject: c.ID, Audience: jwt.Audience{aud}, ID: oauth2.GenerateVerifier(),
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute))}).Serialize()
		return s
	}
	form := func(a string) url.Values {
		return url.Values{"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirectURI},
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"}, "client_assertion": {a}, "code_verifier": {testVerifier}}
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if s, oe, _ := postForm(t, n.URL+"/oauth/token", form(assertion(other, n.URL)), "", ""); s == 200 {
		t.Fatalf("assertion signed by another key accepted: %+v", oe)
	}
	// The failed attempt did not authenticate the client, so the same code
	// still redeems (RFC 6749 §4.1.3).
	if s, oe, _ := postForm(t, n.URL+"/oauth/token", form(assertion(priv, n.URL)), "", ""); s != 200 {
		t.Fatalf("private_key_jwt: %d %+v", s, oe)
	}
}

func TestKeyRotationKeepsOldTokensValid(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	n.addUser("kim", "kim-password-12", nil)
	c := n.addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	loc := newBrowser(t).Login(authURL(n, c.ID), redirectURI, "kim", "kim-password-12")
	old := exchange(t, n, c, loc.Query().Get("code"))["id_token"].(string)
	sig, _ := jose.ParseSignedCompact(old, []jose.SignatureAlgorithm{jose.ES256})
	oldKid := sig.Signatures[0].Header.KeyID
	newKid, _, err := n.P.Keys().Rotate(context.Background(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(n.URL + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	_ = json.NewDecoder(resp.Body).Decode(&set)
	resp.Body.Close()
	if len(set.Keys) != 2 || set.Keys[0].KeyID != newKid {
		t.Fatalf("after rotation /keys has %d keys (first %q), want the new and the retired one", len(set.Keys), set.Keys[0].KeyID)
	}
	p, _ := oidc.NewProvider(context.Background(), n.URL)
	if _, err := p.Verifier(&oidc.Config{ClientID: c.ID}).Verify(context.Background(), old); err != nil {
		t.Fatalf("ID token signed before rotation no longer verifies: %v", err)
	}
	loc = newBrowser(t).Login(authURL(n, c.ID), redirectURI, "kim", "kim-password-12")
	fresh := exchange(t, n, c, loc.Query().Get("code"))["id_token"].(string)
	sig, _ = jose.ParseSignedCompact(fresh, []jose.SignatureAlgorithm{jose.ES256})
	// The new key is published at once but signs only after the publish
	// delay (region/node TestSigningKeyRotationNoUnknownKid covers the switch).
	if sig.Signatures[0].Header.KeyID != oldKid {
		t.Fatalf("token right after rotation signed with %q, want the previous key %q until the publish delay passed", sig.Signatures[0].Header.KeyID, oldKid)
	}
	if _, _, err := n.P.Keys().Rotate(context.Background(), time.Minute); !errors.Is(err, region.ErrOverlapTooShort) {
		t.Fatalf("rotation with an overlap shorter than the ID token lifetime: %v, want ErrOverlapTooShort", err)
	}
}

func TestDynamicRegistration(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	reg := func(body string) (int, map[string]any) {
		req, _ := http.NewRequest(http.MethodPost, n.URL+"/register", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+testRegistrationToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, m
	}
	s, m := reg(`{"redirect_uris":["https://app.example/cb"],"client_name":"Reg"}`)
	if s != 201 || m["client_secret"] == nil {
		t.Fatalf("registration: %d %v", s, m)
	}
	if tg, err := n.Codec.Verify(m["client_id"].(string)); err != nil || tg.Region != "eu" || tg.Kind != routing.KindClient {
		t.Fatalf("registered client_id %v is not tagged for eu", m["client_id"])
	}
	for name, body := range map[string]string{
		"not json":           `redirect_uris=x`,
		"http non-loopback":  `{"redirect_uris":["http://app.example/cb"]}`,
		"fragment":           `{"redirect_uris":["https://app.example/cb#x"]}`,
		"relative":           `{"redirect_uris":["/cb"]}`,
		"implicit":           `{"redirect_uris":["https://app.example/cb"],"response_types":["token"]}`,
		"unknown grant":      `{"redirect_uris":["https://app.example/cb"],"grant_types":["password"]}`,
		"javascript scheme":  `{"redirect_uris":["javascript:alert(1)"]}`,
		"bad auth method":    `{"redirect_uris":["https://app.example/cb"],"token_endpoint_auth_method":"tls_client_auth"}`,
		"no redirect for ac": `{"client_name":"x"}`,
	} {
		t.Run(name, func(t *testing.T) {
			s, m := reg(body)
			if s != 400 || (m["error"] != "invalid_client_metadata" && m["error"] != "invalid_redirect_uri") {
				t.Fatalf("%d %v", s, m)
			}
		})
	}
}

func TestClientSecretPost(t *testing.T) {
	n := startProvider(t, "eu", openSQLite(t))
	c := n.addClient(region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}, AuthMethod: region.AuthSecretPost})
	s, oe, m := postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ID}, "client_secret": {c.Secret}}, "", "")
	if s != 200 || m["access_token"] == nil {
		t.Fatalf("client_secret_post: %d %+v", s, oe)
	}
	s, oe, _ = postForm(t, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ID}, "client_secret": {"wrong"}}, "", "")
	if s != 401 || oe.Error != "invalid_client" {
		t.Fatalf("wrong secret by post: %d %+v", s, oe)
	}
}
