package geodns

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // substring; "" means valid
	}{
		{"names without dot or case are fine", func(c *Config) { c.Zone = "ID.Localhost"; c.GlobalHost = "id.localhost" }, ""},
		{"mmdb", func(c *Config) { c.MMDBPath = "/var/lib/GeoLite2-Country.mmdb" }, "MMDBPath: mmdb not supported in this build"},
		{"no zone", func(c *Config) { c.Zone = "" }, "Zone: required"},
		{"bad zone", func(c *Config) { c.Zone = "a..b" }, "Zone:"},
		{"global host outside", func(c *Config) { c.GlobalHost = "id.example." }, "GlobalHost: \"id.example.\" is not inside zone"},
		{"no name servers", func(c *Config) { c.NameServers = nil }, "NameServers: at least one"},
		{"in-zone NS without glue", func(c *Config) { c.NameServers[0].Addrs = nil }, "NameServers[0].Addrs: at least one address"},
		{"out-of-zone NS with addrs", func(c *Config) { c.NameServers[1].Addrs = []netip.Addr{a("127.0.0.9")} }, "NameServers[1].Addrs"},
		{"rname as e-mail", func(c *Config) { c.SOA.RName = "hostmaster@id.localhost" }, "SOA.RName"},
		{"no regions", func(c *Config) { c.Regions = nil; c.Subnets = nil }, "Regions: at least one"},
		{"duplicate region", func(c *Config) { c.Regions[1].ID = "eu" }, "Regions[1].ID: duplicate region \"eu\""},
		{"empty region id", func(c *Config) { c.Regions[0].ID = "" }, "Regions[0].ID: empty"},
		{"region host outside zone", func(c *Config) { c.Regions[0].Host.Name = "eu.example." }, "Regions[0] (eu).Host.Name"},
		{"region host without addrs", func(c *Config) { c.Regions[0].Host.Addrs = nil }, "Regions[0] (eu).Host.Addrs"},
		{"duplicate address", func(c *Config) { c.Regions[0].Host.Addrs = []netip.Addr{a("127.0.0.11"), a("::ffff:127.0.0.11")} }, "listed twice"},
		{"name used twice", func(c *Config) { c.Regions[1].Host.Name = "eu.id.localhost." }, "already used by Regions[0] (eu).Host.Name"},
		{"host at apex", func(c *Config) { c.HubHost.Name = "id.localhost." }, "HubHost.Name"},
		{"bad health URL", func(c *Config) { c.Regions[0].HealthURL = "ftp://127.0.0.1/readyz" }, "Regions[0] (eu).HealthURL"},
		{"DR health URL without DR", func(c *Config) { c.Regions[2].DRHealthURL = "http://127.0.0.1/readyz" }, "Regions[2] (ap).DRHealthURL"},
		{"unknown proximity", func(c *Config) { c.Regions[0].Proximity = []string{"mars"} }, "Regions[0] (eu).Proximity[0]: unknown region \"mars\""},
		{"self proximity", func(c *Config) { c.Regions[0].Proximity = []string{"eu"} }, "cannot list itself"},
		{"subnet with host bits", func(c *Config) { c.Subnets[0].Prefix = p("192.0.2.1/24") }, "Subnets[0].Prefix: 192.0.2.1/24 has host bits set"},
		{"subnet too long v4", func(c *Config) { c.Subnets[0].Prefix = p("192.0.2.128/25") }, "longer than /24"},
		{"subnet too long v6", func(c *Config) { c.Subnets[6].Prefix = p("2001:db8::/64") }, "longer than /56"},
		{"subnet mapped", func(c *Config) { c.Subnets[0].Prefix = p("::ffff:192.0.2.0/120") }, "IPv4-mapped"},
		{"subnet unknown region", func(c *Config) { c.Subnets[0].Region = "mars" }, "Subnets[0].Region"},
		{"subnet twice", func(c *Config) { c.Subnets[1].Prefix = c.Subnets[0].Prefix }, "Subnets[1].Prefix: 192.0.2.0/24 listed twice"},
		{"subnet missing", func(c *Config) { c.Subnets[0].Prefix = netip.Prefix{} }, "Subnets[0].Prefix: missing"},
		{"no default region", func(c *Config) { c.DefaultRegion = "" }, "DefaultRegion: required"},
		{"unknown default region", func(c *Config) { c.DefaultRegion = "mars" }, "DefaultRegion: unknown region"},
		{"timeout over interval", func(c *Config) { c.Health.Interval = time.Second; c.Health.Timeout = 2 * time.Second }, "Health.Timeout"},
		{"negative fall", func(c *Config) { c.Health.Fall = -1 }, "Health.Fall"},
		{"negative rate", func(c *Config) { c.RateLimit.ResponsesPerSecond = -1 }, "RateLimit.ResponsesPerSecond"},
		{"small UDP size", func(c *Config) { c.MaxUDPSize = 100 }, "MaxUDPSize"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := testConfig()
			tc.mutate(&c)
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Fatalf("Validate accepted the config, want error %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Fatalf("Validate: %v\nwant it to mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Zone: "Id.Localhost", NameServers: []NameServer{{Name: "NS1.id.localhost"}},
		RateLimit: RateLimitConfig{ResponsesPerSecond: 2.5}}.WithDefaults()
	if c.Zone != "id.localhost." || c.NameServers[0].Name != "ns1.id.localhost." {
		t.Errorf("names not canonical: %q %q", c.Zone, c.NameServers[0].Name)
	}
	if c.TTL != DefaultTTL || c.MaxUDPSize != DefaultMaxUDPSize || c.SOA.MName != "ns1.id.localhost." ||
		c.SOA.RName != "hostmaster.id.localhost." || c.Health.Fall != DefaultHealthFall ||
		c.RateLimit.Burst != 3 || c.RateLimit.Slip != DefaultSlip {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func TestIsInZone(t *testing.T) {
	tests := []struct {
		name, zone string
		want       bool
	}{
		{"id.localhost.", "id.localhost.", true},
		{"eu.id.localhost.", "id.localhost.", true},
		{"xid.localhost.", "id.localhost.", false},
		{`x\.id.localhost.`, "id.localhost.", false},
		{`x\\.id.localhost.`, "id.localhost.", true}, // escaped backslash, real dot
		{"localhost.", "id.localhost.", false},
		{"anything.", ".", true},
	}
	for _, tc := range tests {
		if got := isInZone(tc.name, tc.zone); got != tc.want {
			t.Errorf("isInZone(%q, %q) = %v, want %v", tc.name, tc.zone, got, tc.want)
		}
	}
}
