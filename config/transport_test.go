package config

import (
	"errors"
	"strings"
	"testing"
)

// TestProductionRefusesPlainTextStores: federation.production refuses a
// database or Redis URL that would speak plain text off the host, naming
// the YAML key and never printing the URL's password; loopback and unix
// sockets are allowed, and outside production every URL is accepted.
func TestProductionRefusesPlainTextStores(t *testing.T) {
	const secret = "s3cr3t-pw"
	tests := []struct {
		name   string
		mutate func(c *Config, url string)
		url    string
		key    string // "" = valid
	}{
		{"postgres verify-full", setPrimaryDB, "postgres://u:" + secret + "@db.internal:5432/m?sslmode=verify-full", ""},
		{"postgres require", setPrimaryDB, "postgres://u:" + secret + "@db.internal/m?sslmode=require", ""},
		{"postgres without sslmode", setPrimaryDB, "postgres://u:" + secret + "@db.internal/m", "regions[0].database"},
		{"postgres disable", setPrimaryDB, "postgresql://u:" + secret + "@10.0.0.5/m?sslmode=disable", "regions[0].database"},
		{"postgres allow", setPrimaryDB, "postgres://u:" + secret + "@db.internal/m?sslmode=allow", "regions[0].database"},
		{"postgres prefer", setPrimaryDB, "postgres://u:" + secret + "@db.internal/m?sslmode=prefer", "regions[0].database"},
		{"postgres multi-host, one remote", setPrimaryDB, "postgres://u:" + secret + "@127.0.0.1:5432,db.internal:5432/m", "regions[0].database"},
		{"postgres loopback plain", setPrimaryDB, "postgres://u:" + secret + "@127.0.0.1:5432/m?sslmode=disable", ""},
		{"postgres localhost plain", setPrimaryDB, "postgres://u:" + secret + "@localhost/m", ""},
		{"postgres ipv6 loopback plain", setPrimaryDB, "postgres://u:" + secret + "@[::1]:5432/m", ""},
		{"postgres unix socket", setPrimaryDB, "postgres:///m?host=/var/run/postgresql", ""},
		{"postgres host= remote", setPrimaryDB, "postgres://u:" + secret + "@/m?host=db.internal", "regions[0].database"},
		{"DR postgres plain", setDRDB, "postgres://u:" + secret + "@standby.internal/m?sslmode=disable", "regions[0].dr.database"},
		{"DR postgres TLS", setDRDB, "postgres://u:" + secret + "@standby.internal/m?sslmode=verify-ca", ""},
		{"mysql tls=true", setPrimaryDB, "mysql://u:" + secret + "@db.internal:3306/m?tls=true", ""},
		{"mysql custom tls", setPrimaryDB, "mysql://u:" + secret + "@db.internal:3306/m?tls=private-ca", ""},
		{"mysql without tls", setPrimaryDB, "mysql://u:" + secret + "@db.internal:3306/m", "regions[0].database"},
		{"mysql tls=false", setPrimaryDB, "mysql://u:" + secret + "@db.internal:3306/m?tls=false", "regions[0].database"},
		{"mysql tls=preferred", setPrimaryDB, "mysql://u:" + secret + "@db.internal:3306/m?tls=preferred", "regions[0].database"},
		{"mysql loopback plain", setPrimaryDB, "mysql://root:" + secret + "@127.0.0.1:3306/m", ""},
		{"rediss", setRedis, "rediss://:" + secret + "@cache.internal:6379/1", ""},
		{"redis remote", setRedis, "redis://:" + secret + "@cache.internal:6379/1", "hub.redis"},
		{"redis remote ip", setRedis, "redis://u:" + secret + "@10.0.0.9:6379/1", "hub.redis"},
		{"redis loopback", setRedis, "redis://:" + secret + "@127.0.0.1:6379/1", ""},
		{"redis localhost", setRedis, "redis://localhost:6379/1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := productionConfig()
			tc.mutate(c, tc.url)
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
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error prints the password: %v", err)
			}
			c.Federation.Production = false
			if err := c.Validate(); err != nil {
				t.Fatalf("without production: %v", err)
			}
		})
	}
}

func setPrimaryDB(c *Config, u string) { c.Regions[0].Database = u }
func setDRDB(c *Config, u string)      { c.Regions[0].DR.Database = u }
func setRedis(c *Config, u string)     { c.Hub.Redis = u }
