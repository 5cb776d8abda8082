// Package config loads regions.yaml into typed, validated configuration.
//
// Load reads the file with viper (environment variables MERIDIAN_* override
// keys, with "." written as "_"), decodes it strictly (unknown keys are
// errors) and validates it; every error names the offending key.
package config

import (
	"cmp"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"

	"github.com/meridian-id/meridian/internal/clientaddr"
	"github.com/meridian-id/meridian/password"
)

// Config is the whole federation as every binary sees it.
type Config struct {
	DataDir    string     `mapstructure:"data_dir"`
	Federation Federation `mapstructure:"federation"`
	Regions    []Region   `mapstructure:"regions"`
	Hub        Hub        `mapstructure:"hub"`
	DNS        DNS        `mapstructure:"dns"`
	Telemetry  Telemetry  `mapstructure:"telemetry"`
	Account    Account    `mapstructure:"account"`
}

// Account configures account self-service (/account) and passkeys at
// every region.
type Account struct {
	// EditableClaims are the profile claims users may change themselves
	// (e.g. name, locale); empty: none.
	EditableClaims []string `mapstructure:"editable_claims"`
	// ReauthWindow is how recent a sign-in must be for sensitive changes
	// (second factors, passkeys, sessions, consents); default 10m.
	ReauthWindow time.Duration `mapstructure:"reauth_window"`
	// WebAuthn is the passkey relying party.
	WebAuthn WebAuthn `mapstructure:"webauthn"`
}

// WebAuthn configures the passkey relying party shared by every region.
type WebAuthn struct {
	// RPID is the relying party id: a registrable parent of the global
	// host and of every region host (default: cookie_domain, else the
	// global host), so one passkey works on all of them.
	RPID string `mapstructure:"rp_id"`
	// RPName is shown by authenticators; default "Meridian".
	RPName string `mapstructure:"rp_name"`
	// Origins are the origins allowed to run ceremonies; default: the
	// global host and every region and DR host at federation.scheme/port.
	Origins []string `mapstructure:"origins"`
	// Attestation is the conveyance preference: none (default), indirect,
	// direct.
	Attestation string `mapstructure:"attestation"`
}

// PasskeyRPID is the relying party id in effect.
func (c *Config) PasskeyRPID() string {
	switch {
	case c.Account.WebAuthn.RPID != "":
		return c.Account.WebAuthn.RPID
	case c.Federation.CookieDomain != "":
		return c.Federation.CookieDomain
	}
	return c.Federation.GlobalHost
}

// PasskeyOrigins are the origins in effect.
func (c *Config) PasskeyOrigins() []string {
	if len(c.Account.WebAuthn.Origins) > 0 {
		return c.Account.WebAuthn.Origins
	}
	out := []string{c.GlobalIssuer()}
	for i := range c.Regions {
		out = append(out, c.Federation.URL(c.Regions[i].Host))
		if c.Regions[i].DR != nil {
			out = append(out, c.Federation.URL(c.Regions[i].DR.Host))
		}
	}
	return out
}

// Federation holds what every node shares.
type Federation struct {
	GlobalHost     string `mapstructure:"global_host"`
	Scheme         string `mapstructure:"scheme"`
	Port           int    `mapstructure:"port"`
	CookieDomain   string `mapstructure:"cookie_domain"`
	RoutingKeyFile string `mapstructure:"routing_key_file"`
	// PreviousRoutingKeyFile, during a routing key rotation, still verifies
	// artifacts minted with the old key (new ones use RoutingKeyFile).
	PreviousRoutingKeyFile string `mapstructure:"previous_routing_key_file"`
	// RoutingKeys, when set, replaces the two files above with a key ring
	// whose artifacts name their key (docs/operations.md, routing key rotation).
	RoutingKeys    []RoutingKey  `mapstructure:"routing_keys"`
	Topology       string        `mapstructure:"topology"`
	ConnectTimeout time.Duration `mapstructure:"connect_timeout"`
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	// HopPoll is how long a router may poll a connection for a proxied
	// call's answer before sleeping, while that call is the only one in
	// flight and the address answered that fast lately (0: never; at most
	// 1ms). See routing.RouterConfig.HopPoll.
	HopPoll time.Duration `mapstructure:"hop_poll"`
	// DrainPeriod is how long a node or hub that was told to stop (SIGTERM)
	// keeps serving with /readyz failing, so that GeoDNS (health interval x
	// fall) and resolver caches (dns.ttl) stop handing it out first.
	DrainPeriod time.Duration `mapstructure:"drain_period"`
	// TLS is how nodes verify each other (router, hub back channel,
	// GeoDNS health checks): federation.tls.ca_file.
	TLS FederationTLS `mapstructure:"tls"`
	// SigningKeyPublishDelay is how long a rotated signing key is published
	// before it signs (at least the key caches' refresh bound, see
	// docs/operations.md); SigningKeyOverlap is how long a retired key stays
	// published after it stopped signing (at least the longest token lifetime).
	SigningKeyPublishDelay time.Duration `mapstructure:"signing_key_publish_delay"`
	SigningKeyOverlap      time.Duration `mapstructure:"signing_key_overlap"`
	// Production (federation.production, env MERIDIAN_FEDERATION_PRODUCTION)
	// refuses what only suits a laptop: a secret whose file is not
	// configured (no generated development keys), a key file readable by
	// group or others, and plain HTTP anywhere (federation.scheme, every
	// site's public and admin listener). See docs/security.md.
	Production bool `mapstructure:"production"`
}

