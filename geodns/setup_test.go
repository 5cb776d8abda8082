package geodns

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
)

func TestFromExampleConfig(t *testing.T) {
	c, err := config.Load("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := FromConfig(c)
	if err != nil {
		t.Fatal(err)
	}
	if g.Zone != "id.localhost." || len(g.Regions) != 3 || g.Regions[0].DR == nil ||
		g.Regions[0].HealthURL != "http://eu.id.localhost:8080/readyz" ||
		g.Regions[0].DRHealthURL != "http://eu-dr.id.localhost:8080/readyz" ||
		g.StateFile != filepath.Join(c.DataDir, StateFileName) {
		t.Fatalf("derived config: %+v", g)
	}
}

// TestFromConfigErrors edits the example regions.yaml: each dns-block error
// is reported once, by FromConfig, naming the YAML key; config.Load accepts
// the file (the dns block has one validator).
func TestFromConfigErrors(t *testing.T) {
	example, err := os.ReadFile("../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, old, new, want string
	}{
		{"bad cidr", "cidr: 10.1.0.0/16", "cidr: 10.1.0.0/99", `dns.subnets[1].cidr: invalid configuration: "10.1.0.0/99" is not a CIDR prefix`},
		{"host bits", "cidr: 10.1.0.0/16", "cidr: 10.1.2.0/16", "dns.subnets[1].cidr: invalid configuration: 10.1.2.0/16 has host bits set (did you mean 10.1.0.0/16?)"},
		{"prefix too long", "cidr: 10.1.0.0/16", "cidr: 10.1.0.0/28", "dns.subnets[1].cidr: invalid configuration: 10.1.0.0/28 is longer than /24, the longest client prefix looked at"},
		{"subnet region", "{ cidr: 10.1.0.0/16, region: us }", "{ cidr: 10.1.0.0/16, region: mars }", `dns.subnets[1].region: invalid configuration: "mars" is not a configured region`},
		{"default region", "default_region: eu", "default_region: mars", `dns.default_region: invalid configuration: "mars" is not a configured region`},
		{"mmdb", "rate_limit: 0 ", "mmdb: /x.mmdb\n  rate_limit: 0 ", "dns.mmdb: invalid configuration: MaxMind databases are not supported in this build; route with dns.subnets"},
		{"health fall", "fall: 3 ", "fall: -1 ", "dns.health.fall: invalid configuration: -1 must be at least 1"},
		{"rate limit", "rate_limit: 0 ", "rate_limit: -5 ", "dns.rate_limit: invalid configuration: -5 must be 0 (off) or positive"},
		{"name server outside the zone with glue", "name: ns1.id.localhost", "name: ns1.example.net", `dns.nameservers[0].addresses: invalid configuration: "ns1.example.net." is outside the zone, so its addresses would never be served; remove them`},
		{"duplicate site address", "addresses: [127.0.0.13]", "addresses: [127.0.0.13, 127.0.0.13]", "regions[2].addresses[1]: invalid configuration: 127.0.0.13 listed twice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(string(example), tc.old) {
				t.Fatalf("example lacks %q", tc.old)
			}
			p := filepath.Join(t.TempDir(), "regions.yaml")
			if err := os.WriteFile(p, []byte(strings.Replace(string(example), tc.old, tc.new, 1)), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(p)
			if err != nil {
				t.Fatalf("config.Load: %v (the dns block is validated by FromConfig only)", err)
			}
			_, err = FromConfig(c)
			if err == nil || err.Error() != tc.want || !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("FromConfig:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
}
