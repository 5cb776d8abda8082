package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadExample(t *testing.T) {
	c, err := Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.RegionIDs(), ","); got != "eu,us,ap" {
		t.Fatalf("regions = %s", got)
	}
	if c.GlobalIssuer() != "http://id.localhost:8080" {
		t.Fatalf("global issuer = %s", c.GlobalIssuer())
	}
	eu, _ := c.Region("eu")
	if c.Issuer(eu) != "http://eu.id.localhost:8080" || c.DialAddr(eu.Site) != "127.0.0.11:8080" {
		t.Fatalf("eu issuer %s upstream %s", c.Issuer(eu), c.DialAddr(eu.Site))
	}
	if eu.DR == nil || eu.DR.Host != "eu-dr.id.localhost" {
		t.Fatalf("eu dr = %+v", eu.DR)
	}
	if eu.ClientSecretOverlap != 24*time.Hour || eu.ClientSecretMaxOverlap != 720*time.Hour {
		t.Fatalf("eu client secret overlap %s, max %s", eu.ClientSecretOverlap, eu.ClientSecretMaxOverlap)
	}
}

func TestLoadRejects(t *testing.T) {
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, key string
	}{
		{"unknown key", "  topology: hub", "  topology: hub\n  toplogy: mesh", "toplogy"},
		{"unknown region in proximity", "proximity: [us, ap]", "proximity: [us, mars]", "regions[0].proximity[1]"},
		{"duplicate region id", "  - id: us", "  - id: eu", "regions[1].id"},
		{"duplicate host", "host: us.id.localhost", "host: eu.id.localhost", "regions[1].host"},
		{"duplicate listen", "listen: 127.0.0.12:8080", "listen: 127.0.0.11:8080", "regions[1].listen"},
		{"bad region id", "  - id: ap", "  - id: AP!", "regions[2].id"},
		{"bad address", "addresses: [127.0.0.13]", "addresses: [not-an-ip]", "regions[2].addresses[0]"},
		{"bad scheme", "scheme: http ", "scheme: ftp ", "federation.scheme"},
		{"url as host", "global_host: id.localhost", "global_host: https://id.localhost/", "federation.global_host"},
		{"bad database url", `database: ""                   # PostgreSQL or MySQL URL`, `database: "redis://x"          # PostgreSQL or MySQL URL`, "regions[0].database"},
		{"mysql url without database", `database: ""                   # PostgreSQL or MySQL URL`, `database: "mysql://u:p@db:3306"  # URL`, "regions[0].database"},
		{"mysql url without host", `database: ""                   # PostgreSQL or MySQL URL`, `database: "mysql:///meridian"  # URL`, "regions[0].database"},
		{"region id with leading dash", "  - id: ap", "  - id: -ap", "regions[2].id"},
		{"proximity listed twice", "proximity: [us, ap]", "proximity: [us, us]", "regions[0].proximity[1]"},
		{"bad redis url", `redis: ""`, `redis: "http://x"`, "hub.redis"},
		{"negative expected users", `redis: ""`, "redis: \"\"\n  expected_users: -5", "hub.expected_users"},
		{"expected users not a number", `redis: ""`, "redis: \"\"\n  expected_users: lots", "expected_users"},
		{"bad timeout", "request_timeout: 10s", "request_timeout: soon", "request_timeout"},
		{"hop poll above 1ms", "hop_poll: 250us", "hop_poll: 2ms", "federation.hop_poll"},
		{"negative hop poll", "hop_poll: 250us", "hop_poll: -1us", "federation.hop_poll"},
		{"negative registration rate", "proximity: [us, ap]", "proximity: [us, ap]\n    registrations_per_minute: -1", "regions[0].registrations_per_minute"},
		{"negative secret overlap", "client_secret_overlap: 24h", "client_secret_overlap: -1h", "regions[0].client_secret_overlap"},
		{"secret overlap above its max", "client_secret_max_overlap: 720h", "client_secret_max_overlap: 1h", "regions[0].client_secret_overlap"},
		{"secret overlap above the max", "client_secret_overlap: 24h", "client_secret_overlap: 721h", "regions[0].client_secret_overlap"},
		{"routing ring without signer", "  previous_routing_key_file: \"\"", "  routing_keys: [{file: /k1, use: verify}]", "federation.routing_keys"},
		{"routing ring with two signers", "  previous_routing_key_file: \"\"", "  routing_keys: [{file: /k1, use: sign}, {file: /k2, use: sign}]", "federation.routing_keys"},
		{"routing ring bad use", "  previous_routing_key_file: \"\"", "  routing_keys: [{file: /k1, use: sign}, {file: /k2, use: maybe}]", "federation.routing_keys[1].use"},
		{"routing ring without file", "  previous_routing_key_file: \"\"", "  routing_keys: [{use: sign}]", "federation.routing_keys[0].file"},
		{"routing ring and key file", "  routing_key_file: \"\"", "  routing_key_file: /k0\n  routing_keys: [{file: /k1, use: sign}]", "federation.routing_keys"},
		{"negative publish delay", "  topology: hub", "  topology: hub\n  signing_key_publish_delay: -1m", "federation.signing_key_publish_delay"},
		{"rp id not a parent of the hosts", `rp_id: ""`, `rp_id: "other.example"`, "account.webauthn.rp_id"},
		{"rp id a region host only", `rp_id: ""`, `rp_id: "eu.id.localhost"`, "account.webauthn.rp_id"},
		{"bad attestation", "attestation: none", "attestation: always", "account.webauthn.attestation"},
		{"origin without scheme", "origins: []", "origins: [id.localhost]", "account.webauthn.origins[0]"},
		{"claim not editable", "editable_claims: [name, locale]", "editable_claims: [name, sub]", "account.editable_claims[1]"},
		{"negative reauth window", "reauth_window: 10m", "reauth_window: -1m", "account.reauth_window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(string(example), tt.old) {
				t.Fatalf("example lacks %q", tt.old)
			}
			p := filepath.Join(t.TempDir(), "regions.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(example), tt.old, tt.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil || !strings.Contains(err.Error(), tt.key) {
				t.Fatalf("Load error = %v, want one naming %q", err, tt.key)
			}
		})
	}
}

