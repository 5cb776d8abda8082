package geodns

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Defaults applied by [Config.WithDefaults] to fields left at their zero value.
const (
	DefaultTTL            = 30
	DefaultMaxUDPSize     = 1232 // DNS Flag Day 2020 recommendation
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
	DefaultHealthFall     = 3
	DefaultHealthRise     = 2
	DefaultSlip           = 2
	DefaultSOARefresh     = 3600
	DefaultSOARetry       = 600
	DefaultSOAExpire      = 86400
	DefaultSOAMinimum     = 30
)

// Longest client prefixes the server ever looks at: the source address, or
// the ECS address, is cut to this many bits before routing, and the rate
// limiter keys its buckets by prefixes of this length.
const (
	MaxPrefixV4 = 24
	MaxPrefixV6 = 56
)

// Config describes the zone served and how the global host is steered. It is
// a plain struct so the caller can fill it from YAML (the yaml tags match
// go.yaml.in/yaml/v3, which decodes netip.Addr, netip.Prefix and
// time.Duration from their usual text forms). Names may be given with or
// without the trailing dot and in any case; they are compared
// case-insensitively.
type Config struct {
	// Zone is the apex this server is authoritative for, e.g. "id.localhost.".
	Zone string `yaml:"zone"`
	// TTL of every record served (default 30 s). Kept short so health
	// changes reach clients quickly.
	TTL uint32 `yaml:"ttl"`
	// SOA is the zone's start-of-authority record.
	SOA SOA `yaml:"soa"`
	// NameServers are the zone's NS records. Names inside the zone need at
	// least one address (served as glue and as their own A/AAAA); names
	// outside the zone must have none.
	NameServers []NameServer `yaml:"name_servers"`
	// GlobalHost is the steered name apps use, e.g. "id.localhost.". It may
	// equal Zone.
	GlobalHost string `yaml:"global_host"`
	// HubHost is the hub's name and addresses. Optional: an empty Name
	// serves no hub record.
	HubHost Host `yaml:"hub_host"`
	// Regions lists the serving regions; at least one is required.
	Regions []Region `yaml:"regions"`
	// Subnets route client prefixes to regions; the longest match wins.
	// Prefixes may be at most /24 (IPv4) or /56 (IPv6), since client
	// addresses are never looked at beyond that.
	Subnets []SubnetRoute `yaml:"subnets"`
	// DefaultRegion answers clients no subnet matches.
	DefaultRegion string `yaml:"default_region"`
	// MMDBPath would name a MaxMind database for country-based routing. It
	// is not supported in this build: a non-empty value fails validation.
	MMDBPath string `yaml:"mmdb_path"`
	// Health configures the upstream checker.
	Health HealthConfig `yaml:"health"`
	// RateLimit configures response-rate limiting over UDP.
	RateLimit RateLimitConfig `yaml:"rate_limit"`
	// MaxUDPSize is the largest UDP response sent, whatever larger size a
	// client advertises, and the EDNS buffer size the server advertises
	// (default 1232).
	MaxUDPSize uint16 `yaml:"max_udp_size"`
}

// SOA holds the fields of the zone's SOA record. Zero fields take defaults:
// MName the first name server, RName "hostmaster.<zone>", Serial 1, and the
// Default* timers.
type SOA struct {
	MName   string `yaml:"mname"`
	RName   string `yaml:"rname"` // mailbox in domain form: hostmaster.id.localhost.
	Serial  uint32 `yaml:"serial"`
	Refresh uint32 `yaml:"refresh"`
	Retry   uint32 `yaml:"retry"`
	Expire  uint32 `yaml:"expire"`
	Minimum uint32 `yaml:"minimum"` // negative-caching TTL (RFC 2308)
}

// NameServer is one NS record of the zone plus its glue addresses.
type NameServer struct {
	Name  string       `yaml:"name"`
	Addrs []netip.Addr `yaml:"addrs"`
}

