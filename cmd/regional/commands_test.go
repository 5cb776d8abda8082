package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// testCLI runs the command with a config whose data dir is private to the test.
type testCLI struct {
	t   *testing.T
	cfg string
}

func newCLI(t *testing.T) *testCLI {
	example, err := os.ReadFile("../../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "regions.yaml")
	body := strings.Replace(string(example), "data_dir: ./data", "data_dir: "+filepath.Join(dir, "data"), 1)
	if err := os.WriteFile(cfg, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &testCLI{t: t, cfg: cfg}
}

func (c *testCLI) run(stdin string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append(args, "--config", c.cfg), strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsersAndClients(t *testing.T) {
	c := newCLI(t)
	if code, out, errs := c.run("", "migrate", "--region", "eu"); code != 0 || !strings.Contains(out, "migrated") {
		t.Fatalf("migrate: %d %s %s", code, out, errs)
	}
	code, out, errs := c.run("s3cret-password\n", "users", "add", "--region", "eu", "--username", "Ada", "--password-stdin",
		"--claims", `{"name":"Ada Lovelace"}`, "--json")
	if code != 0 {
		t.Fatalf("users add: %d %s", code, errs)
	}
	var u map[string]string
	if err := json.Unmarshal([]byte(out), &u); err != nil || u["username"] != "ada" || u["sub"] == "" {
		t.Fatalf("users add output %q", out)
	}
	if code, _, errs := c.run("again-password\n", "users", "add", "--region", "eu", "--username", "ADA", "--password-stdin"); code != 1 || !strings.Contains(errs, "already exists") {
		t.Fatalf("duplicate (case variant) user: %d %s", code, errs)
	}
	if code, out, _ := c.run("", "users", "list", "--region", "eu"); code != 0 || !strings.Contains(out, "ada") {
		t.Fatalf("users list: %s", out)
	}
	code, out, errs = c.run("", "clients", "add", "--region", "eu", "--redirect-uri", "https://app.example/cb", "--access-token-format", "jwt", "--json")
	if code != 0 {
		t.Fatalf("clients add: %s", errs)
	}
	var cl map[string]any
	if err := json.Unmarshal([]byte(out), &cl); err != nil || !strings.HasPrefix(cl["client_id"].(string), "m1.cl.eu.") || cl["client_secret"] == nil || cl["access_token_format"] != "jwt" {
		t.Fatalf("clients add output %q", out)
	}
	if code, out, _ := c.run("", "clients", "list", "--region", "eu"); code != 0 || !strings.Contains(out, cl["client_id"].(string)) {
		t.Fatalf("clients list: %s", out)
	}
	if code, out, _ := c.run("", "keys", "rotate", "--region", "eu"); code != 0 || !strings.Contains(out, "eu-") {
		t.Fatalf("keys rotate: %s", out)
	}
	if code, _, _ := c.run("", "clients", "delete", "--region", "eu", "--client-id", cl["client_id"].(string)); code != 0 {
		t.Fatal("clients delete")
	}
	if code, _, _ := c.run("", "users", "delete", "--region", "eu", "--username", "ada"); code != 0 {
		t.Fatal("users delete")
	}
	if code, _, errs := c.run("", "users", "delete", "--region", "eu", "--username", "ada"); code != 1 || !strings.Contains(errs, "no user") {
		t.Fatalf("deleting a missing user: %d %s", code, errs)
	}
}

func TestUsageErrors(t *testing.T) {
	c := newCLI(t)
	for name, args := range map[string][]string{
		"unknown command":    {"frobnicate"},
		"missing region":     {"migrate"},
		"unknown region":     {"migrate", "--region", "mars"},
		"password on argv":   {"users", "add", "--region", "eu", "--username", "x"},
		"bad claims":         {"users", "add", "--region", "eu", "--username", "x", "--password-stdin", "--claims", "nope"},
		"http redirect":      {"clients", "add", "--region", "eu", "--redirect-uri", "http://evil.example/cb"},
		"bad token format":   {"clients", "add", "--region", "eu", "--redirect-uri", "https://a.example/cb", "--access-token-format", "saml"},
		"public credentials": {"clients", "add", "--region", "eu", "--public", "--grant-types", "client_credentials"},
	} {
		t.Run(name, func(t *testing.T) {
			code, _, errs := c.run("pw-123456789\n", args...)
			if code != 2 || errs == "" {
				t.Fatalf("exit %d, stderr %q; want 2 with a message", code, errs)
			}
		})
	}
}

func TestKeysCommands(t *testing.T) {
	c := newCLI(t)
	if code, _, errs := c.run("", "migrate", "--region", "eu"); code != 0 {
		t.Fatalf("migrate: %s", errs)
	}
	// A key as the previous release stored it: PKCS#8 in the clear.
	dataDir := filepath.Join(filepath.Dir(c.cfg), "data")
	st, err := sqlite.Open(context.Background(), filepath.Join(dataDir, "eu", "meridian.db"))
	if err != nil {
		t.Fatal(err)
	}
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKCS8PrivateKey(priv)
	if err := st.AddSigningKey(context.Background(), store.SigningKey{ID: "eu-legacy", Algorithm: "ES256", PrivateDER: der, Active: true}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	if code, out, errs := c.run("", "keys", "list", "--region", "eu"); code != 0 || !strings.Contains(out, "eu-legacy") || !strings.Contains(out, "PLAINTEXT") {
		t.Fatalf("keys list before migrate: %d %q %s", code, out, errs)
	}
	if code, out, errs := c.run("", "keys", "migrate", "--region", "eu"); code != 0 || !strings.Contains(out, "1 signing key(s) sealed") {
		t.Fatalf("keys migrate: %d %q %s", code, out, errs)
	}
	if code, out, _ := c.run("", "keys", "list", "--region", "eu"); code != 0 || strings.Contains(out, "PLAINTEXT") || !strings.Contains(out, "file-") {
		t.Fatalf("keys list after migrate: %q", out)
	}
	if code, _, errs := c.run("", "keys", "rotate", "--region", "eu", "--overlap", "1m"); code != 1 || !strings.Contains(errs, "overlap shorter") {
		t.Fatalf("rotate with a short overlap: %d %s", code, errs)
	}
	code, out, errs := c.run("", "keys", "rotate", "--region", "eu")
	if code != 0 || !strings.Contains(out, "published; it signs from") {
		t.Fatalf("keys rotate: %d %q %s", code, out, errs)
	}
	if code, out, _ := c.run("", "keys", "list", "--region", "eu"); code != 0 || !strings.Contains(out, "signing") || !strings.Contains(out, "published") {
		t.Fatalf("keys list after rotate: the legacy key signs until the new one's publish delay passed: %q", out)
	}

	// The database with another KEK: every command that needs the keys, and
	// the node itself, refuses with a clear error instead of making a new key.
	wrong := filepath.Join(t.TempDir(), "other.kek")
	if err := os.WriteFile(wrong, bytes.Repeat([]byte("k"), 32), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("MERIDIAN_KEY_ENCRYPTION_KEY_FILE", wrong)
	for _, args := range [][]string{{"keys", "list"}, {"keys", "migrate"}, {"keys", "rotate"}, {"serve"}} {
		code, _, errs := c.run("", append(args, "--region", "eu")...)
		if code != 1 || !strings.Contains(errs, "sealed by") {
			t.Errorf("%v with the wrong KEK: %d %s", args, code, errs)
		}
	}
}

// TestSCIMProvisioningClient runs the command docs/scim.md and
// docs/operations.md give for registering a SCIM provisioning client: a
// confidential client_credentials client allowed the scim scope, without
// redirect URIs.
func TestSCIMProvisioningClient(t *testing.T) {
	c := newCLI(t)
	if code, out, errs := c.run("", "migrate", "--region", "eu"); code != 0 {
		t.Fatalf("migrate: %d %s %s", code, out, errs)
	}
	code, out, errs := c.run("", "clients", "add", "--region", "eu", "--name", "hr-sync", "--grant-types", "client_credentials",
		"--scopes", "scim", "--json")
	if code != 0 {
		t.Fatalf("clients add: %d %s", code, errs)
	}
	var cl map[string]any
	if err := json.Unmarshal([]byte(out), &cl); err != nil || cl["client_secret"] == nil ||
		fmt.Sprint(cl["grant_types"]) != "[client_credentials]" || fmt.Sprint(cl["scopes"]) != "[scim]" {
		t.Fatalf("clients add output %q", out)
	}
}

// TestUserPasskeys is the operations.md procedure for a passkey flagged as
// possibly cloned: list the user's passkeys, remove the flagged ones.
func TestUserPasskeys(t *testing.T) {
	c := newCLI(t)
	if code, _, errs := c.run("", "migrate", "--region", "us"); code != 0 {
		t.Fatalf("migrate: %s", errs)
	}
	code, out, errs := c.run("s3cret-password\n", "users", "add", "--region", "us", "--username", "grace", "--password-stdin", "--json")
	if code != 0 {
		t.Fatalf("users add: %s", errs)
	}
	var u map[string]string
	_ = json.Unmarshal([]byte(out), &u)
	// Two passkeys, one of which a counter that went back has flagged.
	cfg, err := config.Load(c.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, _ := cfg.Region("us")
	st, err := node.OpenStore(context.Background(), r, cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"good-key", "copied-key"} {
		if err := st.AddWebAuthnCredential(context.Background(), store.WebAuthnCredential{ID: []byte(id), UserID: u["sub"], Name: id, Data: []byte("{}"), SignCount: 5}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.UseWebAuthnCredential(context.Background(), []byte("copied-key"), 3, time.Now()); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a counter that went back: %v", err)
	}
	st.Close()

	if code, out, errs := c.run("", "passkeys", "list", "--region", "us", "--username", "grace"); code != 0 ||
		!strings.Contains(out, "good-key") || !strings.Contains(out, "flagged: possibly cloned") {
		t.Fatalf("passkeys list: %d %s %s", code, out, errs)
	}
	if code, _, errs := c.run("", "passkeys", "remove", "--region", "us", "--username", "grace"); code != 2 || !strings.Contains(errs, "--flagged") {
		t.Fatalf("remove without --passkey or --flagged: %d %s", code, errs)
	}
	if code, out, errs := c.run("", "passkeys", "remove", "--region", "us", "--username", "grace", "--flagged"); code != 0 || !strings.Contains(out, "removed 1") {
		t.Fatalf("remove --flagged: %d %s %s", code, out, errs)
	}
	if code, out, _ := c.run("", "passkeys", "list", "--region", "us", "--username", "grace"); code != 0 || strings.Contains(out, "copied-key") || !strings.Contains(out, "good-key") {
		t.Fatalf("after removing the flagged passkey: %s", out)
	}
}
