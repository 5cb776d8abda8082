package config

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// productionConfig is a valid federation.production configuration: https,
// every site (region, DR site, hub) with a certificate, admin listeners
// over TLS.
func productionConfig() *Config {
	tls := TLS{CertFile: "/etc/meridian/site.crt", KeyFile: "/etc/meridian/site.key", Admin: true}
	c := &Config{
		Federation: Federation{GlobalHost: "id.example", Scheme: "https", Port: 443, Topology: "hub",
			ConnectTimeout: 1, RequestTimeout: 1, Production: true},
		Regions: []Region{{ID: "eu", Site: Site{Host: "eu.id.example", Listen: "10.0.0.1:443", AdminListen: "10.0.0.1:9090",
			Addresses: []string{"10.0.0.1"}, TLS: tls},
			DR: &Site{Host: "eu-dr.id.example", Addresses: []string{"10.0.1.1"}, TLS: tls}}},
		Hub:       Hub{Site: Site{Host: "hub.id.example", Listen: "10.0.2.1:443", Addresses: []string{"10.0.2.1"}, TLS: tls}},
		Telemetry: Telemetry{LogLevel: "info"},
	}
	return c
}

// TestProductionRefusesPlainHTTP: federation.production means TLS
// everywhere; each gap is an error naming its key. Without production the
// same configurations are valid (development keeps working).
func TestProductionRefusesPlainHTTP(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *Config)
		key    string // "" = valid
	}{
		{"all TLS", func(*Config) {}, ""},
		{"http scheme", func(c *Config) { c.Federation.Scheme = "http" }, "federation.scheme"},
		{"region without certificate", func(c *Config) { c.Regions[0].TLS = TLS{} }, "regions[0].tls.cert_file"},
		{"DR site without certificate", func(c *Config) { c.Regions[0].DR.TLS = TLS{} }, "regions[0].dr.tls.cert_file"},
		{"hub without certificate", func(c *Config) { c.Hub.TLS = TLS{} }, "hub.tls.cert_file"},
		{"plain admin listener", func(c *Config) { c.Regions[0].TLS.Admin = false }, "regions[0].tls.admin"},
		{"loopback admin listener is no exception", func(c *Config) {
			c.Regions[0].AdminListen = "127.0.0.1:9090"
			c.Regions[0].TLS.Admin = false
		}, "regions[0].tls.admin"},
		{"hub admin listener", func(c *Config) { c.Hub.AdminListen = "10.0.2.1:9090"; c.Hub.TLS.Admin = false }, "hub.tls.admin"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := productionConfig()
			tc.mutate(c)
			err := c.Validate()
			if tc.key == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tc.key+": ") || !errors.Is(err, ErrInvalid) ||
				!strings.Contains(err.Error(), "federation.production") {
				t.Fatalf("err = %v, want one naming %s and federation.production", err, tc.key)
			}
			c.Federation.Production = false
			if tc.key != "federation.scheme" {
				if err := c.Validate(); err != nil {
					t.Fatalf("without production: %v", err)
				}
			}
		})
	}
}

// TestProductionSecrets: with real key files of each mode, production
// refuses a secret without a file (no generated development key) and a
// file group or others may read, naming the key; development accepts both
// (with a warning for the mode) and keeps generating its key.
func TestProductionSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.Repeat([]byte("k"), 32), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name       string
		path       string
		production bool
		wantErr    string // "" = loads
		wantWarn   bool
	}{
		{"0600 in production", write("owner.key", 0o600), true, "", false},
		{"0400 in production", write("readonly.key", 0o400), true, "", false},
		{"0640 in production", write("group.key", 0o640), true, "readable by group or others (mode 0640)", false},
		{"0604 in production", write("others.key", 0o604), true, "readable by group or others (mode 0604)", false},
		{"0644 in production", write("world.key", 0o644), true, "chmod 600", false},
		{"not set in production", "", true, "not set: federation.production refuses generated development keys", false},
		{"0644 in development", write("dev-world.key", 0o644), false, "", true},
		{"not set in development", "", false, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Config{Federation: Federation{Production: tc.production}}
			var logs bytes.Buffer
			log := slog.New(slog.NewTextHandler(&logs, nil))
			devPath := filepath.Join(t.TempDir(), "secrets", "cookie-eu.key")
			b, err := c.Secret("regions[eu].cookie_key_file", tc.path, devPath, log)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), "regions[eu].cookie_key_file: ") ||
					!strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want %q naming the key", err, tc.wantErr)
				}
				if _, statErr := os.Stat(devPath); statErr == nil {
					t.Fatal("production generated a development key")
				}
				return
			}
			if err != nil || len(b) < 32 {
				t.Fatalf("secret %d bytes, err %v", len(b), err)
			}
			if got := strings.Contains(logs.String(), "level=WARN"); got != tc.wantWarn {
				t.Fatalf("warning logged: %v, want %v: %s", got, tc.wantWarn, logs.String())
			}
		})
	}
}
