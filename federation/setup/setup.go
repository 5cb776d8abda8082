// Package setup turns the federation configuration into the values package
// federation works with: the region-tag codec (routing key), the
// back-channel dial routes and each region's login base URLs. Regional
// nodes and the hub both build their federation side with it, so that
// package federation itself stays free of configuration.
package setup

import (
	"crypto/ecdsa"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/routing"
)

// Codec loads the federation routing key(s) and returns the region-tag
// codec: a key ring writing m2 artifacts (they name their key) when
// federation.routing_keys is set, else the routing key plus the previous
// one during a rotation, writing m1.
func Codec(cfg *config.Config, dataDir string, log *slog.Logger) (*routing.Codec, error) {
	if ring := cfg.Federation.RoutingKeys; len(ring) > 0 {
		keys := make([]routing.RoutingKey, len(ring))
		for i, k := range ring {
			secret, err := cfg.Secret(fmt.Sprintf("federation.routing_keys[%d].file", i), k.File, "", log)
			if err != nil {
				return nil, err
			}
			keys[i] = routing.RoutingKey{Secret: secret, Use: routing.KeyUse(k.Use)}
		}
		c, err := routing.NewKeyRing(cfg.RegionIDs(), keys)
		if err != nil {
			return nil, fmt.Errorf("federation.routing_keys: %w", err)
		}
		return c, nil
	}
	key, err := cfg.Secret("federation.routing_key_file", cfg.Federation.RoutingKeyFile,
		filepath.Join(dataDir, "secrets", "routing.key"), log)
	if err != nil {
		return nil, err
	}
	keys := [][]byte{key}
	if p := cfg.Federation.PreviousRoutingKeyFile; p != "" {
		prev, err := cfg.Secret("federation.previous_routing_key_file", p, "", log)
		if err != nil {
			return nil, err
		}
		keys = append(keys, prev)
	}
	return routing.NewCodec(cfg.RegionIDs(), keys...)
}

// FederationKeyEnv overrides the federation_key_file of the party being
// started (a region's or the hub's).
const FederationKeyEnv = "MERIDIAN_FEDERATION_KEY_FILE"

// Keyring loads party self's federation key (a region id or
// federation.PartyHub) and every party's public key. A party whose public
// key the config does not give uses its development key under
// dataDir/secrets/federation-<party>.key (generated on first use), and
// only when no key file is configured for it: that is the one-command local
// federation, where every party's dev key sits in one data_dir. In
// production every party sets federation_key_file and
// federation_public_key, and no node reads another party's private key.
func Keyring(cfg *config.Config, dataDir, self string, log *slog.Logger) (*federation.Keyring, error) {
	type party struct {
		id, prefix, keyFile string
		pubs                []string
	}
	parties := make([]party, 0, len(cfg.Regions)+1)
	for i := range cfg.Regions {
		r := &cfg.Regions[i]
		if r.ID == federation.PartyHub {
			return nil, fmt.Errorf("regions[%d].id: %q names the hub's federation identity", i, r.ID)
		}
		parties = append(parties, party{r.ID, fmt.Sprintf("regions[%s]", r.ID), r.FederationKeyFile, r.PublicKeys()})
	}
	parties = append(parties, party{federation.PartyHub, "hub", cfg.Hub.FederationKeyFile, cfg.Hub.PublicKeys()})
	kr := &federation.Keyring{Self: self, Public: map[string]*ecdsa.PublicKey{}, Also: map[string][]*ecdsa.PublicKey{}}
	devPath := func(id string) string { return filepath.Join(dataDir, "secrets", "federation-"+id+".key") }
	for _, p := range parties {
		var pubs []*ecdsa.PublicKey
		for _, s := range p.pubs {
			k, err := federation.ParsePublicKey(s)
			if err != nil {
				return nil, fmt.Errorf("%s.federation_public_key: %w", p.prefix, err)
			}
			pubs = append(pubs, k)
		}
		var pub *ecdsa.PublicKey
		if p.id == self {
			path := p.keyFile
			if e := os.Getenv(FederationKeyEnv); e != "" {
				path = e
			}
			if path != "" && len(pubs) == 0 {
				return nil, fmt.Errorf("%s.federation_public_key: required with a federation key file", p.prefix)
			}
			b, err := cfg.Secret(p.prefix+".federation_key_file", path, devPath(p.id), log)
			if err != nil {
				return nil, err
			}
			if kr.Key, err = federation.ParsePrivateKey(b); err != nil {
				return nil, fmt.Errorf("%s.federation_key_file: %w", p.prefix, err)
			}
			if len(pubs) > 0 && !slices.ContainsFunc(pubs, func(k *ecdsa.PublicKey) bool { return k.Equal(&kr.Key.PublicKey) }) {
				return nil, fmt.Errorf("%s.federation_public_key: does not match the key file (nor does any of federation_public_keys)", p.prefix)
			}
			pub = &kr.Key.PublicKey
		}
		if pub == nil && len(pubs) > 0 {
			pub = pubs[0]
		}
		if pub == nil {
			if p.keyFile != "" {
				return nil, fmt.Errorf("%s.federation_public_key: required", p.prefix)
			}
			if cfg.Federation.Production {
				return nil, fmt.Errorf("%s.federation_public_key: %w: required with federation.production (no development keys)", p.prefix, config.ErrInvalid)
			}
			b, err := config.LoadSecret(p.prefix+".federation_key_file", "", devPath(p.id), log)
			if err != nil {
				return nil, err
			}
			k, err := federation.ParsePrivateKey(b)
			if err != nil {
				return nil, fmt.Errorf("%s: development key: %w", p.prefix, err)
			}
			pub = &k.PublicKey
		}
		kr.Public[p.id] = pub
		for _, k := range pubs {
			if !k.Equal(pub) {
				kr.Also[p.id] = append(kr.Also[p.id], k)
			}
		}
	}
	if kr.Key == nil {
		return nil, fmt.Errorf("federation: %q is neither a configured region nor the hub", self)
	}
	return kr, nil
}