// Host is a name in the zone and the addresses it answers with.
type Host struct {
	Name  string       `yaml:"name"`
	Addrs []netip.Addr `yaml:"addrs"`
}

// Region is one serving region.
type Region struct {
	// ID names the region in Subnets, Proximity, DefaultRegion, metrics and
	// logs, e.g. "eu".
	ID string `yaml:"id"`
	// Host is the region's own name and addresses, e.g. eu.id.localhost.
	Host Host `yaml:"host"`
	// DR is the region's disaster-recovery site, optional. Its name always
	// answers with its addresses; the region host answers with them while
	// the primary is down and the DR site is up.
	DR *Host `yaml:"dr"`
	// HealthURL is polled with GET (the region's /readyz). Empty: the
	// primary is never checked and always counts as up.
	HealthURL string `yaml:"health_url"`
	// DRHealthURL is the DR site's readiness URL; allowed only with DR.
	// Empty: the DR site always counts as up.
	DRHealthURL string `yaml:"dr_health_url"`
	// Proximity lists other region IDs, nearest first, tried in order when
	// this region is down.
	Proximity []string `yaml:"proximity"`
}

// SubnetRoute sends clients inside Prefix to Region.
type SubnetRoute struct {
	Prefix netip.Prefix `yaml:"prefix"`
	Region string       `yaml:"region"`
}

// HealthConfig tunes the upstream checker. Zero fields take the Default*
// values.
type HealthConfig struct {
	// Interval between two rounds of checks.
	Interval time.Duration `yaml:"interval"`
	// Timeout of one check; at most Interval.
	Timeout time.Duration `yaml:"timeout"`
	// Fall is the number of consecutive failures that mark an upstream down.
	Fall int `yaml:"fall"`
	// Rise is the number of consecutive successes that mark it up again.
	Rise int `yaml:"rise"`
	// TLSClientConfig is used for https health URLs (nil: system roots).
	TLSClientConfig *tls.Config `yaml:"-"`
}

// RateLimitConfig limits UDP responses per client subnet (/24 for IPv4, /56
// for IPv6) with a token bucket. TCP is never limited: its source address
// cannot be spoofed, so it cannot be used for reflection.
type RateLimitConfig struct {
	// ResponsesPerSecond refills each bucket; 0 disables rate limiting.
	ResponsesPerSecond float64 `yaml:"responses_per_second"`
	// Burst is the bucket size (default: ResponsesPerSecond rounded up).
	Burst int `yaml:"burst"`
	// Slip: every Slip-th response over the limit is sent as an empty
	// answer with TC=1, so a real client retries over TCP; the others are
	// dropped (as BIND's RRL slip). 0 means the default 2, 1 truncates
	// every one, a negative value drops every one.
	Slip int `yaml:"slip"`
}