// RoutingKey is one key of the federation's routing key ring: a secret
// file and what the key does (sign: mints new artifacts, exactly one;
// verify: accepted for every artifact; clients: retired, accepted for
// client_ids and SCIM resource ids only).
type RoutingKey struct {
	File string `mapstructure:"file"`
	Use  string `mapstructure:"use"`
}

// Site is one deployment of a region: its public host name, where it
// listens and the addresses DNS gives out for it.
type Site struct {
	Host        string   `mapstructure:"host"`
	Listen      string   `mapstructure:"listen"`
	AdminListen string   `mapstructure:"admin_listen"`
	Addresses   []string `mapstructure:"addresses"`
	TLS         TLS      `mapstructure:"tls"`
	// TrustedProxies are the reverse proxies (CIDR prefixes or addresses)
	// in front of the site whose X-Forwarded-For is honoured for
	// per-address limits: the client is the rightmost forwarded address
	// that is not a trusted proxy. Anyone else's X-Forwarded-For is
	// ignored. Empty (the default): the peer address is the client
	// (an L4 load balancer, or none).
	TrustedProxies []string `mapstructure:"trusted_proxies"`
	// Database is the site's own PostgreSQL URL (regions[i].database,
	// regions[i].dr.database): the primary's database, and for a DR site
	// its streaming standby. Empty: embedded SQLite (primary only). The
	// hub has no database key.
	Database string `mapstructure:"database"`
}

// TLS names certificate files; empty means plain HTTP.
type TLS struct {
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
	// Admin serves the admin listener (metrics, health, operator
	// endpoints) with the same certificate.
	Admin bool `mapstructure:"admin"`
}

// FederationTLS is the trust between nodes.
type FederationTLS struct {
	// CAFile is a PEM bundle of CA certificates trusted, besides the
	// system roots, for calls between nodes and health checks (a private
	// CA). Environment: MERIDIAN_FEDERATION_TLS_CA_FILE.
	CAFile string `mapstructure:"ca_file"`
}

// Login tunes a region's login.
type Login struct {
	// PasswordMemoryBudgetMiB bounds the memory, in MiB, that concurrent
	// argon2id password verifications of one node may hold together; a
	// post that does not fit is answered 503 with Retry-After at once.
	// Zero: 512 (eight 64 MiB verifications). At least one verification's
	// memory (64 MiB). Environment:
	// MERIDIAN_REGIONS_<i>_LOGIN_PASSWORD_MEMORY_BUDGET_MIB.
	PasswordMemoryBudgetMiB int `mapstructure:"password_memory_budget_mib"`
}

