package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDrainAndCABundleKeys: federation.drain_period and
// federation.tls.ca_file come from the file or their environment
// overrides; a CA file that cannot be read or holds no certificate, and a
// negative drain period, are configuration errors naming the key.
func TestDrainAndCABundleKeys(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr string
		check   func(t *testing.T, c *Config)
	}{
		{"example drains 0s", nil, "", func(t *testing.T, c *Config) {
			if c.Federation.DrainPeriod != 0 || c.Federation.TLS.CAFile != "" {
				t.Fatalf("drain %v ca %q", c.Federation.DrainPeriod, c.Federation.TLS.CAFile)
			}
		}},
		{"drain from env", map[string]string{"MERIDIAN_FEDERATION_DRAIN_PERIOD": "40s"}, "", func(t *testing.T, c *Config) {
			if c.Federation.DrainPeriod != 40*time.Second {
				t.Fatalf("drain %v", c.Federation.DrainPeriod)
			}
		}},
		{"negative drain", map[string]string{"MERIDIAN_FEDERATION_DRAIN_PERIOD": "-1s"}, "federation.drain_period", nil},
		{"missing CA file", map[string]string{"MERIDIAN_FEDERATION_TLS_CA_FILE": filepath.Join(dir, "none.pem")}, "federation.tls.ca_file", nil},
		{"CA file without a certificate", map[string]string{"MERIDIAN_FEDERATION_TLS_CA_FILE": notPEM}, "federation.tls.ca_file", nil},
		{"admin TLS without a certificate", map[string]string{"MERIDIAN_HUB_TLS_ADMIN": "true"}, "tls.admin", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := Load("../configs/regions.yaml")
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load = %v, want an invalid %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
	// Without drain_period in the file the default outlasts the health
	// fall window plus the DNS TTL.
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "regions.yaml")
	var kept []string
	for _, l := range strings.Split(string(example), "\n") {
		if !strings.Contains(l, "drain_period:") {
			kept = append(kept, l)
		}
	}
	if err := os.WriteFile(p, []byte(strings.Join(kept, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if window := c.DNS.Health.Interval*time.Duration(c.DNS.Health.Fall) + time.Duration(c.DNS.TTL)*time.Second; c.Federation.DrainPeriod <= window {
		t.Fatalf("default drain %v, not longer than fall window + TTL %v", c.Federation.DrainPeriod, window)
	}
}