// WithDefaults returns c with zero-valued optional fields set to their
// defaults and every name made lower-case and fully qualified. It does not
// validate.
func (c Config) WithDefaults() Config {
	c.Zone = canonName(c.Zone)
	c.GlobalHost = canonName(c.GlobalHost)
	c.HubHost.Name = canonName(c.HubHost.Name)
	if c.TTL == 0 {
		c.TTL = DefaultTTL
	}
	if c.MaxUDPSize == 0 {
		c.MaxUDPSize = DefaultMaxUDPSize
	}
	ns := make([]NameServer, len(c.NameServers))
	for i, n := range c.NameServers {
		n.Name = canonName(n.Name)
		ns[i] = n
	}
	c.NameServers = ns
	regions := make([]Region, len(c.Regions))
	for i, r := range c.Regions {
		r.Host.Name = canonName(r.Host.Name)
		if r.DR != nil {
			dr := *r.DR
			dr.Name = canonName(dr.Name)
			r.DR = &dr
		}
		regions[i] = r
	}
	c.Regions = regions

	c.SOA.MName = canonName(c.SOA.MName)
	c.SOA.RName = canonName(c.SOA.RName)
	if c.SOA.MName == "" && len(c.NameServers) > 0 {
		c.SOA.MName = c.NameServers[0].Name
	}
	if c.SOA.RName == "" && c.Zone != "" {
		c.SOA.RName = "hostmaster." + c.Zone
	}
	if c.SOA.Serial == 0 {
		c.SOA.Serial = 1
	}
	if c.SOA.Refresh == 0 {
		c.SOA.Refresh = DefaultSOARefresh
	}
	if c.SOA.Retry == 0 {
		c.SOA.Retry = DefaultSOARetry
	}
	if c.SOA.Expire == 0 {
		c.SOA.Expire = DefaultSOAExpire
	}
	if c.SOA.Minimum == 0 {
		c.SOA.Minimum = DefaultSOAMinimum
	}

	if c.Health.Interval == 0 {
		c.Health.Interval = DefaultHealthInterval
	}
	if c.Health.Timeout == 0 {
		c.Health.Timeout = min(DefaultHealthTimeout, c.Health.Interval)
	}
	if c.Health.Fall == 0 {
		c.Health.Fall = DefaultHealthFall
	}
	if c.Health.Rise == 0 {
		c.Health.Rise = DefaultHealthRise
	}

	if c.RateLimit.ResponsesPerSecond > 0 && c.RateLimit.Burst == 0 {
		c.RateLimit.Burst = max(1, int(c.RateLimit.ResponsesPerSecond+0.999999))
	}
	if c.RateLimit.Slip == 0 {
		c.RateLimit.Slip = DefaultSlip
	}
	return c
}

// Validate applies [Config.WithDefaults] and reports the first problem found
// as one error naming the offending field, or nil.
func (c Config) Validate() error {
	c = c.WithDefaults()
	return c.validate()
}

