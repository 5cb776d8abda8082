package setup_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
)

func example(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.Load("../../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestKeyringProduction: with key files and public keys configured, a
// region's node reads its own key file only: no other party's private key
// is read or created, and the public keys are the configured ones.
func TestKeyringProduction(t *testing.T) {
	cfg := example(t)
	dir := t.TempDir()
	keys := map[string]*ecdsa.PrivateKey{}
	for _, p := range append(cfg.RegionIDs(), federation.PartyHub) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		keys[p] = k
	}
	der, _ := x509.MarshalPKCS8PrivateKey(keys["eu"])
	euFile := filepath.Join(dir, "eu-federation.pem")
	if err := os.WriteFile(euFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := range cfg.Regions {
		r := &cfg.Regions[i]
		r.FederationKeyFile = filepath.Join(dir, "not-here-"+r.ID) // every other party's file is absent
		r.FederationPublicKey = federation.MarshalPublicKey(&keys[r.ID].PublicKey)
		if r.ID == "eu" {
			r.FederationKeyFile = euFile
		}
	}
	cfg.Hub.FederationKeyFile = filepath.Join(dir, "not-here-hub")
	cfg.Hub.FederationPublicKey = federation.MarshalPublicKey(&keys[federation.PartyHub].PublicKey)
	data := filepath.Join(dir, "data")
	kr, err := setup.Keyring(cfg, data, "eu", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if !kr.Key.Equal(keys["eu"]) {
		t.Fatal("not eu's key")
	}
	for p, k := range keys {
		if pub, ok := kr.PublicKey(p); !ok || !pub.Equal(&k.PublicKey) {
			t.Errorf("public key of %s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(data, "secrets")); !os.IsNotExist(err) {
		t.Fatalf("development keys were created: %v", err)
	}
	// A public key that does not match the key file is refused.
	cfg.Regions[0].FederationPublicKey = federation.MarshalPublicKey(&keys["us"].PublicKey)
	if cfg.Regions[0].ID != "eu" {
		t.Fatal("example order changed")
	}
	if _, err := setup.Keyring(cfg, data, "eu", slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("mismatched public key: %v", err)
	}
	// Another party with a key file but no public key is a config error.
	cfg.Regions[0].FederationPublicKey = federation.MarshalPublicKey(&keys["eu"].PublicKey)
	cfg.Regions[1].FederationPublicKey = ""
	if _, err := setup.Keyring(cfg, data, "eu", slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("a party without a public key was accepted")
	}
}

// TestKeyringDevelopment: with nothing configured (make run), each party's
// development key is generated under data_dir/secrets and every party
// derives the same public keys from them.
func TestKeyringDevelopment(t *testing.T) {
	cfg := example(t)
	data := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	eu, err := setup.Keyring(cfg, data, "eu", log)
	if err != nil {
		t.Fatal(err)
	}
	hub, err := setup.Keyring(cfg, data, federation.PartyHub, log)
	if err != nil {
		t.Fatal(err)
	}
	if !hub.Public["eu"].Equal(&eu.Key.PublicKey) || !eu.Public[federation.PartyHub].Equal(&hub.Key.PublicKey) {
		t.Fatal("parties disagree on the development keys")
	}
	if eu.Key.Equal(hub.Key) {
		t.Fatal("eu and the hub share a key")
	}
	for _, p := range append(cfg.RegionIDs(), federation.PartyHub) {
		if _, err := os.Stat(filepath.Join(data, "secrets", "federation-"+p+".key")); err != nil {
			t.Errorf("development key of %s: %v", p, err)
		}
	}
	if _, ok := setup.HopKeys(eu)[federation.PartyHub]; ok {
		t.Error("the hub's key is a hop key")
	}
}

// TestKeyringRotation: federation_public_keys lists further keys a party
// is accepted under; the party's own key file may be any listed key, and
// the single federation_public_key alone still works.
func TestKeyringRotation(t *testing.T) {
	cfg := example(t)
	dir := t.TempDir()
	gen := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	oldKey, newKey := gen(), gen()
	write := func(name string, k *ecdsa.PrivateKey) string {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldFile, newFile := write("old.pem", oldKey), write("new.pem", newKey)
	eu := &cfg.Regions[0]
	if eu.ID != "eu" {
		t.Fatal("example order changed")
	}
	eu.FederationKeyFile = oldFile
	eu.FederationPublicKey = federation.MarshalPublicKey(&oldKey.PublicKey)
	data := filepath.Join(dir, "data")
	log := slog.New(slog.DiscardHandler)
	view := func(self string) *federation.Keyring {
		t.Helper()
		kr, err := setup.Keyring(cfg, data, self, log)
		if err != nil {
			t.Fatal(err)
		}
		return kr
	}
	has := func(ks []*ecdsa.PublicKey, want ...*ecdsa.PrivateKey) bool {
		if len(ks) != len(want) {
			return false
		}
		for i := range ks {
			if !ks[i].Equal(&want[i].PublicKey) {
				return false
			}
		}
		return true
	}
	// Backward compatible: one key.
	if ks := view("us").PublicKeys("eu"); !has(ks, oldKey) {
		t.Fatalf("single key: %d keys", len(ks))
	}
	// Step 1: the new key is listed; eu still signs with the old one.
	eu.FederationPublicKeys = []string{federation.MarshalPublicKey(&newKey.PublicKey)}
	if ks := view("us").PublicKeys("eu"); !has(ks, oldKey, newKey) {
		t.Fatalf("step 1 at us: %d keys", len(ks))
	}
	if kr := view("eu"); !kr.Key.Equal(oldKey) || !has(kr.PublicKeys("eu"), oldKey, newKey) {
		t.Fatal("step 1 at eu")
	}
	if hop := setup.AlsoHopKeys(view("us")); len(hop["eu"]) != 1 || !hop["eu"][0].Equal(&newKey.PublicKey) {
		t.Fatalf("step 1 hop keys: %v", hop)
	}
	// Step 2: eu signs with the new key (listed, so accepted).
	eu.FederationKeyFile = newFile
	if kr := view("eu"); !kr.Key.Equal(newKey) || !has(kr.PublicKeys("eu"), newKey, oldKey) {
		t.Fatal("step 2 at eu")
	}
	// Step 3: the old key removed.
	eu.FederationPublicKey, eu.FederationPublicKeys = federation.MarshalPublicKey(&newKey.PublicKey), nil
	if ks := view("us").PublicKeys("eu"); !has(ks, newKey) {
		t.Fatalf("step 3 at us: %d keys", len(ks))
	}
	// A key file none of the listed keys matches is refused; so is a bad key.
	eu.FederationKeyFile = oldFile
	if _, err := setup.Keyring(cfg, data, "eu", log); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Fatalf("unlisted key file: %v", err)
	}
	eu.FederationPublicKeys = []string{"not a key"}
	if _, err := setup.Keyring(cfg, data, "us", log); err == nil {
		t.Fatal("a malformed listed key was accepted")
	}
	// federation_public_keys alone (no federation_public_key) is enough.
	eu.FederationKeyFile, eu.FederationPublicKey = newFile, ""
	eu.FederationPublicKeys = []string{federation.MarshalPublicKey(&newKey.PublicKey)}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if ks := view("us").PublicKeys("eu"); !has(ks, newKey) {
		t.Fatal("list only")
	}
}
