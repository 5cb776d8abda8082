package config

import (
	"errors"
	"strings"
	"testing"
)

// TestIndexedEnvOverrides: MERIDIAN_<LIST>_<i>_<KEY> reaches keys inside
// lists (each site's database), plain keys absent from the file are
// overridable too, and a variable naming a missing index or key fails.
func TestIndexedEnvOverrides(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		check   func(t *testing.T, c *Config)
		wantErr string
	}{
		{"primary and DR databases", map[string]string{
			"MERIDIAN_REGIONS_0_DATABASE":     "postgres://eu-primary/db",
			"MERIDIAN_REGIONS_0_DR_DATABASE":  "postgres://eu-standby/db",
			"MERIDIAN_REGIONS_2_ADMIN_LISTEN": "127.0.0.13:9191",
		}, func(t *testing.T, c *Config) {
			eu, _ := c.Region("eu")
			if eu.Database != "postgres://eu-primary/db" || eu.DR.Database != "postgres://eu-standby/db" {
				t.Fatalf("eu database %q, dr %q", eu.Database, eu.DR.Database)
			}
			if eu.DR.Host != "eu-dr.id.localhost" || eu.Host != "eu.id.localhost" {
				t.Fatalf("override clobbered other keys: %+v", eu)
			}
			ap, _ := c.Region("ap")
			if ap.AdminListen != "127.0.0.13:9191" {
				t.Fatalf("ap admin_listen %q", ap.AdminListen)
			}
		}, ""},
		{"list value", map[string]string{"MERIDIAN_REGIONS_1_ADDRESSES": "127.0.0.12,127.0.0.32"}, func(t *testing.T, c *Config) {
			us, _ := c.Region("us")
			if strings.Join(us.Addresses, " ") != "127.0.0.12 127.0.0.32" {
				t.Fatalf("us addresses %v", us.Addresses)
			}
		}, ""},
		{"nested list", map[string]string{"MERIDIAN_DNS_SUBNETS_1_REGION": "ap"}, func(t *testing.T, c *Config) {
			if c.DNS.Subnets[1].Region != "ap" || c.DNS.Subnets[1].CIDR != "10.1.0.0/16" {
				t.Fatalf("subnets[1] = %+v", c.DNS.Subnets[1])
			}
		}, ""},
		{"secrets and production", map[string]string{
			"MERIDIAN_REGIONS_0_COOKIE_KEY_FILE":          "/run/secrets/eu-cookie",
			"MERIDIAN_REGIONS_0_PREVIOUS_COOKIE_KEY_FILE": "/run/secrets/eu-cookie.old",
			"MERIDIAN_HUB_SECRET_FILE":                    "/run/secrets/hub-secret",
			"MERIDIAN_HUB_PREVIOUS_SECRET_FILE":           "/run/secrets/hub-secret.old",
		}, func(t *testing.T, c *Config) {
			eu, _ := c.Region("eu")
			if eu.CookieKeyFile != "/run/secrets/eu-cookie" || eu.PreviousCookieKeyFile != "/run/secrets/eu-cookie.old" {
				t.Fatalf("eu cookie key files %q %q", eu.CookieKeyFile, eu.PreviousCookieKeyFile)
			}
			if c.Hub.SecretFile != "/run/secrets/hub-secret" || c.Hub.PreviousSecretFile != "/run/secrets/hub-secret.old" {
				t.Fatalf("hub secret files %q %q", c.Hub.SecretFile, c.Hub.PreviousSecretFile)
			}
		}, ""},
		{"production from the environment", map[string]string{"MERIDIAN_FEDERATION_PRODUCTION": "true"}, nil,
			"federation.scheme: invalid configuration: must be https (federation.production serves TLS everywhere)"},
		{"password memory budget", map[string]string{"MERIDIAN_REGIONS_1_LOGIN_PASSWORD_MEMORY_BUDGET_MIB": "256"}, func(t *testing.T, c *Config) {
			us, _ := c.Region("us")
			eu, _ := c.Region("eu")
			if us.Login.PasswordMemoryBudgetMiB != 256 || eu.Login.PasswordMemoryBudgetMiB != 0 {
				t.Fatalf("us budget %d MiB, eu %d MiB", us.Login.PasswordMemoryBudgetMiB, eu.Login.PasswordMemoryBudgetMiB)
			}
		}, ""},
		{"password memory budget below one verification", map[string]string{"MERIDIAN_REGIONS_0_LOGIN_PASSWORD_MEMORY_BUDGET_MIB": "63"}, nil,
			"regions[0].login.password_memory_budget_mib: invalid configuration: must be 0 (default) or at least 64"},
		{"negative password memory budget", map[string]string{"MERIDIAN_REGIONS_0_LOGIN_PASSWORD_MEMORY_BUDGET_MIB": "-1"}, nil,
			"regions[0].login.password_memory_budget_mib: invalid configuration"},
		{"trusted proxies", map[string]string{"MERIDIAN_HUB_TRUSTED_PROXIES": "10.0.0.0/8,192.0.2.7",
			"MERIDIAN_REGIONS_0_TRUSTED_PROXIES": "2001:db8::/32"}, func(t *testing.T, c *Config) {
			eu, _ := c.Region("eu")
			if strings.Join(c.Hub.TrustedProxies, " ") != "10.0.0.0/8 192.0.2.7" || strings.Join(eu.TrustedProxies, " ") != "2001:db8::/32" {
				t.Fatalf("hub trusted proxies %v, eu %v", c.Hub.TrustedProxies, eu.TrustedProxies)
			}
		}, ""},
		{"trusted proxy not an address", map[string]string{"MERIDIAN_HUB_TRUSTED_PROXIES": "proxy.example"}, nil,
			"hub.trusted_proxies[0]: invalid configuration"},
		{"index out of range", map[string]string{"MERIDIAN_REGIONS_5_DATABASE": "postgres://x/db"}, nil,
			"MERIDIAN_REGIONS_5_DATABASE: invalid configuration: sets regions[5].database but the file has 3 entries"},
		{"unknown key", map[string]string{"MERIDIAN_REGIONS_0_DATBASE": "postgres://x/db"}, nil,
			"MERIDIAN_REGIONS_0_DATBASE: invalid configuration: names no key of regions[0]"},
		{"validated after override", map[string]string{"MERIDIAN_REGIONS_0_DR_DATABASE": "redis://x/db"}, nil,
			"regions[0].dr.database: invalid configuration"},
		{"same database for both sites", map[string]string{"MERIDIAN_REGIONS_0_DATABASE": "postgres://x/db",
			"MERIDIAN_REGIONS_0_DR_DATABASE": "postgres://x/db"}, nil, "regions[0].dr.database: invalid configuration: must be the DR site's own"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			c, err := Load("../configs/regions.yaml")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalid) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

// TestHubHasNoDatabase: the database key of a site is not accepted on the hub.
func TestHubHasNoDatabase(t *testing.T) {
	t.Setenv("MERIDIAN_HUB_DATABASE", "postgres://x/db")
	if _, err := Load("../configs/regions.yaml"); err == nil || !strings.Contains(err.Error(), "hub.database") {
		t.Fatalf("err = %v", err)
	}
}