func (c *Config) validate() error {
	if c.MMDBPath != "" {
		return errors.New("geodns: MMDBPath: mmdb not supported in this build (use Subnets)")
	}
	if err := checkName("Zone", c.Zone); err != nil {
		return err
	}
	inZone := func(field, name string) error {
		if err := checkName(field, name); err != nil {
			return err
		}
		if !isInZone(name, c.Zone) {
			return fmt.Errorf("geodns: %s: %q is not inside zone %q", field, name, c.Zone)
		}
		return nil
	}
	if c.MaxUDPSize < dns.MinMsgSize {
		return fmt.Errorf("geodns: MaxUDPSize: %d is below the DNS minimum of %d", c.MaxUDPSize, dns.MinMsgSize)
	}

	if len(c.NameServers) == 0 {
		return errors.New("geodns: NameServers: at least one name server is required")
	}
	// SOA.
	if err := checkName("SOA.MName", c.SOA.MName); err != nil {
		return err
	}
	if strings.Contains(c.SOA.RName, "@") {
		return fmt.Errorf("geodns: SOA.RName: %q must be in domain form (hostmaster.example.), not an e-mail address", c.SOA.RName)
	}
	if err := checkName("SOA.RName", c.SOA.RName); err != nil {
		return err
	}

	// Every owned name is unique; only the global host may sit at the apex
	// alongside SOA and NS.
	owners := map[string]string{}
	claim := func(field, name string) error {
		if prev, ok := owners[name]; ok {
			return fmt.Errorf("geodns: %s: name %q is already used by %s", field, name, prev)
		}
		owners[name] = field
		return nil
	}
	if err := inZone("GlobalHost", c.GlobalHost); err != nil {
		return err
	}
	if err := claim("GlobalHost", c.GlobalHost); err != nil {
		return err
	}

	for i, ns := range c.NameServers {
		field := fmt.Sprintf("NameServers[%d]", i)
		if err := checkName(field+".Name", ns.Name); err != nil {
			return err
		}
		if !isInZone(ns.Name, c.Zone) {
			if len(ns.Addrs) > 0 {
				return fmt.Errorf("geodns: %s.Addrs: %q is outside the zone, so its addresses would never be served; remove them", field, ns.Name)
			}
			continue
		}
		if ns.Name == c.Zone {
			return fmt.Errorf("geodns: %s.Name: a name server cannot be the zone apex", field)
		}
		if err := checkAddrs(field+".Addrs", ns.Addrs); err != nil {
			return err
		}
		if err := claim(field+".Name", ns.Name); err != nil {
			return err
		}
	}

	if c.HubHost.Name != "" {
		if err := checkHost("HubHost", c.HubHost, c.Zone, inZone, claim); err != nil {
			return err
		}
	}

	if len(c.Regions) == 0 {
		return errors.New("geodns: Regions: at least one region is required")
	}
	ids := map[string]bool{}
	for i, r := range c.Regions {
		field := fmt.Sprintf("Regions[%d]", i)
		if r.ID == "" {
			return fmt.Errorf("geodns: %s.ID: empty", field)
		}
		if ids[r.ID] {
			return fmt.Errorf("geodns: %s.ID: duplicate region %q", field, r.ID)
		}
		ids[r.ID] = true
	}
	for i, r := range c.Regions {
		field := fmt.Sprintf("Regions[%d] (%s)", i, r.ID)
		if err := checkHost(field+".Host", r.Host, c.Zone, inZone, claim); err != nil {
			return err
		}
		if r.DR != nil {
			if err := checkHost(field+".DR", *r.DR, c.Zone, inZone, claim); err != nil {
				return err
			}
		}
		if r.HealthURL != "" {
			if _, err := parseHealthURL(r.HealthURL); err != nil {
				return fmt.Errorf("geodns: %s.HealthURL: %w", field, err)
			}
		}
		if r.DRHealthURL != "" {
			if r.DR == nil {
				return fmt.Errorf("geodns: %s.DRHealthURL: set but the region has no DR host", field)
			}
			if _, err := parseHealthURL(r.DRHealthURL); err != nil {
				return fmt.Errorf("geodns: %s.DRHealthURL: %w", field, err)
			}
		}
		seen := map[string]bool{}
		for j, p := range r.Proximity {
			pf := fmt.Sprintf("%s.Proximity[%d]", field, j)
			switch {
			case !ids[p]:
				return fmt.Errorf("geodns: %s: unknown region %q", pf, p)
			case p == r.ID:
				return fmt.Errorf("geodns: %s: a region cannot list itself", pf)
			case seen[p]:
				return fmt.Errorf("geodns: %s: region %q listed twice", pf, p)
			}
			seen[p] = true
		}
	}

	prefixes := map[netip.Prefix]bool{}
	for i, s := range c.Subnets {
		field := fmt.Sprintf("Subnets[%d]", i)
		p := s.Prefix
		switch {
		case !p.IsValid():
			return fmt.Errorf("geodns: %s.Prefix: missing or invalid prefix", field)
		case p.Addr().Zone() != "":
			return fmt.Errorf("geodns: %s.Prefix: %s has an IPv6 zone", field, p)
		case p.Addr().Is4In6():
			return fmt.Errorf("geodns: %s.Prefix: %s is IPv4-mapped IPv6; write the IPv4 prefix", field, p)
		case p != p.Masked():
			return fmt.Errorf("geodns: %s.Prefix: %s has host bits set (did you mean %s?)", field, p, p.Masked())
		case p.Addr().Is4() && p.Bits() > MaxPrefixV4:
			return fmt.Errorf("geodns: %s.Prefix: %s is longer than /%d, the longest client prefix looked at", field, p, MaxPrefixV4)
		case p.Addr().Is6() && p.Bits() > MaxPrefixV6:
			return fmt.Errorf("geodns: %s.Prefix: %s is longer than /%d, the longest client prefix looked at", field, p, MaxPrefixV6)
		case !ids[s.Region]:
			return fmt.Errorf("geodns: %s.Region: unknown region %q", field, s.Region)
		case prefixes[p]:
			return fmt.Errorf("geodns: %s.Prefix: %s listed twice", field, p)
		}
		prefixes[p] = true
	}

	if c.DefaultRegion == "" {
		return errors.New("geodns: DefaultRegion: required")
	}
	if !ids[c.DefaultRegion] {
		return fmt.Errorf("geodns: DefaultRegion: unknown region %q", c.DefaultRegion)
	}

	h := c.Health
	switch {
	case h.Interval < 0:
		return fmt.Errorf("geodns: Health.Interval: %v is negative", h.Interval)
	case h.Timeout < 0 || h.Timeout > h.Interval:
		return fmt.Errorf("geodns: Health.Timeout: %v must be positive and at most Health.Interval (%v)", h.Timeout, h.Interval)
	case h.Fall < 1:
		return fmt.Errorf("geodns: Health.Fall: %d must be at least 1", h.Fall)
	case h.Rise < 1:
		return fmt.Errorf("geodns: Health.Rise: %d must be at least 1", h.Rise)
	}

	rl := c.RateLimit
	switch {
	case rl.ResponsesPerSecond < 0 || rl.ResponsesPerSecond != rl.ResponsesPerSecond:
		return fmt.Errorf("geodns: RateLimit.ResponsesPerSecond: %v must be 0 (off) or positive", rl.ResponsesPerSecond)
	case rl.Burst < 0:
		return fmt.Errorf("geodns: RateLimit.Burst: %d is negative", rl.Burst)
	}
	return nil
}