// Region is one geography.
type Region struct {
	ID        string `mapstructure:"id"`
	Site      `mapstructure:",squash"`
	Proximity []string `mapstructure:"proximity"`
	DR        *Site    `mapstructure:"dr"`
	// RegistrationTokenFile holds the initial access token (RFC 7591 §3,
	// at least 32 characters) that opens dynamic client registration in
	// this region; empty keeps /register closed.
	RegistrationTokenFile string `mapstructure:"registration_token_file"`
	// RegistrationsPerMinute bounds registration attempts per client
	// address; zero takes the region package's default.
	RegistrationsPerMinute int `mapstructure:"registrations_per_minute"`
	// ClientSecretOverlap is how long a client's previous secret keeps
	// working after a rotation that names no overlap (admin API, regional
	// clients rotate-secret); zero: 24h.
	ClientSecretOverlap time.Duration `mapstructure:"client_secret_overlap"`
	// ClientSecretMaxOverlap bounds any requested overlap; zero: 720h.
	ClientSecretMaxOverlap time.Duration `mapstructure:"client_secret_max_overlap"`
	// Login tunes the region's login (regions[i].login.*).
	Login Login `mapstructure:"login"`
	// KeyEncryptionKeyFile seals the region's private signing keys at rest;
	// keep it out of the database and its backups. Empty: a development key
	// under data_dir/secrets. The environment variable
	// MERIDIAN_KEY_ENCRYPTION_KEY_FILE overrides it for the node being started.
	KeyEncryptionKeyFile string `mapstructure:"key_encryption_key_file"`
	// PreviousKeyEncryptionKeyFile, during a KEK rotation, still opens keys
	// sealed by the old KEK (MERIDIAN_PREVIOUS_KEY_ENCRYPTION_KEY_FILE overrides it).
	PreviousKeyEncryptionKeyFile string `mapstructure:"previous_key_encryption_key_file"`
	// FederationKeyFile holds the region's own federation private key (a
	// PEM P-256 key, or a secret of >= 32 bytes it is derived from); the
	// region's DR site reads the same key. MERIDIAN_FEDERATION_KEY_FILE
	// overrides it for the node being started. Empty: a development key
	// under data_dir/secrets/federation-<id>.key.
	FederationKeyFile string `mapstructure:"federation_key_file"`
	// FederationPublicKey is the public half of the region's federation key
	// (base64 PKIX DER or PEM), which every other party verifies the
	// region's hops and client assertions with. Required when
	// FederationKeyFile is set.
	FederationPublicKey string `mapstructure:"federation_public_key"`
	// CookieKeyFile (>= 32 bytes) MACs the region's CSRF tokens, login
	// state and login cookies: every node of the region and of its DR site
	// must read the same key, or a login that moves between nodes is
	// refused. MERIDIAN_COOKIE_KEY_FILE overrides it for the node being
	// started. Empty: a development key under data_dir/secrets/cookie-<id>.key.
	CookieKeyFile string `mapstructure:"cookie_key_file"`
	// PreviousCookieKeyFile, during a cookie key rotation, still opens
	// what the old key sealed (MERIDIAN_PREVIOUS_COOKIE_KEY_FILE overrides it).
	PreviousCookieKeyFile string `mapstructure:"previous_cookie_key_file"`
	// FederationPublicKeys lists further public keys the region is
	// accepted under, for a rotation of its federation key: the new key is
	// listed first, then the region signs with it, then the old one is
	// removed (docs/operations.md). Every listed key and
	// FederationPublicKey verify; the key file's public half must be one
	// of them.
	FederationPublicKeys []string `mapstructure:"federation_public_keys"`
}

// PublicKeys returns every federation public key configured for the
// region: FederationPublicKey first, then FederationPublicKeys.
func (r *Region) PublicKeys() []string {
	return publicKeys(r.FederationPublicKey, r.FederationPublicKeys)
}

func publicKeys(one string, more []string) []string {
	var out []string
	if one != "" {
		out = append(out, one)
	}
	for _, k := range more {
		if k != "" {
			out = append(out, k)
		}
	}
	return out
}

