package region_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/go-webauthn/webauthn/protocol/webauthncbor"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
)

// The test relying party: passkey ceremonies on test listeners (an IP
// address, which WebAuthn has no relying party for) are checked against
// this id and origin, which the software authenticator below asserts.
const (
	testRPID   = "localhost"
	testOrigin = "http://localhost"
)

func withPasskeys(cfg *region.Config, _ string) {
	cfg.Passkeys = region.PasskeyOptions{RPID: testRPID, Origins: []string{testOrigin}}
	cfg.Account.ReauthWindow = time.Hour
}

var b64 = base64.RawURLEncoding

// softKey is a software authenticator holding one ES256 credential: it
// does what a browser and a security key do, byte for byte (attestation
// "none"), so the region's WebAuthn verification runs for real over HTTP.
type softKey struct {
	key    *ecdsa.PrivateKey
	id     []byte
	user   []byte // user handle the credential was created for
	origin string
}

func newSoftKey(t *testing.T) *softKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := make([]byte, 32)
	_, _ = rand.Read(id)
	return &softKey{key: k, id: id, origin: testOrigin}
}

var optionsRE = regexp.MustCompile(`data-options="([^"]*)"`)

// pageOptions returns a page's WebAuthn options (the publicKey member).
func pageOptions(t *testing.T, p oidctest.Page) map[string]any {
	t.Helper()
	m := optionsRE.FindStringSubmatch(p.Body)
	if m == nil {
		t.Fatalf("no passkey options on the page (%d): %s", p.Status, p.Body)
	}
	var v struct {
		PublicKey map[string]any `json:"publicKey"`
	}
	if err := json.Unmarshal([]byte(html.UnescapeString(m[1])), &v); err != nil {
		t.Fatal(err)
	}
	return v.PublicKey
}

func (s *softKey) clientData(typ, challenge string) []byte {
	b, _ := json.Marshal(map[string]any{"type": typ, "challenge": challenge, "origin": s.origin, "crossOrigin": false})
	return b
}

func authData(flags byte, counter uint32, attested []byte) []byte {
	h := sha256.Sum256([]byte(testRPID))
	out := append(h[:], flags)
	out = binary.BigEndian.AppendUint32(out, counter)
	return append(out, attested...)
}

// create answers creation options with an attestation (none).
func (s *softKey) create(t *testing.T, opts map[string]any) string {
	t.Helper()
	user := opts["user"].(map[string]any)
	var err error
	if s.user, err = b64.DecodeString(user["id"].(string)); err != nil {
		t.Fatal(err)
	}
	cose, err := webauthncbor.Marshal(map[int]any{1: 2, 3: -7, -1: 1, -2: s.key.X.FillBytes(make([]byte, 32)), -3: s.key.Y.FillBytes(make([]byte, 32))})
	if err != nil {
		t.Fatal(err)
	}
	attested := make([]byte, 16) // AAGUID: zero, as with attestation none
	attested = binary.BigEndian.AppendUint16(attested, uint16(len(s.id)))
	attested = append(append(attested, s.id...), cose...)
	att, err := webauthncbor.Marshal(map[string]any{"fmt": "none", "attStmt": map[string]any{}, "authData": authData(0x45, 0, attested)})
	if err != nil {
		t.Fatal(err)
	}
	cd := s.clientData("webauthn.create", opts["challenge"].(string))
	out, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(s.id), "rawId": b64.EncodeToString(s.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64.EncodeToString(cd), "attestationObject": b64.EncodeToString(att)}})
	return string(out)
}

