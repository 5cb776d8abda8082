package geodns

import (
	"net/netip"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// demoYAML is the local-demo configuration as the hub's YAML would carry it.
const demoYAML = `
zone: id.localhost.
ttl: 30
global_host: id.localhost.
name_servers:
  - name: ns1.id.localhost.
    addrs: [127.0.0.10]
hub_host:
  name: hub.id.localhost.
  addrs: [127.0.0.10]
regions:
  - id: eu
    host: {name: eu.id.localhost., addrs: [127.0.0.11]}
    dr: {name: eu-dr.id.localhost., addrs: [127.0.0.21]}
    health_url: http://127.0.0.11:8080/readyz
    dr_health_url: http://127.0.0.21:8080/readyz
    proximity: [us, ap]
  - id: us
    host: {name: us.id.localhost., addrs: [127.0.0.12]}
    health_url: http://127.0.0.12:8080/readyz
    proximity: [eu, ap]
  - id: ap
    host: {name: ap.id.localhost., addrs: [127.0.0.13]}
    health_url: http://127.0.0.13:8080/readyz
    proximity: [us, eu]
subnets:
  - {prefix: 192.0.2.0/24, region: eu}
  - {prefix: 198.51.100.0/24, region: us}
  - {prefix: 203.0.113.0/24, region: ap}
default_region: us
health: {interval: 5s, timeout: 2s, fall: 3, rise: 2}
rate_limit: {responses_per_second: 50, burst: 100, slip: 2}
`

func TestConfigFromYAML(t *testing.T) {
	var c Config
	if err := yaml.Unmarshal([]byte(demoYAML), &c); err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	if c.Regions[0].DR == nil || c.Regions[0].DR.Addrs[0] != netip.MustParseAddr("127.0.0.21") {
		t.Errorf("DR not decoded: %+v", c.Regions[0].DR)
	}
	if c.Subnets[1].Prefix != netip.MustParsePrefix("198.51.100.0/24") || c.Health.Interval != 5*time.Second ||
		c.RateLimit.Burst != 100 {
		t.Errorf("decoded config: %+v", c)
	}
}