// Hub is the federation hub.
type Hub struct {
	Site    `mapstructure:",squash"`
	KeyFile string `mapstructure:"key_file"`
	Redis   string `mapstructure:"redis"`
	// ExpectedUsers is the peak number of users the hub's lookup table is
	// sized for (its bucket count, see lookup/redisstore.BucketBitsFor);
	// 0 means the store's default. Changing it for an existing table takes a
	// rehash (docs/operations.md, "Sizing and rehashing the hub table").
	ExpectedUsers int64 `mapstructure:"expected_users"`
	// FederationKeyFile and FederationPublicKey are the hub's federation
	// identity, as for a region (development key:
	// data_dir/secrets/federation-hub.key).
	FederationKeyFile   string `mapstructure:"federation_key_file"`
	FederationPublicKey string `mapstructure:"federation_public_key"`
	// SecretFile (>= 32 bytes) seals the hub's login state and cookies;
	// every hub node reads the same one (env MERIDIAN_HUB_SECRET_FILE).
	// Empty: a development key under data_dir/secrets/hub-secret.key.
	SecretFile string `mapstructure:"secret_file"`
	// PreviousSecretFile, during a rotation of SecretFile, still opens what
	// the old secret sealed (env MERIDIAN_HUB_PREVIOUS_SECRET_FILE).
	PreviousSecretFile string `mapstructure:"previous_secret_file"`
	// FederationPublicKeys are further hub public keys for a rotation, as
	// for a region.
	FederationPublicKeys []string `mapstructure:"federation_public_keys"`
}

// PublicKeys returns every federation public key configured for the hub:
// FederationPublicKey first, then FederationPublicKeys.
func (h *Hub) PublicKeys() []string { return publicKeys(h.FederationPublicKey, h.FederationPublicKeys) }

// MaxExpectedUsers bounds hub.expected_users (2^24 buckets of 80 users).
const MaxExpectedUsers = 80 << 24

// DNS configures the authoritative GeoDNS server.
type DNS struct {
	Listen        string        `mapstructure:"listen"`
	TTL           uint32        `mapstructure:"ttl"`
	DefaultRegion string        `mapstructure:"default_region"`
	NameServers   []NameServer  `mapstructure:"nameservers"`
	Subnets       []SubnetRoute `mapstructure:"subnets"`
	Health        HealthCheck   `mapstructure:"health"`
	RateLimit     int           `mapstructure:"rate_limit"`
	MMDB          string        `mapstructure:"mmdb"`
	// AdminListen is the standalone geodns binary's admin listener
	// (/metrics, /dns/state, /dns/failback/{region}); empty: off. The
	// `geodns serve --admin` flag overrides it. A hub serving DNS mounts
	// /dns/ on hub.admin_listen instead and ignores this key.
	AdminListen string `mapstructure:"admin_listen"`
	// TLS serves AdminListen over TLS when tls.admin is true, with
	// cert_file and key_file (the same semantics as a site's tls.admin).
	TLS   TLS            `mapstructure:"tls"`
	Extra map[string]any `mapstructure:",remain"`
}

// NameServer is an NS record of the zone with its glue addresses.
type NameServer struct {
	Name      string   `mapstructure:"name"`
	Addresses []string `mapstructure:"addresses"`
}

// SubnetRoute maps a client subnet to its nearest region.
type SubnetRoute struct {
	CIDR   string `mapstructure:"cidr"`
	Region string `mapstructure:"region"`
}

// HealthCheck tunes the GeoDNS health checker.
type HealthCheck struct {
	Interval time.Duration `mapstructure:"interval"`
	Timeout  time.Duration `mapstructure:"timeout"`
	Fall     int           `mapstructure:"fall"`
	Rise     int           `mapstructure:"rise"`
}

