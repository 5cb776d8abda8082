package geodns

import (
	"fmt"
	"net/netip"

	"github.com/meridian-id/meridian/config"
)

// FromConfig derives the GeoDNS configuration from the federation config:
// the zone is the global host, every region and DR site is health-checked
// at its /readyz on the address the routers dial.
func FromConfig(c *config.Config) (Config, error) {
	addrs := func(key string, ss []string) ([]netip.Addr, error) {
		out := make([]netip.Addr, 0, len(ss))
		for i, s := range ss {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
			}
			out = append(out, a)
		}
		return out, nil
	}
	scheme := c.Federation.Scheme
	g := Config{
		Zone:          c.Federation.GlobalHost,
		TTL:           c.DNS.TTL,
		GlobalHost:    c.Federation.GlobalHost,
		DefaultRegion: c.DNS.DefaultRegion,
		MMDBPath:      c.DNS.MMDB,
		Health:        HealthConfig{Interval: c.DNS.Health.Interval, Timeout: c.DNS.Health.Timeout, Fall: c.DNS.Health.Fall, Rise: c.DNS.Health.Rise},
		RateLimit:     RateLimitConfig{ResponsesPerSecond: float64(c.DNS.RateLimit)},
		SOA:           SOA{RName: "hostmaster." + c.Federation.GlobalHost},
	}
	var err error
	if g.HubHost.Addrs, err = addrs("hub.addresses", c.Hub.Addresses); err != nil {
		return Config{}, err
	}
	g.HubHost.Name = c.Hub.Host
	for i, ns := range c.DNS.NameServers {
		a, err := addrs(fmt.Sprintf("dns.nameservers[%d].addresses", i), ns.Addresses)
		if err != nil {
			return Config{}, err
		}
		g.NameServers = append(g.NameServers, NameServer{Name: ns.Name, Addrs: a})
	}
	if len(g.NameServers) > 0 {
		g.SOA.MName = g.NameServers[0].Name
	}
	for i := range c.Regions {
		r := &c.Regions[i]
		a, err := addrs(fmt.Sprintf("regions[%d].addresses", i), r.Addresses)
		if err != nil {
			return Config{}, err
		}
		gr := Region{ID: r.ID, Host: Host{Name: r.Host, Addrs: a}, Proximity: r.Proximity,
			HealthURL: scheme + "://" + c.Upstream(r.Site) + "/readyz"}
		if r.DR != nil {
			da, err := addrs(fmt.Sprintf("regions[%d].dr.addresses", i), r.DR.Addresses)
			if err != nil {
				return Config{}, err
			}
			gr.DR = &Host{Name: r.DR.Host, Addrs: da}
			gr.DRHealthURL = scheme + "://" + c.Upstream(*r.DR) + "/readyz"
		}
		g.Regions = append(g.Regions, gr)
	}
	for i, s := range c.DNS.Subnets {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			return Config{}, fmt.Errorf("dns.subnets[%d].cidr: %w", i, err)
		}
		g.Subnets = append(g.Subnets, SubnetRoute{Prefix: p.Masked(), Region: s.Region})
	}
	g = g.WithDefaults()
	if err := g.Validate(); err != nil {
		return Config{}, fmt.Errorf("dns: %w", err)
	}
	return g, nil
}