// HopKeys returns the regions' public keys (the hub's left out), as
// routing.RouterConfig.HopKeys takes them.
func HopKeys(kr *federation.Keyring) map[string]*ecdsa.PublicKey {
	m := make(map[string]*ecdsa.PublicKey, len(kr.Public))
	for id, k := range kr.Public {
		if id != federation.PartyHub {
			m[id] = k
		}
	}
	return m
}

// AlsoHopKeys returns the regions' further public keys during a
// federation-key rotation (the hub's left out), as
// routing.RouterConfig.AlsoHopKeys takes them.
func AlsoHopKeys(kr *federation.Keyring) map[string][]*ecdsa.PublicKey {
	m := make(map[string][]*ecdsa.PublicKey, len(kr.Also))
	for id, ks := range kr.Also {
		if id != federation.PartyHub && len(ks) > 0 {
			m[id] = ks
		}
	}
	return m
}

// Routes returns the dial addresses of every region (primary and DR) and
// of the hub, as the configuration lists them: every address of each site.
func Routes(cfg *config.Config) federation.Routes {
	r := federation.Routes{}
	for i := range cfg.Regions {
		reg := &cfg.Regions[i]
		r[reg.Host] = cfg.DialAddrs(reg.Site)
		if reg.DR != nil {
			r[reg.DR.Host] = cfg.DialAddrs(*reg.DR)
		}
	}
	r[cfg.Hub.Host] = cfg.DialAddrs(cfg.Hub.Site)
	return r
}

// HTTPClient is federation.NewHTTPClient with the configured routes and
// timeouts; wrap (may be nil) wraps its transport (tracing).
//
// Each address of a site is dialled on its own: a region host whose first
// node refuses goes to the next, and falls back to the region's DR site
// only when none of its addresses can be dialled (issue 13.3, 13.4). Servers are verified against
// federation.tls.ca_file besides the system roots (Validate has read it;
// should it become unreadable later, only the system roots are trusted).
func HTTPClient(cfg *config.Config, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	tc, _ := cfg.Federation.ClientTLS()
	return federation.NewHTTPClient(Routes(cfg), federation.ClientOptions{
		ConnectTimeout: cfg.Federation.ConnectTimeout, RequestTimeout: cfg.Federation.RequestTimeout, Wrap: wrap,
		TLSConfig: tc, Fallback: Fallback(cfg), IdleFor: federation.IdleFor(cfg.Federation.DrainPeriod, 90*time.Second)})
}

// Fallback maps each region's host to its DR site's addresses.
func Fallback(cfg *config.Config) federation.Routes {
	r := federation.Routes{}
	for i := range cfg.Regions {
		reg := &cfg.Regions[i]
		if reg.DR != nil {
			r[reg.Host] = cfg.DialAddrs(*reg.DR)
		}
	}
	return r
}

// RegionBases returns the base URLs a region's login pages are served on:
// its issuer, its DR site, the global host, then the other regions' hosts
// (their routers forward a login for this region's clients with the Host
// kept, so that the browser stays on the host its client discovered).
func RegionBases(cfg *config.Config, r *config.Region) []string {
	bases := []string{cfg.Issuer(r)}
	if r.DR != nil {
		bases = append(bases, cfg.Federation.URL(r.DR.Host))
	}
	bases = append(bases, cfg.GlobalIssuer())
	for i := range cfg.Regions {
		o := &cfg.Regions[i]
		if o.ID == r.ID {
			continue
		}
		bases = append(bases, cfg.Issuer(o))
		if o.DR != nil {
			bases = append(bases, cfg.Federation.URL(o.DR.Host))
		}
	}
	return bases
}