// get answers request options with an assertion carrying counter.
func (s *softKey) get(t *testing.T, challenge string, counter uint32) string {
	t.Helper()
	ad := authData(0x05, counter, nil) // UP, UV
	cd := s.clientData("webauthn.get", challenge)
	h := sha256.Sum256(cd)
	digest := sha256.Sum256(append(append([]byte{}, ad...), h[:]...))
	sig, err := ecdsa.SignASN1(rand.Reader, s.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(map[string]any{"id": b64.EncodeToString(s.id), "rawId": b64.EncodeToString(s.id), "type": "public-key",
		"response": map[string]any{"clientDataJSON": b64.EncodeToString(cd), "authenticatorData": b64.EncodeToString(ad),
			"signature": b64.EncodeToString(sig), "userHandle": b64.EncodeToString(s.user)}})
	return string(out)
}

// registerPasskey registers a new soft key for a signed-in account page.
func registerPasskey(t *testing.T, n *testProvider, b *oidctest.Browser, p oidctest.Page) *softKey {
	t.Helper()
	k := newSoftKey(t)
	resp := b.Post(n.URL+"/account/passkeys", url.Values{"csrf": {p.Hidden.Get("csrf")}, "state": {p.Hidden.Get("state")},
		"name": {"soft key"}, "credential": {k.create(t, pageOptions(t, p))}})
	resp.Body.Close()
	if loc, _ := resp.Location(); resp.StatusCode != http.StatusSeeOther || loc == nil || !strings.Contains(loc.RawQuery, "added") {
		t.Fatalf("registering a passkey answered %d", resp.StatusCode)
	}
	return k
}

// passkeyPage walks a login to the first-factor passkey page for name.
func passkeyPage(t *testing.T, b *oidctest.Browser, n *testProvider, clientID, name string) oidctest.Page {
	t.Helper()
	p := oidctest.ReadPage(b.Follow(b.Get(authURL(n, clientID)), oidctest.StopAt(redirectURI)))
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}}))
	if !strings.Contains(p.Body, `action="/login/passkey"`) {
		t.Fatalf("the password page offers no passkey: %s", p.Body)
	}
	p = oidctest.ReadPage(b.Post(n.URL+"/login/passkey", url.Values{"id": {p.Hidden.Get("id")}, "csrf": {p.Hidden.Get("csrf")}, "username": {name}}))
	if p.Hidden.Get("state") == "" {
		t.Fatalf("no passkey page (%d): %s", p.Status, p.Body)
	}
	return p
}

func verifyPasskey(b *oidctest.Browser, n *testProvider, path string, p oidctest.Page, assertion string) *http.Response {
	return b.Follow(b.Post(n.URL+path, url.Values{"id": {p.Hidden.Get("id")}, "csrf": {p.Hidden.Get("csrf")},
		"state": {p.Hidden.Get("state")}, "credential": {assertion}}), oidctest.StopAt(redirectURI))
}

func gotPasskeyCode(resp *http.Response) bool {
	loc, err := resp.Location()
	ok := err == nil && strings.HasPrefix(loc.String(), redirectURI) && loc.Query().Get("code") != ""
	if ok {
		resp.Body.Close()
	}
	return ok
}