// TestPasskeyDefaults: the relying party is the cookie domain (the parent
// of the global and region hosts) and every host is an allowed origin.
func TestPasskeyDefaults(t *testing.T) {
	c, err := Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PasskeyRPID(); got != "id.localhost" {
		t.Fatalf("rp id %q", got)
	}
	origins := strings.Join(c.PasskeyOrigins(), " ")
	for _, want := range []string{"http://id.localhost:8080", "http://eu.id.localhost:8080", "http://us-dr.id.localhost:8080"} {
		if !strings.Contains(origins, want) {
			t.Errorf("origins %s lack %s", origins, want)
		}
	}
	if c.Account.ReauthWindow != 10*time.Minute || len(c.Account.EditableClaims) != 2 {
		t.Errorf("account section: %+v", c.Account)
	}
}

func TestValidateNamesKey(t *testing.T) {
	c, err := Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c.Regions[0].Proximity = []string{"eu"}
	if err := c.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "regions[0].proximity[0]") {
		t.Fatalf("self in proximity: %v", err)
	}
}

// TestDatabaseSettings: the database setting selects the backend by
// scheme; every accepted form validates and nothing else does, and a
// refusal never repeats the URL (it may hold a password).
func TestDatabaseSettings(t *testing.T) {
	tests := []struct {
		database string
		ok       bool
	}{
		{"", true},
		{"postgres://meridian@db.internal/meridian?sslmode=verify-full", true},
		{"postgresql://meridian@db.internal/meridian", true},
		{"mysql://meridian:s3cret@db.internal:3306/meridian?tls=true", true},
		{"mysql://meridian@db.internal/meridian", true},
		{"mysql://meridian:s3cret@db.internal:3306/", false},
		{"mysql://meridian:s3cret@db.internal:3306/a/b", false},
		{"mysql://meridian:s3cret@/meridian", false},
		{"meridian:s3cret@tcp(db.internal:3306)/meridian", false},
		{"sqlite:///var/lib/meridian.db", false},
	}
	for _, tt := range tests {
		c, err := Load("../configs/regions.yaml")
		if err != nil {
			t.Fatal(err)
		}
		c.Regions[0].Database = tt.database
		err = c.Validate()
		if tt.ok != (err == nil) {
			t.Errorf("database %q: Validate() = %v, want ok=%v", tt.database, err, tt.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "regions[0].database") || strings.Contains(err.Error(), "s3cret")) {
			t.Errorf("database %q: error %q should name the key and not the password", tt.database, err)
		}
	}
}