func checkHost(field string, h Host, zone string, inZone func(string, string) error, claim func(string, string) error) error {
	if err := inZone(field+".Name", h.Name); err != nil {
		return err
	}
	if h.Name == zone {
		return fmt.Errorf("geodns: %s.Name: only GlobalHost may be the zone apex", field)
	}
	if err := checkAddrs(field+".Addrs", h.Addrs); err != nil {
		return err
	}
	return claim(field+".Name", h.Name)
}

func checkName(field, name string) error {
	if name == "" {
		return fmt.Errorf("geodns: %s: required", field)
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.ContainsAny(name, `\ `) {
		return fmt.Errorf("geodns: %s: %q is not a valid domain name", field, name)
	}
	return nil
}

func checkAddrs(field string, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return fmt.Errorf("geodns: %s: at least one address is required", field)
	}
	seen := map[netip.Addr]bool{}
	for i, a := range addrs {
		switch {
		case !a.IsValid():
			return fmt.Errorf("geodns: %s[%d]: invalid address", field, i)
		case a.Zone() != "":
			return fmt.Errorf("geodns: %s[%d]: %s has an IPv6 zone", field, i, a)
		case seen[a.Unmap()]:
			return fmt.Errorf("geodns: %s[%d]: %s listed twice", field, i, a)
		}
		seen[a.Unmap()] = true
	}
	return nil
}

// parseHealthURL accepts absolute http and https URLs with a host.
func parseHealthURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%q: scheme must be http or https", raw)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%q: no host", raw)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%q: credentials in the URL are not allowed", raw)
	}
	return u, nil
}

// canonName lower-cases an ASCII domain name and adds the trailing dot.
func canonName(s string) string {
	if s == "" {
		return ""
	}
	return dns.Fqdn(lowerASCII(s))
}

// lowerASCII lower-cases A-Z only (DNS names compare case-insensitively in
// ASCII alone) and does not allocate when s is already lower-case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}

// isInZone reports whether the canonical name is zone or below it. Label
// boundaries are respected, including escaped dots ("x\.id.localhost." is
// not below "localhost." at a label boundary before "id").
func isInZone(name, zone string) bool {
	if name == zone {
		return true
	}
	if zone == "." {
		return true
	}
	if len(name) <= len(zone) || !strings.HasSuffix(name, zone) {
		return false
	}
	dot := len(name) - len(zone) - 1
	if name[dot] != '.' {
		return false
	}
	// The dot separates labels only if preceded by an even number of
	// backslashes.
	n := 0
	for i := dot - 1; i >= 0 && name[i] == '\\'; i-- {
		n++
	}
	return n%2 == 0
}
