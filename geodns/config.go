package geodns

import (
	"crypto/tls"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/meridian-id/meridian/config"
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

// Config describes the zone served and how the global host is steered.
// [FromConfig] derives it from the federation's regions.yaml; tests and
// benchmarks fill it directly. Names may be given with or without the
// trailing dot and in any case; they are compared case-insensitively.
//
// [Config.Validate] is the one place the dns block of regions.yaml is
// validated: its errors name the regions.yaml key a field comes from (say
// "dns.subnets[1].cidr" for Subnets[1].Prefix, "regions[0].addresses[1]"
// for Regions[0].Host.Addrs[1]) and wrap [config.ErrInvalid]. Fields that
// regions.yaml cannot set are named "geodns.Config.<Field>".
type Config struct {
	// Zone is the apex this server is authoritative for, e.g. "id.localhost.".
	Zone string
	// TTL of every record served (default 30 s). Kept short so health
	// changes reach clients quickly.
	TTL uint32
	// SOA is the zone's start-of-authority record.
	SOA SOA
	// NameServers are the zone's NS records. Names inside the zone need at
	// least one address (served as glue and as their own A/AAAA); names
	// outside the zone must have none.
	NameServers []NameServer
	// GlobalHost is the steered name apps use, e.g. "id.localhost.". It may
	// equal Zone.
	GlobalHost string
	// HubHost is the hub's name and addresses. Optional: an empty Name
	// serves no hub record.
	HubHost Host
	// Regions lists the serving regions; at least one is required.
	Regions []Region
	// Subnets route client prefixes to regions; the longest match wins.
	// Prefixes may be at most /24 (IPv4) or /56 (IPv6), since client
	// addresses are never looked at beyond that.
	Subnets []SubnetRoute
	// DefaultRegion answers clients no subnet matches.
	DefaultRegion string
	// MMDBPath would name a MaxMind database for country-based routing. It
	// is not supported in this build: a non-empty value fails validation.
	MMDBPath string
	// Health configures the upstream checker.
	Health HealthConfig
	// RateLimit configures response-rate limiting over UDP.
	RateLimit RateLimitConfig
	// MaxUDPSize is the largest UDP response sent, whatever larger size a
	// client advertises, and the EDNS buffer size the server advertises
	// (default 1232).
	MaxUDPSize uint16
	// StateFile keeps what must survive a restart: the regions failed over
	// to their DR site (see [Checker.Failback]). Empty: kept in memory only,
	// so a restart fails every region back. [FromConfig] sets
	// <data_dir>/geodns-state.json.
	StateFile string
}

// SOA holds the fields of the zone's SOA record. Zero fields take defaults:
// MName the first name server, RName "hostmaster.<zone>", Serial 1, and the
// Default* timers.
type SOA struct {
	MName   string
	RName   string // mailbox in domain form: hostmaster.id.localhost.
	Serial  uint32
	Refresh uint32
	Retry   uint32
	Expire  uint32
	Minimum uint32 // negative-caching TTL (RFC 2308)
}

// NameServer is one NS record of the zone plus its glue addresses.
type NameServer struct {
	Name  string
	Addrs []netip.Addr
}

// Host is a name in the zone and the addresses it answers with.
type Host struct {
	Name  string
	Addrs []netip.Addr
}

// Region is one serving region.
type Region struct {
	// ID names the region in Subnets, Proximity, DefaultRegion, metrics and
	// logs, e.g. "eu".
	ID string
	// Host is the region's own name and addresses, e.g. eu.id.localhost.
	Host Host
	// DR is the region's disaster-recovery site, optional. Its name always
	// answers with its addresses; the region host answers with them while
	// the primary is down and the DR site is up.
	DR *Host
	// HealthURL is polled with GET (the region's /readyz) at every address
	// of Host, each on its own: the request is sent to the address and the
	// URL's port, the URL's host name stays the Host header and TLS server
	// name. Empty: the primary is never checked and always counts as up.
	HealthURL string
	// DRHealthURL is the same for each address of the DR site; allowed only
	// with DR. Empty: the DR site always counts as up.
	DRHealthURL string
	// Proximity lists other region IDs, nearest first, tried in order when
	// this region is down.
	Proximity []string
}

// SubnetRoute sends clients inside Prefix to Region.
type SubnetRoute struct {
	Prefix netip.Prefix
	Region string
}

// HealthConfig tunes the upstream checker. Zero fields take the Default*
// values.
type HealthConfig struct {
	// Interval between two rounds of checks.
	Interval time.Duration
	// Timeout of one check; at most Interval.
	Timeout time.Duration
	// Fall is the number of consecutive failures that mark an upstream down.
	Fall int
	// Rise is the number of consecutive successes that mark it up again.
	Rise int
	// TLSClientConfig is used for https health URLs (nil: system roots).
	TLSClientConfig *tls.Config
}

// RateLimitConfig limits UDP responses per client subnet (/24 for IPv4, /56
// for IPv6) with a token bucket. TCP is never limited: its source address
// cannot be spoofed, so it cannot be used for reflection.
type RateLimitConfig struct {
	// ResponsesPerSecond refills each bucket; 0 disables rate limiting.
	ResponsesPerSecond float64
	// Burst is the bucket size (default: ResponsesPerSecond rounded up).
	Burst int
	// Slip: every Slip-th response over the limit is sent as an empty
	// answer with TC=1, so a real client retries over TCP; the others are
	// dropped (as BIND's RRL slip). 0 means the default 2, 1 truncates
	// every one, a negative value drops every one.
	Slip int
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
// as one error naming the regions.yaml key (see [Config]), or nil.
func (c Config) Validate() error {
	c = c.WithDefaults()
	return c.validate()
}

// invalid builds a validation error naming the regions.yaml key, in the
// form config.Validate uses.
func invalid(key, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", key, config.ErrInvalid, fmt.Sprintf(format, args...))
}

// Keys of fields that regions.yaml does not set (FromConfig derives or
// defaults them).
const goOnly = "geodns.Config."

func (c *Config) validate() error {
	if c.MMDBPath != "" {
		return invalid("dns.mmdb", "MaxMind databases are not supported in this build; route with dns.subnets")
	}
	const globalKey = "federation.global_host"
	if err := checkName(globalKey, c.Zone); err != nil {
		return err
	}
	inZone := func(key, name string) error {
		if err := checkName(key, name); err != nil {
			return err
		}
		if !isInZone(name, c.Zone) {
			return invalid(key, "%q is not inside zone %q", name, c.Zone)
		}
		return nil
	}
	if c.MaxUDPSize < dns.MinMsgSize {
		return invalid(goOnly+"MaxUDPSize", "%d is below the DNS minimum of %d", c.MaxUDPSize, dns.MinMsgSize)
	}

	if len(c.NameServers) == 0 {
		return invalid("dns.nameservers", "at least one name server is required")
	}
	if err := checkName(goOnly+"SOA.MName", c.SOA.MName); err != nil {
		return err
	}
	if strings.Contains(c.SOA.RName, "@") {
		return invalid(goOnly+"SOA.RName", "%q must be in domain form (hostmaster.example.), not an e-mail address", c.SOA.RName)
	}
	if err := checkName(goOnly+"SOA.RName", c.SOA.RName); err != nil {
		return err
	}

	// Every owned name is unique; only the global host may sit at the apex
	// alongside SOA and NS.
	owners := map[string]string{}
	claim := func(key, name string) error {
		if prev, ok := owners[name]; ok {
			return invalid(key, "name %q is already used by %s", name, prev)
		}
		owners[name] = key
		return nil
	}
	if err := inZone(globalKey, c.GlobalHost); err != nil {
		return err
	}
	if err := claim(globalKey, c.GlobalHost); err != nil {
		return err
	}

	for i, ns := range c.NameServers {
		key := fmt.Sprintf("dns.nameservers[%d]", i)
		if err := checkName(key+".name", ns.Name); err != nil {
			return err
		}
		if !isInZone(ns.Name, c.Zone) {
			if len(ns.Addrs) > 0 {
				return invalid(key+".addresses", "%q is outside the zone, so its addresses would never be served; remove them", ns.Name)
			}
			continue
		}
		if ns.Name == c.Zone {
			return invalid(key+".name", "a name server cannot be the zone apex")
		}
		if err := checkAddrs(key+".addresses", ns.Addrs); err != nil {
			return err
		}
		if err := claim(key+".name", ns.Name); err != nil {
			return err
		}
	}

	if c.HubHost.Name != "" {
		if err := checkHost("hub.host", "hub.addresses", c.HubHost, c.Zone, inZone, claim); err != nil {
			return err
		}
	}

	if len(c.Regions) == 0 {
		return invalid("regions", "at least one region is required")
	}
	ids := map[string]bool{}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d].id", i)
		if err := config.CheckRegionID(key, r.ID); err != nil {
			return err
		}
		if ids[r.ID] {
			return invalid(key, "duplicate region id %q", r.ID)
		}
		ids[r.ID] = true
	}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if err := checkHost(key+".host", key+".addresses", r.Host, c.Zone, inZone, claim); err != nil {
			return err
		}
		if r.DR != nil {
			if err := checkHost(key+".dr.host", key+".dr.addresses", *r.DR, c.Zone, inZone, claim); err != nil {
				return err
			}
		}
		hkey := fmt.Sprintf("%sRegions[%d].", goOnly, i)
		if r.HealthURL != "" {
			if _, err := parseHealthURL(r.HealthURL); err != nil {
				return invalid(hkey+"HealthURL", "%v", err)
			}
		}
		if r.DRHealthURL != "" {
			if r.DR == nil {
				return invalid(hkey+"DRHealthURL", "set but the region has no DR site")
			}
			if _, err := parseHealthURL(r.DRHealthURL); err != nil {
				return invalid(hkey+"DRHealthURL", "%v", err)
			}
		}
		if err := config.CheckProximity(key+".proximity", r.ID, ids, r.Proximity); err != nil {
			return err
		}
	}

	prefixes := map[netip.Prefix]bool{}
	for i, s := range c.Subnets {
		key := fmt.Sprintf("dns.subnets[%d]", i)
		p := s.Prefix
		switch {
		case !p.IsValid():
			return invalid(key+".cidr", "missing or invalid prefix")
		case p.Addr().Zone() != "":
			return invalid(key+".cidr", "%s has an IPv6 zone", p)
		case p.Addr().Is4In6():
			return invalid(key+".cidr", "%s is IPv4-mapped IPv6; write the IPv4 prefix", p)
		case p != p.Masked():
			return invalid(key+".cidr", "%s has host bits set (did you mean %s?)", p, p.Masked())
		case p.Addr().Is4() && p.Bits() > MaxPrefixV4:
			return invalid(key+".cidr", "%s is longer than /%d, the longest client prefix looked at", p, MaxPrefixV4)
		case p.Addr().Is6() && p.Bits() > MaxPrefixV6:
			return invalid(key+".cidr", "%s is longer than /%d, the longest client prefix looked at", p, MaxPrefixV6)
		case !ids[s.Region]:
			return invalid(key+".region", "%q is not a configured region", s.Region)
		case prefixes[p]:
			return invalid(key+".cidr", "%s listed twice", p)
		}
		prefixes[p] = true
	}

	if !ids[c.DefaultRegion] {
		return invalid("dns.default_region", "%q is not a configured region", c.DefaultRegion)
	}

	h := c.Health
	switch {
	case h.Interval < 0:
		return invalid("dns.health.interval", "%v is negative", h.Interval)
	case h.Timeout < 0 || h.Timeout > h.Interval:
		return invalid("dns.health.timeout", "%v must be positive and at most dns.health.interval (%v)", h.Timeout, h.Interval)
	case h.Fall < 1:
		return invalid("dns.health.fall", "%d must be at least 1", h.Fall)
	case h.Rise < 1:
		return invalid("dns.health.rise", "%d must be at least 1", h.Rise)
	}

	rl := c.RateLimit
	switch {
	case rl.ResponsesPerSecond < 0 || rl.ResponsesPerSecond != rl.ResponsesPerSecond:
		return invalid("dns.rate_limit", "%v must be 0 (off) or positive", rl.ResponsesPerSecond)
	case rl.Burst < 0:
		return invalid(goOnly+"RateLimit.Burst", "%d is negative", rl.Burst)
	}
	return nil
}

func checkHost(nameKey, addrsKey string, h Host, zone string, inZone func(string, string) error, claim func(string, string) error) error {
	if err := inZone(nameKey, h.Name); err != nil {
		return err
	}
	if h.Name == zone {
		return invalid(nameKey, "only federation.global_host may be the zone apex")
	}
	if err := checkAddrs(addrsKey, h.Addrs); err != nil {
		return err
	}
	return claim(nameKey, h.Name)
}

func checkName(key, name string) error {
	if name == "" {
		return invalid(key, "a name is required")
	}
	if _, ok := dns.IsDomainName(name); !ok || strings.ContainsAny(name, `\ `) {
		return invalid(key, "%q is not a valid domain name", name)
	}
	return nil
}

func checkAddrs(key string, addrs []netip.Addr) error {
	if len(addrs) == 0 {
		return invalid(key, "at least one address is required")
	}
	seen := map[netip.Addr]bool{}
	for i, a := range addrs {
		k := fmt.Sprintf("%s[%d]", key, i)
		switch {
		case !a.IsValid():
			return invalid(k, "invalid address")
		case a.Zone() != "":
			return invalid(k, "%s has an IPv6 zone", a)
		case seen[a.Unmap()]:
			return invalid(k, "%s listed twice", a)
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