func TestRoutingKeyRingLoads(t *testing.T) {
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "regions.yaml")
	body := strings.Replace(string(example), "  previous_routing_key_file: \"\"",
		"  routing_keys:\n    - {file: /etc/new.key, use: sign}\n    - {file: /etc/old.key, use: clients}", 1)
	body = strings.Replace(body, "  - id: eu\n", "  - id: eu\n    key_encryption_key_file: /etc/eu.kek\n", 1)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if r := c.Federation.RoutingKeys; len(r) != 2 || r[0] != (RoutingKey{File: "/etc/new.key", Use: "sign"}) || r[1].Use != "clients" {
		t.Fatalf("routing_keys = %+v", r)
	}
	if eu, _ := c.Region("eu"); eu.KeyEncryptionKeyFile != "/etc/eu.kek" {
		t.Fatalf("key_encryption_key_file = %q", eu.KeyEncryptionKeyFile)
	}
	if c.Federation.SigningKeyPublishDelay != 10*time.Minute || c.Federation.SigningKeyOverlap != 24*time.Hour {
		t.Fatalf("signing key defaults %v %v", c.Federation.SigningKeyPublishDelay, c.Federation.SigningKeyOverlap)
	}
}

// TestFederationPublicKeysLoad: a party's federation_public_keys list (a
// federation-key rotation) loads from the file beside the single key.
func TestFederationPublicKeysLoad(t *testing.T) {
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "regions.yaml")
	body := strings.Replace(string(example), "  - id: eu\n", "  - id: eu\n    federation_public_keys: [AAA, BBB]\n", 1)
	body = strings.Replace(body, "  federation_public_keys: []", "  federation_public_keys: [CCC]", 1)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	eu, _ := c.Region("eu")
	if k := eu.PublicKeys(); len(k) != 2 || k[0] != "AAA" || k[1] != "BBB" {
		t.Fatalf("eu keys %v", k)
	}
	if k := c.Hub.PublicKeys(); len(k) != 1 || k[0] != "CCC" {
		t.Fatalf("hub keys %v", k)
	}
	c.Hub.FederationKeyFile = "/etc/hub.pem"
	if err := c.Validate(); err != nil {
		t.Fatalf("a key file with only federation_public_keys: %v", err)
	}
	c.Hub.FederationPublicKeys = nil
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "hub.federation_public_key") {
		t.Fatalf("a key file without public keys: %v", err)
	}
}

func TestEnvOverride(t *testing.T) {
	t.Setenv("MERIDIAN_FEDERATION_TOPOLOGY", "mesh")
	c, err := Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Federation.Topology != "mesh" {
		t.Fatalf("topology = %s", c.Federation.Topology)
	}
}

// TestHubExpectedUsers checks hub.expected_users from the file and from its
// environment override.
func TestHubExpectedUsers(t *testing.T) {
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "regions.yaml")
	body := strings.Replace(string(example), `redis: ""`, "redis: \"\"\n  expected_users: 10000000", 1)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil || c.Hub.ExpectedUsers != 10_000_000 {
		t.Fatalf("Load = %v, expected_users %d", err, c.Hub.ExpectedUsers)
	}
	t.Setenv("MERIDIAN_HUB_EXPECTED_USERS", "2000000")
	if c, err = Load("../configs/regions.yaml"); err != nil || c.Hub.ExpectedUsers != 2_000_000 {
		t.Fatalf("env override: %v, expected_users %d", err, c.Hub.ExpectedUsers)
	}
}