// TestPasskeyFirstFactor registers a passkey at /account and signs in with
// it instead of the password; a replayed assertion, a counter that does
// not rise (a cloned key), another user's passkey and a wrong origin are
// refused, and the cloned credential stays blocked.
func TestPasskeyFirstFactor(t *testing.T) {
	n, logs := startConfiguredNode(t, "eu", openSQLite(t), withPasskeys)
	alice := n.addUser("alice", "alice-password-1", nil)
	n.addUser("bob", "bob-password-111", nil)
	c := n.addClient(region.ClientSpec{Name: "app", RedirectURIs: []string{redirectURI}, FirstParty: true})
	b, p := accountLogin(t, n, "alice", "alice-password-1")
	k := registerPasskey(t, n, b, p)

	lb := newBrowser(t)
	pp := passkeyPage(t, lb, n, c.ID, "alice")
	ch := pageOptions(t, pp)["challenge"].(string)
	if _, listed := pageOptions(t, pp)["allowCredentials"]; listed {
		t.Fatal("the first-factor passkey page lists credentials (it would tell who has passkeys)")
	}
	first := k.get(t, ch, 1)
	if resp := verifyPasskey(lb, n, "/login/passkey/verify", pp, first); !gotPasskeyCode(resp) {
		t.Fatalf("a valid passkey did not sign in (%d): %s", resp.StatusCode, oidctest.ReadPage(resp).Body)
	}
	if !strings.Contains(logs.String(), `"amr":"hwk user mfa"`) {
		t.Fatalf("the login's amr is not hwk user mfa: %s", logs.String())
	}

	refused := func(name string, resp *http.Response) {
		t.Helper()
		if gotPasskeyCode(resp) {
			t.Fatalf("%s signed in", name)
		}
		if pg := oidctest.ReadPage(resp); !strings.Contains(pg.Body, "could not be used") {
			t.Fatalf("%s: %d %s", name, pg.Status, pg.Body)
		}
	}
	// The same form and assertion again: the request is done.
	if resp := verifyPasskey(lb, n, "/login/passkey/verify", pp, first); gotPasskeyCode(resp) || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("a replayed assertion answered %d", resp.StatusCode)
	}
	// A challenge is single-use even while its login is pending: a failed
	// attempt burns it, and a valid assertion for it is refused after.
	fresh := func(name string) (*oidctest.Browser, oidctest.Page, string) {
		fb := newBrowser(t)
		fp := passkeyPage(t, fb, n, c.ID, name)
		return fb, fp, pageOptions(t, fp)["challenge"].(string)
	}
	fb, fp, ch := fresh("alice")
	refused("a malformed assertion", verifyPasskey(fb, n, "/login/passkey/verify", fp, `{"id":"x"}`))
	refused("a used challenge", verifyPasskey(fb, n, "/login/passkey/verify", fp, k.get(t, ch, 2)))
	// Another user's login page with alice's passkey.
	fb, fp, ch = fresh("bob")
	refused("alice's passkey on bob's page", verifyPasskey(fb, n, "/login/passkey/verify", fp, k.get(t, ch, 3)))
	// A page at an origin that is not configured.
	wrong := *k
	wrong.origin = "http://evil.localhost"
	fb, fp, ch = fresh("alice")
	refused("a foreign origin", verifyPasskey(fb, n, "/login/passkey/verify", fp, wrong.get(t, ch, 4)))
	// A counter that does not rise: a clone of the key.
	fb, fp, ch = fresh("alice")
	refused("a counter that went back", verifyPasskey(fb, n, "/login/passkey/verify", fp, k.get(t, ch, 1)))
	creds, err := n.Store.ListWebAuthnCredentials(context.Background(), alice.ID)
	if err != nil || len(creds) != 1 || !creds[0].CloneWarning {
		t.Fatalf("the credential is not flagged as cloned: %+v %v", creds, err)
	}
	fb, fp, ch = fresh("alice")
	refused("a flagged credential", verifyPasskey(fb, n, "/login/passkey/verify", fp, k.get(t, ch, 50)))
	for _, reason := range []string{"malformed", "reused_challenge", "unknown_credential", "invalid_assertion", "cloned_credential"} {
		if !strings.Contains(logs.String(), `"event":"passkey.failed"`) || !strings.Contains(logs.String(), `"reason":"`+reason+`"`) {
			t.Errorf("no passkey.failed audit event with reason %s", reason)
		}
	}
}

