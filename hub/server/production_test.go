package server_test

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/hub/server"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
)

// TestProductionHub: with federation.production the hub starts only with
// its secrets in key files (hub.secret_file — once settable only by an
// environment variable —, hub.key_file, the routing key, every party's
// federation key): each missing one is an error naming its YAML key, and
// no development key is written. The environment override of
// hub.secret_file (MERIDIAN_HUB_SECRET_FILE) supplies it as well.
func TestProductionHub(t *testing.T) {
	dir := t.TempDir()
	secret := func(name string) string {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub := func(f string) string {
		b, _ := os.ReadFile(f)
		k, err := federation.ParsePrivateKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return federation.MarshalPublicKey(&k.PublicKey)
	}
	ca := testenv.NewTestCA(t)
	certFile, keyFile := ca.Issue(t, "hub.id.example")
	hubFed, euFed := secret("fed-hub"), secret("fed-eu")
	base := func() *config.Config {
		tls := config.TLS{CertFile: certFile, KeyFile: keyFile, Admin: true}
		return &config.Config{
			DataDir: t.TempDir(),
			Federation: config.Federation{GlobalHost: "id.example", Scheme: "https", Port: 443, Topology: "hub",
				ConnectTimeout: time.Second, RequestTimeout: time.Second, Production: true, RoutingKeyFile: secret("routing")},
			Hub: config.Hub{Site: config.Site{Host: "hub.id.example", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"}, TLS: tls},
				KeyFile: secret("k_hub"), SecretFile: secret("hub-secret"), FederationKeyFile: hubFed, FederationPublicKey: pub(hubFed)},
			Regions: []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.example", Listen: "127.0.0.2:0", Addresses: []string{"127.0.0.1"}, TLS: tls},
				FederationPublicKey: pub(euFed)}},
			Telemetry: config.Telemetry{LogLevel: "error"},
		}
	}
	envSecret := secret("hub-secret-env")
	tests := []struct {
		name    string
		mutate  func(c *config.Config)
		env     string // MERIDIAN_HUB_SECRET_FILE
		wantErr string
	}{
		{"every secret in a file", func(*config.Config) {}, "", ""},
		{"no hub secret", func(c *config.Config) { c.Hub.SecretFile = "" }, "", "hub.secret_file"},
		{"hub secret from the environment", func(c *config.Config) { c.Hub.SecretFile = "" }, envSecret, ""},
		{"no k_hub", func(c *config.Config) { c.Hub.KeyFile = "" }, "", "hub.key_file"},
		{"no routing key", func(c *config.Config) { c.Federation.RoutingKeyFile = "" }, "", "federation.routing_key_file"},
		{"no region public key", func(c *config.Config) { c.Regions[0].FederationPublicKey = "" }, "", "regions[eu].federation_public_key"},
	}
	tel := fedtest.QuietTelemetry()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.mutate(cfg)
			if tc.env != "" {
				// As config.Load applies it: MERIDIAN_HUB_SECRET_FILE is hub.secret_file.
				t.Setenv("MERIDIAN_HUB_SECRET_FILE", tc.env)
				cfg.Hub.SecretFile = os.Getenv("MERIDIAN_HUB_SECRET_FILE")
			}
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			h, err := server.New(context.Background(), cfg, server.Options{}, tel)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				h.Close()
			} else {
				if err == nil {
					h.Close()
					t.Fatalf("the hub started; want an error naming %s", tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), tc.wantErr+": ") || !errors.Is(err, config.ErrInvalid) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
			}
			if entries, _ := os.ReadDir(filepath.Join(cfg.DataDir, "secrets")); len(entries) > 0 {
				t.Fatalf("production wrote development keys: %v", entries)
			}
		})
	}
}
