package geodns

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/meridian-id/meridian/config"
)

// StateFileName is the failover state file FromConfig places in data_dir.
const StateFileName = "geodns-state.json"

// FromConfig derives the GeoDNS configuration from the federation config and
// validates it (the one validation of the dns block; errors name the
// regions.yaml key and wrap [config.ErrInvalid]). The zone is the global
// host; every address of each region and DR site is health-checked at its
// /readyz on the port the site listens on, with the site's host name as the
// Host header and TLS server name. The failover state is kept in
// <data_dir>/geodns-state.json.
func FromConfig(c *config.Config) (Config, error) {
	addrs := func(key string, ss []string) ([]netip.Addr, error) {
		out := make([]netip.Addr, 0, len(ss))
		for i, s := range ss {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, invalid(fmt.Sprintf("%s[%d]", key, i), "%q is not an IP address", s)
			}
			out = append(out, a)
		}
		return out, nil
	}
	scheme := c.Federation.Scheme
	healthURL := func(s config.Site) string {
		port := fmt.Sprint(c.Federation.Port)
		if _, p, err := net.SplitHostPort(s.Listen); err == nil && p != "0" {
			port = p
		}
		return scheme + "://" + net.JoinHostPort(s.Host, port) + "/readyz"
	}
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
	if c.DataDir != "" {
		g.StateFile = filepath.Join(c.DataDir, StateFileName)
	}
	var err error
	if g.Health.TLSClientConfig, err = c.Federation.ClientTLS(); err != nil {
		return Config{}, err
	}
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
			HealthURL: healthURL(r.Site)}
		if r.DR != nil {
			da, err := addrs(fmt.Sprintf("regions[%d].dr.addresses", i), r.DR.Addresses)
			if err != nil {
				return Config{}, err
			}
			gr.DR = &Host{Name: r.DR.Host, Addrs: da}
			gr.DRHealthURL = healthURL(*r.DR)
		}
		g.Regions = append(g.Regions, gr)
	}
	for i, s := range c.DNS.Subnets {
		p, err := netip.ParsePrefix(s.CIDR)
		if err != nil {
			return Config{}, invalid(fmt.Sprintf("dns.subnets[%d].cidr", i), "%q is not a CIDR prefix", s.CIDR)
		}
		g.Subnets = append(g.Subnets, SubnetRoute{Prefix: p, Region: s.Region})
	}
	g = g.WithDefaults()
	if err := g.Validate(); err != nil {
		return Config{}, err
	}
	return g, nil
}
