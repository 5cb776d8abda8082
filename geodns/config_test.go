package geodns

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
)

// TestConfigValidate pins the whole message of each error: the
// regions.yaml key first, then what is wrong.
func TestConfigValidate(t *testing.T) {
	if err := testConfig().Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	tests := []struct {
		name    string
		mutate  func(*Config)
		wantErr string // the whole message; "" means valid
	}{
		{"names without dot or case are fine", func(c *Config) { c.Zone = "ID.Localhost"; c.GlobalHost = "id.localhost" }, ""},
		{"mmdb", func(c *Config) { c.MMDBPath = "/var/lib/GeoLite2-Country.mmdb" }, "dns.mmdb: invalid configuration: MaxMind databases are not supported in this build; route with dns.subnets"},
		{"no zone", func(c *Config) { c.Zone = "" }, "federation.global_host: invalid configuration: a name is required"},
		{"bad zone", func(c *Config) { c.Zone = "a..b" }, `federation.global_host: invalid configuration: "a..b." is not a valid domain name`},
		{"global host outside", func(c *Config) { c.GlobalHost = "id.example." }, `federation.global_host: invalid configuration: "id.example." is not inside zone "id.localhost."`},
		{"no name servers", func(c *Config) { c.NameServers = nil }, "dns.nameservers: invalid configuration: at least one name server is required"},
		{"in-zone NS without glue", func(c *Config) { c.NameServers[0].Addrs = nil }, "dns.nameservers[0].addresses: invalid configuration: at least one address is required"},
		{"out-of-zone NS with addrs", func(c *Config) { c.NameServers[1].Addrs = []netip.Addr{a("127.0.0.9")} }, `dns.nameservers[1].addresses: invalid configuration: "ns.example.net." is outside the zone, so its addresses would never be served; remove them`},
		{"rname as e-mail", func(c *Config) { c.SOA.RName = "hostmaster@id.localhost" }, `geodns.Config.SOA.RName: invalid configuration: "hostmaster@id.localhost." must be in domain form (hostmaster.example.), not an e-mail address`},
		{"no regions", func(c *Config) { c.Regions = nil; c.Subnets = nil }, "regions: invalid configuration: at least one region is required"},
		{"duplicate region", func(c *Config) { c.Regions[1].ID = "eu" }, `regions[1].id: invalid configuration: duplicate region id "eu"`},
		{"empty region id", func(c *Config) { c.Regions[0].ID = "" }, `regions[0].id: invalid configuration: "" is not a region id (1-16 of a-z, 0-9, -; not starting with -)`},
		{"region id with leading dash", func(c *Config) { c.Regions[0].ID = "-eu" }, `regions[0].id: invalid configuration: "-eu" is not a region id (1-16 of a-z, 0-9, -; not starting with -)`},
		{"region host outside zone", func(c *Config) { c.Regions[0].Host.Name = "eu.example." }, `regions[0].host: invalid configuration: "eu.example." is not inside zone "id.localhost."`},
		{"region host without addrs", func(c *Config) { c.Regions[0].Host.Addrs = nil }, "regions[0].addresses: invalid configuration: at least one address is required"},
		{"duplicate address", func(c *Config) { c.Regions[0].Host.Addrs = []netip.Addr{a("127.0.0.11"), a("::ffff:127.0.0.11")} }, "regions[0].addresses[1]: invalid configuration: ::ffff:127.0.0.11 listed twice"},
		{"duplicate DR address", func(c *Config) { c.Regions[0].DR.Addrs = []netip.Addr{a("127.0.0.21"), a("127.0.0.21")} }, "regions[0].dr.addresses[1]: invalid configuration: 127.0.0.21 listed twice"},
		{"name used twice", func(c *Config) { c.Regions[1].Host.Name = "eu.id.localhost." }, `regions[1].host: invalid configuration: name "eu.id.localhost." is already used by regions[0].host`},
		{"host at apex", func(c *Config) { c.HubHost.Name = "id.localhost." }, "hub.host: invalid configuration: only federation.global_host may be the zone apex"},
		{"bad health URL", func(c *Config) { c.Regions[0].HealthURL = "ftp://127.0.0.1/readyz" }, `geodns.Config.Regions[0].HealthURL: invalid configuration: "ftp://127.0.0.1/readyz": scheme must be http or https`},
		{"DR health URL without DR", func(c *Config) { c.Regions[2].DRHealthURL = "http://127.0.0.1/readyz" }, "geodns.Config.Regions[2].DRHealthURL: invalid configuration: set but the region has no DR site"},
		{"unknown proximity", func(c *Config) { c.Regions[0].Proximity = []string{"mars"} }, `regions[0].proximity[0]: invalid configuration: "mars" is not another configured region`},
		{"self proximity", func(c *Config) { c.Regions[0].Proximity = []string{"eu"} }, `regions[0].proximity[0]: invalid configuration: "eu" is not another configured region`},
		{"proximity twice", func(c *Config) { c.Regions[0].Proximity = []string{"us", "us"} }, `regions[0].proximity[1]: invalid configuration: region "us" listed twice`},
		{"subnet with host bits", func(c *Config) { c.Subnets[0].Prefix = p("192.0.2.1/24") }, "dns.subnets[0].cidr: invalid configuration: 192.0.2.1/24 has host bits set (did you mean 192.0.2.0/24?)"},
		{"subnet too long v4", func(c *Config) { c.Subnets[0].Prefix = p("192.0.2.128/25") }, "dns.subnets[0].cidr: invalid configuration: 192.0.2.128/25 is longer than /24, the longest client prefix looked at"},
		{"subnet too long v6", func(c *Config) { c.Subnets[6].Prefix = p("2001:db8::/64") }, "dns.subnets[6].cidr: invalid configuration: 2001:db8::/64 is longer than /56, the longest client prefix looked at"},
		{"subnet mapped", func(c *Config) { c.Subnets[0].Prefix = p("::ffff:192.0.2.0/120") }, "dns.subnets[0].cidr: invalid configuration: ::ffff:192.0.2.0/120 is IPv4-mapped IPv6; write the IPv4 prefix"},
		{"subnet unknown region", func(c *Config) { c.Subnets[0].Region = "mars" }, `dns.subnets[0].region: invalid configuration: "mars" is not a configured region`},
		{"subnet twice", func(c *Config) { c.Subnets[1].Prefix = c.Subnets[0].Prefix }, "dns.subnets[1].cidr: invalid configuration: 192.0.2.0/24 listed twice"},
		{"subnet missing", func(c *Config) { c.Subnets[0].Prefix = netip.Prefix{} }, "dns.subnets[0].cidr: invalid configuration: missing or invalid prefix"},
		{"no default region", func(c *Config) { c.DefaultRegion = "" }, `dns.default_region: invalid configuration: "" is not a configured region`},
		{"unknown default region", func(c *Config) { c.DefaultRegion = "mars" }, `dns.default_region: invalid configuration: "mars" is not a configured region`},
		{"timeout over interval", func(c *Config) { c.Health.Interval = time.Second; c.Health.Timeout = 2 * time.Second }, "dns.health.timeout: invalid configuration: 2s must be positive and at most dns.health.interval (1s)"},
		{"negative fall", func(c *Config) { c.Health.Fall = -1 }, "dns.health.fall: invalid configuration: -1 must be at least 1"},
		{"negative rise", func(c *Config) { c.Health.Rise = -1 }, "dns.health.rise: invalid configuration: -1 must be at least 1"},
		{"negative rate", func(c *Config) { c.RateLimit.ResponsesPerSecond = -1 }, "dns.rate_limit: invalid configuration: -1 must be 0 (off) or positive"},
		{"small UDP size", func(c *Config) { c.MaxUDPSize = 100 }, "geodns.Config.MaxUDPSize: invalid configuration: 100 is below the DNS minimum of 512"},
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
			case tc.wantErr != "" && err.Error() != tc.wantErr:
				t.Fatalf("Validate:\n got %s\nwant %s", err, tc.wantErr)
			case tc.wantErr != "" && !errors.Is(err, config.ErrInvalid):
				t.Fatalf("Validate: %v does not wrap config.ErrInvalid", err)
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
