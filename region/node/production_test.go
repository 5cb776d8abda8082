package node_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	fedkeys "github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region/node"
)

// TestProductionNode: a regional node with federation.production starts
// only with every secret in a key file of its own (mode 0600): a missing
// routing key, cookie key, KEK or federation key (its own, or another
// party's public key) is an error naming the YAML key, never a generated
// development key, and so is a key file (a secret or the TLS key) that
// group or others may read.
func TestProductionNode(t *testing.T) {
	ca := testenv.NewTestCA(t)
	certFile, tlsKey := ca.Issue(t, "eu.id.example")
	pub := func(secretFile string) string {
		b, err := os.ReadFile(secretFile)
		if err != nil {
			t.Fatal(err)
		}
		k, err := fedkeys.ParsePrivateKey(b)
		if err != nil {
			t.Fatal(err)
		}
		return fedkeys.MarshalPublicKey(&k.PublicKey)
	}
	euFed, hubFed := keyFile(t, "fed-eu.key"), keyFile(t, "fed-hub.key")
	base := func() *config.Config {
		tls := config.TLS{CertFile: certFile, KeyFile: tlsKey, Admin: true}
		return &config.Config{
			DataDir: t.TempDir(),
			Federation: config.Federation{GlobalHost: "id.example", Scheme: "https", Port: 443, CookieDomain: "id.example",
				Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second, Production: true,
				RoutingKeyFile: keyFile(t, "routing.key")},
			Hub: config.Hub{Site: config.Site{Host: "hub.id.example", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}, TLS: tls},
				KeyFile: keyFile(t, "hub.key"), FederationPublicKey: pub(hubFed)},
			Telemetry: config.Telemetry{LogLevel: "error"},
			Regions: []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.example", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"}, TLS: tls},
				CookieKeyFile: keyFile(t, "cookie.key"), KeyEncryptionKeyFile: keyFile(t, "kek.key"),
				FederationKeyFile: euFed, FederationPublicKey: pub(euFed)}},
		}
	}
	loose := func(t *testing.T) string {
		p := keyFile(t, "loose.key")
		if err := os.Chmod(p, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		mutate  func(t *testing.T, c *config.Config)
		wantErr string // the key the error names; "" = starts
	}{
		{"every secret in a 0600 file", func(*testing.T, *config.Config) {}, ""},
		{"no routing key", func(_ *testing.T, c *config.Config) { c.Federation.RoutingKeyFile = "" }, "federation.routing_key_file"},
		{"no cookie key", func(_ *testing.T, c *config.Config) { c.Regions[0].CookieKeyFile = "" }, "regions[eu].cookie_key_file"},
		{"cookie key readable by others", func(t *testing.T, c *config.Config) { c.Regions[0].CookieKeyFile = loose(t) }, "regions[eu].cookie_key_file"},
		{"no KEK", func(_ *testing.T, c *config.Config) { c.Regions[0].KeyEncryptionKeyFile = "" }, "regions[eu].key_encryption_key_file"},
		{"no federation key", func(_ *testing.T, c *config.Config) {
			c.Regions[0].FederationKeyFile, c.Regions[0].FederationPublicKey = "", ""
		}, "regions[eu].federation_key_file"},
		{"no hub public key", func(_ *testing.T, c *config.Config) { c.Hub.FederationPublicKey = "" }, "hub.federation_public_key"},
		{"no hub key", func(_ *testing.T, c *config.Config) { c.Hub.KeyFile = "" }, "hub.key_file"},
		{"routing key readable by group", func(t *testing.T, c *config.Config) {
			c.Federation.RoutingKeyFile = loose(t)
			_ = os.Chmod(c.Federation.RoutingKeyFile, 0o640)
		}, "federation.routing_key_file"},
		{"TLS key readable by others", func(t *testing.T, c *config.Config) {
			cp := strings.TrimSuffix(tlsKey, ".pem") + "-loose.pem"
			b, _ := os.ReadFile(tlsKey)
			if err := os.WriteFile(cp, b, 0o644); err != nil {
				t.Fatal(err)
			}
			_ = os.Chmod(cp, 0o644)
			c.Regions[0].TLS.KeyFile = cp
		}, "regions[eu].tls.key_file"},
	}
	tel := fedtest.QuietTelemetry()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.mutate(t, cfg)
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			n, err := node.New(context.Background(), cfg, "eu", node.Options{DataDir: cfg.DataDir}, tel)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				n.Close()
			} else {
				if err == nil {
					n.Close()
					t.Fatalf("the node started; want an error naming %s", tc.wantErr)
				}
				if !strings.HasPrefix(err.Error(), tc.wantErr+": ") || !errors.Is(err, config.ErrInvalid) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
			}
			if entries, _ := os.ReadDir(cfg.DataDir + "/secrets"); len(entries) > 0 {
				t.Fatalf("production wrote development keys: %v", entries)
			}
		})
	}
}