// Telemetry configures traces, metrics and logs.
type Telemetry struct {
	OTLPEndpoint string `mapstructure:"otlp_endpoint"`
	LogLevel     string `mapstructure:"log_level"`
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid configuration")

// Load reads, decodes and validates the configuration file at path.
func Load(path string) (*Config, error) {
	c, err := decode(path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// decode reads the file at path with the environment's overrides applied
// and decodes it strictly, without validating the values.
func decode(path string) (*Config, error) {
	v := viper.New()
	v.SetConfigFile(path)
	v.SetEnvPrefix("MERIDIAN")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	setDefaults(v)
	if err := v.ReadInConfig(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if err := applyEnv(v, os.Environ()); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var c Config
	err := v.Unmarshal(&c, func(dc *mapstructure.DecoderConfig) {
		dc.ErrorUnused = true
		dc.DecodeHook = mapstructure.ComposeDecodeHookFunc(
			mapstructure.StringToTimeDurationHookFunc(),
			mapstructure.StringToSliceHookFunc(","),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(c.DNS.Extra) > 0 {
		for k := range c.DNS.Extra {
			return nil, fmt.Errorf("config %s: dns.%s: %w: unknown key", path, k, ErrInvalid)
		}
	}
	return &c, nil
}

func setDefaults(v *viper.Viper) {
	v.SetDefault("data_dir", "./data")
	v.SetDefault("federation.scheme", "https")
	v.SetDefault("federation.port", 443)
	v.SetDefault("federation.topology", "hub")
	v.SetDefault("federation.connect_timeout", 2*time.Second)
	v.SetDefault("federation.request_timeout", 10*time.Second)
	v.SetDefault("federation.hop_poll", 250*time.Microsecond)
	// Longer than the default health fall window (5s x 3) plus the default
	// DNS TTL (30s).
	v.SetDefault("federation.drain_period", 50*time.Second)
	v.SetDefault("hub.expected_users", 0)
	v.SetDefault("federation.signing_key_publish_delay", 10*time.Minute)
	v.SetDefault("federation.signing_key_overlap", 24*time.Hour)
	v.SetDefault("dns.ttl", 30)
	v.SetDefault("dns.health.interval", 5*time.Second)
	v.SetDefault("dns.health.timeout", 2*time.Second)
	v.SetDefault("dns.health.fall", 3)
	v.SetDefault("dns.health.rise", 2)
	v.SetDefault("telemetry.log_level", "info")
}

func invalid(key, format string, args ...any) error {
	return fmt.Errorf("%s: %w: %s", key, ErrInvalid, fmt.Sprintf(format, args...))
}

// Validate checks the whole configuration and returns the first problem,
// naming its key (e.g. "regions[1].proximity[0]").
func (c *Config) Validate() error {
	f := c.Federation
	if err := validHost("federation.global_host", f.GlobalHost); err != nil {
		return err
	}
	if f.Scheme != "http" && f.Scheme != "https" {
		return invalid("federation.scheme", "must be http or https, got %q", f.Scheme)
	}
	if f.Port < 1 || f.Port > 65535 {
		return invalid("federation.port", "must be 1..65535, got %d", f.Port)
	}
	if f.Topology != "hub" && f.Topology != "mesh" {
		return invalid("federation.topology", "must be hub or mesh, got %q", f.Topology)
	}
	if f.CookieDomain != "" && f.GlobalHost != f.CookieDomain && !strings.HasSuffix(f.GlobalHost, "."+f.CookieDomain) {
		return invalid("federation.cookie_domain", "%q must be the global host or a parent of it", f.CookieDomain)
	}
	if f.ConnectTimeout <= 0 || f.RequestTimeout <= 0 {
		return invalid("federation.request_timeout", "connect_timeout and request_timeout must be positive")
	}
	if f.HopPoll < 0 || f.HopPoll > time.Millisecond {
		return invalid("federation.hop_poll", "%s is not between 0 and 1ms", f.HopPoll)
	}
	if _, err := f.ClientTLS(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := c.validateAccount(); err != nil {
		return err
	}
	if f.DrainPeriod < 0 {
		return invalid("federation.drain_period", "must not be negative, got %s", f.DrainPeriod)
	}
	if len(f.RoutingKeys) > 0 {
		if f.RoutingKeyFile != "" || f.PreviousRoutingKeyFile != "" {
			return invalid("federation.routing_keys", "replaces routing_key_file and previous_routing_key_file; set one or the other")
		}
		signers := 0
		for i, k := range f.RoutingKeys {
			key := fmt.Sprintf("federation.routing_keys[%d]", i)
			if k.File == "" {
				return invalid(key+".file", "a key file is required")
			}
			switch k.Use {
			case "sign":
				signers++
			case "verify", "clients":
			default:
				return invalid(key+".use", "must be sign, verify or clients, got %q", k.Use)
			}
		}
		if signers != 1 {
			return invalid("federation.routing_keys", "exactly one key must have use: sign, got %d", signers)
		}
	}
	if f.SigningKeyPublishDelay < 0 {
		return invalid("federation.signing_key_publish_delay", "must not be negative (zero takes the default)")
	}
	if f.SigningKeyOverlap < 0 {
		return invalid("federation.signing_key_overlap", "must not be negative (zero takes the default)")
	}
	if len(c.Regions) == 0 {
		return invalid("regions", "at least one region is required")
	}
	hosts := map[string]string{f.GlobalHost: "federation.global_host"}
	listens := map[string]string{}
	ids := map[string]bool{}
	checkSite := func(key string, s Site, needListen bool) error {
		if err := validHost(key+".host", s.Host); err != nil {
			return err
		}
		if prev, dup := hosts[s.Host]; dup {
			return invalid(key+".host", "%q is already used by %s", s.Host, prev)
		}
		hosts[s.Host] = key + ".host"
		if needListen || s.Listen != "" {
			if err := validListen(key+".listen", s.Listen); err != nil {
				return err
			}
			if prev, dup := listens[s.Listen]; dup {
				return invalid(key+".listen", "%q is already used by %s", s.Listen, prev)
			}
			listens[s.Listen] = key + ".listen"
		}
		if s.AdminListen != "" {
			if err := validListen(key+".admin_listen", s.AdminListen); err != nil {
				return err
			}
			if prev, dup := listens[s.AdminListen]; dup {
				return invalid(key+".admin_listen", "%q is already used by %s", s.AdminListen, prev)
			}
			listens[s.AdminListen] = key + ".admin_listen"
		}
		if len(s.Addresses) == 0 {
			return invalid(key+".addresses", "at least one address is required (DNS answers and routing dial them)")
		}
		for i, a := range s.Addresses {
			if _, err := netip.ParseAddr(a); err != nil {
				return invalid(fmt.Sprintf("%s.addresses[%d]", key, i), "%q is not an IP address", a)
			}
		}
		for i, p := range s.TrustedProxies {
			if _, err := clientaddr.Parse([]string{p}); err != nil {
				return invalid(fmt.Sprintf("%s.trusted_proxies[%d]", key, i), "%q is neither an IP address nor a CIDR prefix", p)
			}
		}
		if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
			return invalid(key+".tls", "cert_file and key_file go together")
		}
		if s.TLS.Admin && s.TLS.CertFile == "" {
			return invalid(key+".tls.admin", "serves the admin listener with cert_file and key_file; set them")
		}
		return nil
	}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if err := CheckRegionID(key+".id", r.ID); err != nil {
			return err
		}
		if ids[r.ID] {
			return invalid(key+".id", "duplicate region id %q", r.ID)
		}
		ids[r.ID] = true
		if err := checkSite(key, r.Site, true); err != nil {
			return err
		}
		if err := checkDatabase(key+".database", r.Database); err != nil {
			return err
		}
		if r.DR != nil {
			if err := checkSite(key+".dr", *r.DR, false); err != nil {
				return err
			}
			if err := checkDatabase(key+".dr.database", r.DR.Database); err != nil {
				return err
			}
			if r.DR.Database != "" && r.DR.Database == r.Database {
				return invalid(key+".dr.database", "must be the DR site's own database (its standby), not the primary's")
			}
		}
		if r.RegistrationsPerMinute < 0 {
			return invalid(key+".registrations_per_minute", "must not be negative")
		}
		if r.ClientSecretOverlap < 0 || r.ClientSecretMaxOverlap < 0 {
			return invalid(key+".client_secret_overlap", "client_secret_overlap and client_secret_max_overlap must not be negative")
		}
		if limit := cmp.Or(r.ClientSecretMaxOverlap, 720*time.Hour); r.ClientSecretOverlap > limit {
			return invalid(key+".client_secret_overlap", "must not exceed client_secret_max_overlap (%s)", limit)
		}
		if m := r.Login.PasswordMemoryBudgetMiB; m < 0 || (m > 0 && int64(m)<<20 < password.DefaultMemory) {
			return invalid(key+".login.password_memory_budget_mib", "must be 0 (default) or at least %d (one argon2id verification's memory)", password.DefaultMemory>>20)
		}
		if r.FederationKeyFile != "" && len(r.PublicKeys()) == 0 {
			return invalid(key+".federation_public_key", "required when federation_key_file is set (the other parties verify with it)")
		}
	}
	for i, r := range c.Regions {
		if err := CheckProximity(fmt.Sprintf("regions[%d].proximity", i), r.ID, ids, r.Proximity); err != nil {
			return err
		}
	}
	if err := checkSite("hub", c.Hub.Site, true); err != nil {
		return err
	}
	if c.Hub.Database != "" {
		return invalid("hub.database", "the hub has no database key (its lookup table is hub.redis)")
	}
	if c.Hub.FederationKeyFile != "" && len(c.Hub.PublicKeys()) == 0 {
		return invalid("hub.federation_public_key", "required when federation_key_file is set (the regions verify with it)")
	}
	if c.Hub.Redis != "" {
		if u, err := url.Parse(c.Hub.Redis); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return invalid("hub.redis", "must be a redis:// or rediss:// URL or empty for the embedded store")
		}
	}
	if n := c.Hub.ExpectedUsers; n < 0 || n > MaxExpectedUsers {
		return invalid("hub.expected_users", "must be 0 (default sizing) or a user count up to %d, got %d", int64(MaxExpectedUsers), n)
	}
	if c.DNS.Listen != "" {
		// The rest of the dns block is validated in one place,
		// geodns.FromConfig, by every process that serves DNS.
		if err := validListen("dns.listen", c.DNS.Listen); err != nil {
			return err
		}
	}
	if c.DNS.AdminListen != "" {
		if err := validListen("dns.admin_listen", c.DNS.AdminListen); err != nil {
			return err
		}
	}
	if (c.DNS.TLS.CertFile == "") != (c.DNS.TLS.KeyFile == "") {
		return invalid("dns.tls", "cert_file and key_file go together")
	}
	if c.DNS.TLS.Admin && c.DNS.TLS.CertFile == "" {
		return invalid("dns.tls.admin", "serves dns.admin_listen with cert_file and key_file; set them")
	}
	switch c.Telemetry.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return invalid("telemetry.log_level", "must be debug, info, warn or error, got %q", c.Telemetry.LogLevel)
	}
	if f.Production {
		return c.validateProduction()
	}
	return nil
}

// validateProduction checks that federation.production has TLS
// everywhere: the federation's URLs are https, and every site (each
// region's, each DR site's and the hub's) serves its public listener and,
// when it has one, its admin listener with a certificate. No exception for
// loopback or "internal" listeners: a proxy or a sidecar on the same host
// reads plain HTTP as easily as the network does. Database and Redis URLs
// must use TLS unless they reach loopback or a unix socket
// (checkProductionTransport).
func (c *Config) validateProduction() error {
	const why = "federation.production serves TLS everywhere"
	if c.Federation.Scheme != "https" {
		return invalid("federation.scheme", "must be https (%s), got %q", why, c.Federation.Scheme)
	}
	check := func(key string, s Site) error {
		if s.TLS.CertFile == "" {
			return invalid(key+".tls.cert_file", "required (%s; plain HTTP on %s is refused)", why, key+".listen")
		}
		if s.AdminListen != "" && !s.TLS.Admin {
			return invalid(key+".tls.admin", "must be true (%s; the admin listener %s would be plain HTTP)", why, s.AdminListen)
		}
		return nil
	}
	for i, r := range c.Regions {
		key := fmt.Sprintf("regions[%d]", i)
		if err := check(key, r.Site); err != nil {
			return err
		}
		if err := checkProductionTransport(key+".database", r.Database); err != nil {
			return err
		}
		if r.DR != nil {
			if err := check(key+".dr", *r.DR); err != nil {
				return err
			}
			if err := checkProductionTransport(key+".dr.database", r.DR.Database); err != nil {
				return err
			}
		}
	}
	if err := checkProductionTransport("hub.redis", c.Hub.Redis); err != nil {
		return err
	}
	if c.DNS.AdminListen != "" && !c.DNS.TLS.Admin {
		return invalid("dns.tls.admin", "must be true (%s; the geodns admin listener %s would be plain HTTP)", why, c.DNS.AdminListen)
	}
	return check("hub", c.Hub.Site)
}

func validHost(key, h string) error {
	if h == "" {
		return invalid(key, "a host name is required")
	}
	if len(h) > 253 || strings.ContainsAny(h, "/:@?# ") || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") {
		return invalid(key, "%q is not a host name", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return invalid(key, "%q is not a host name", h)
		}
		for _, ch := range label {
			if !(ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9' || ch == '-') {
				return invalid(key, "%q is not a lower-case host name", h)
			}
		}
	}
	return nil
}

func validListen(key, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return invalid(key, "%q is not host:port", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return invalid(key, "%q has no valid port", addr)
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil && host != "localhost" {
			return invalid(key, "%q must listen on an IP address", addr)
		}
	}
	return nil
}

// Region returns the region with the given id.
func (c *Config) Region(id string) (*Region, bool) {
	for i := range c.Regions {
		if c.Regions[i].ID == id {
			return &c.Regions[i], true
		}
	}
	return nil, false
}

// RegionIDs returns the configured region ids in file order.
func (c *Config) RegionIDs() []string {
	ids := make([]string, len(c.Regions))
	for i, r := range c.Regions {
		ids[i] = r.ID
	}
	return ids
}

// URL returns the public base URL of a host in this federation, e.g.
// "https://eu.id.example.com" (the port is omitted when it is the scheme's default).
func (f Federation) URL(host string) string {
	if (f.Scheme == "https" && f.Port == 443) || (f.Scheme == "http" && f.Port == 80) {
		return f.Scheme + "://" + host
	}
	return f.Scheme + "://" + host + ":" + strconv.Itoa(f.Port)
}

// GlobalIssuer is the issuer applications use: the global host's URL.
func (c *Config) GlobalIssuer() string { return c.Federation.URL(c.Federation.GlobalHost) }

// Issuer is a region's own issuer, used between the hub and the regions.
func (c *Config) Issuer(r *Region) string { return c.Federation.URL(r.Host) }

// DialAddr returns the address to dial for a site: its first address at the
// port of its listener (or the federation port).
func (c *Config) DialAddr(s Site) string {
	port := strconv.Itoa(c.Federation.Port)
	if _, p, err := net.SplitHostPort(s.Listen); err == nil && p != "0" {
		port = p
	}
	return net.JoinHostPort(s.Addresses[0], port)
}

// checkDatabase validates a site's database setting under key: empty (the
// embedded store), a postgres:// URL or a mysql:// URL naming a host and a
// database. The message never repeats the URL (it may hold a password).
func checkDatabase(key, raw string) error {
	if raw == "" {
		return nil
	}
	if err := checkDatabaseURL(raw); err != nil {
		return invalid(key, "%v", err)
	}
	return nil
}

func checkDatabaseURL(raw string) error {
	const want = "must be a postgres:// or mysql://user:password@host:port/database URL, or empty for the embedded store"
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New(want)
	}
	switch u.Scheme {
	case "postgres", "postgresql":
		return nil
	case "mysql":
		db := strings.TrimPrefix(u.Path, "/")
		if u.Host == "" || db == "" || strings.Contains(db, "/") {
			return errors.New("a mysql:// URL must name a host and a database: mysql://user:password@host:port/database")
		}
		return nil
	}
	return errors.New(want)
}

// validateAccount checks the account section: the passkey relying party id
// must be the global host and every region host or a parent of them all.
func (c *Config) validateAccount() error {
	a := c.Account
	if a.ReauthWindow < 0 {
		return invalid("account.reauth_window", "must not be negative, got %s", a.ReauthWindow)
	}
	switch a.WebAuthn.Attestation {
	case "", "none", "indirect", "direct":
	default:
		return invalid("account.webauthn.attestation", "must be none, indirect or direct, got %q", a.WebAuthn.Attestation)
	}
	rp := c.PasskeyRPID()
	under := func(host string) bool { return host == rp || strings.HasSuffix(host, "."+rp) }
	if !under(c.Federation.GlobalHost) {
		return invalid("account.webauthn.rp_id", "%q must be the global host or a parent of it", rp)
	}
	for i := range c.Regions {
		if c.Regions[i].Host != "" && !under(c.Regions[i].Host) {
			return invalid("account.webauthn.rp_id", "%q must be a parent of region host %q", rp, c.Regions[i].Host)
		}
	}
	for i, o := range a.WebAuthn.Origins {
		if !strings.HasPrefix(o, "https://") && !strings.HasPrefix(o, "http://") {
			return invalid(fmt.Sprintf("account.webauthn.origins[%d]", i), "must be an http(s) origin, got %q", o)
		}
	}
	for i, name := range a.EditableClaims {
		switch name {
		case "name", "given_name", "family_name", "locale", "phone_number", "email":
		default:
			return invalid(fmt.Sprintf("account.editable_claims[%d]", i), "%q is not a profile claim users may edit", name)
		}
	}
	return nil
}