func TestPasskeySecondFactor(t *testing.T) {
	n, logs := startConfiguredNode(t, "eu", openSQLite(t), withPasskeys)
	n.addUser("alice", "alice-password-1", nil)
	c := n.addClient(region.ClientSpec{Name: "app", RedirectURIs: []string{redirectURI}, FirstParty: true})
	b, p := accountLogin(t, n, "alice", "alice-password-1")
	k := registerPasskey(t, n, b, p)

	lb := newBrowser(t)
	pg := oidctest.ReadPage(lb.Follow(lb.Get(authURL(n, c.ID)), oidctest.StopAt(redirectURI)))
	pg = oidctest.ReadPage(lb.Submit(pg, url.Values{"username": {"alice"}}))
	resp := lb.Follow(lb.Submit(pg, url.Values{"username": {"alice"}, "password": {"alice-password-1"}}), oidctest.StopAt(redirectURI))
	if gotPasskeyCode(resp) {
		t.Fatal("the password alone signed in a user with a passkey")
	}
	mfa := oidctest.ReadPage(resp)
	opts := pageOptions(t, mfa)
	if allow, _ := opts["allowCredentials"].([]any); len(allow) != 1 {
		t.Fatalf("the second-factor page should ask for alice's passkey: %v", opts)
	}
	if resp := verifyPasskey(lb, n, "/login/mfa/passkey", mfa, k.get(t, opts["challenge"].(string), 1)); !gotPasskeyCode(resp) {
		t.Fatalf("password + passkey did not sign in (%d): %s", resp.StatusCode, oidctest.ReadPage(resp).Body)
	}
	if !strings.Contains(logs.String(), `"amr":"pwd hwk user mfa"`) {
		t.Fatalf("amr of password + passkey: %s", logs.String())
	}
}

// TestPasskeyStateBoundToStep posts the state minted at each step (first-
// factor passkey page, second-factor passkey page, TOTP page, consent
// page) to every step that takes a state, with a valid assertion for the
// state's own challenge where it has one. Only the intended pairs move the
// login on (issue 11's step binding, extended to the passkey steps).
func TestPasskeyStateBoundToStep(t *testing.T) {
	n, _ := startConfiguredNode(t, "eu", openSQLite(t), withPasskeys)
	c := n.addClient(region.ClientSpec{Name: "third", RedirectURIs: []string{redirectURI}})
	sources := []string{"passkey", "passkey-mfa", "totp", "consent"}
	targets := []string{"/login/passkey/verify", "/login/mfa/passkey", "/login/totp", "/consent"}
	intended := map[[2]string]bool{{"passkey", "/login/passkey/verify"}: true, {"passkey-mfa", "/login/mfa/passkey"}: true,
		{"totp", "/login/totp"}: true, {"consent", "/consent"}: true}
	i := 0
	for _, src := range sources {
		for _, dst := range targets {
			i++
			t.Run(src+"→"+dst, func(t *testing.T) {
				name := "pk" + string(rune('a'+i))
				var k *softKey
				var secret string
				if src == "totp" {
					secret = addTOTPUser(t, n, name, "correct-horse-1")
				} else {
					n.addUser(name, "correct-horse-1", nil)
					ab, ap := accountLogin(t, n, name, "correct-horse-1")
					k = registerPasskey(t, n, ab, ap)
				}
				b := newBrowser(t)
				var p oidctest.Page
				switch src {
				case "passkey":
					p = passkeyPage(t, b, n, c.ID, name)
				default:
					p = oidctest.ReadPage(b.Follow(b.Get(authURL(n, c.ID)), oidctest.StopAt(redirectURI)))
					p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}}))
					p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {name}, "password": {"correct-horse-1"}}))
					if src == "consent" {
						p = oidctest.ReadPage(verifyPasskey(b, n, "/login/mfa/passkey", p, k.get(t, pageOptions(t, p)["challenge"].(string), 1)))
						if p.Action != "/consent" {
							t.Fatalf("no consent page: %s", p.Body)
						}
					}
				}
				counter := uint32(2)
				assertion := ""
				if k != nil && src != "consent" {
					assertion = k.get(t, pageOptions(t, p)["challenge"].(string), counter)
				} else if k != nil {
					assertion = k.get(t, "AAAA", counter)
				}
				form := url.Values{"id": {p.Hidden.Get("id")}, "csrf": {p.Hidden.Get("csrf")}, "state": {p.Hidden.Get("state")},
					"credential": {assertion}, "decision": {"allow"}}
				if secret != "" {
					form.Set("code", codeAt(t, secret, time.Now().Add(30*time.Second)))
				}
				resp := b.Follow(b.Post(n.URL+dst, form), oidctest.StopAt(redirectURI))
				advanced := ""
				if gotPasskeyCode(resp) {
					advanced = "an authorization code"
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
