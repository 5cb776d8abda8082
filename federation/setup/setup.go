// Package setup turns the federation configuration into the values package
// federation works with: the region-tag codec (routing key), the
// back-channel dial routes and each region's login base URLs. Regional
// nodes and the hub both build their federation side with it, so that
// package federation itself stays free of configuration.
package setup

import (
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

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
			secret, err := config.LoadSecret(fmt.Sprintf("federation.routing_keys[%d].file", i), k.File, "", log)
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
	key, err := config.LoadSecret("federation.routing_key_file", cfg.Federation.RoutingKeyFile,
		filepath.Join(dataDir, "secrets", "routing.key"), log)
	if err != nil {
		return nil, err
	}
	keys := [][]byte{key}
	if p := cfg.Federation.PreviousRoutingKeyFile; p != "" {
		prev, err := config.LoadSecret("federation.previous_routing_key_file", p, "", log)
		if err != nil {
			return nil, err
		}
		keys = append(keys, prev)
	}
	return routing.NewCodec(cfg.RegionIDs(), keys...)
}

// Routes returns the dial addresses of every region (primary and DR) and
// of the hub, as the configuration lists them.
func Routes(cfg *config.Config) federation.Routes {
	r := federation.Routes{}
	for i := range cfg.Regions {
		reg := &cfg.Regions[i]
		r[reg.Host] = cfg.Upstream(reg.Site)
		if reg.DR != nil {
			r[reg.DR.Host] = cfg.Upstream(*reg.DR)
		}
	}
	r[cfg.Hub.Host] = cfg.Upstream(cfg.Hub.Site)
	return r
}

// HTTPClient is federation.NewHTTPClient with the configured routes and
// timeouts; wrap (may be nil) wraps its transport (tracing).
//
// A region host whose primary site cannot be dialled falls back to the
// region's DR site (issue 13.3). Servers are verified against
// federation.tls.ca_file besides the system roots (Validate has read it;
// should it become unreadable later, only the system roots are trusted).
func HTTPClient(cfg *config.Config, wrap func(http.RoundTripper) http.RoundTripper) *http.Client {
	tc, _ := cfg.Federation.ClientTLS()
	return federation.NewHTTPClient(Routes(cfg), federation.ClientOptions{
		ConnectTimeout: cfg.Federation.ConnectTimeout, RequestTimeout: cfg.Federation.RequestTimeout, Wrap: wrap,
		TLSConfig: tc, Fallback: Fallback(cfg)})
}

// Fallback maps each region's host to its DR site's address.
func Fallback(cfg *config.Config) federation.Routes {
	r := federation.Routes{}
	for i := range cfg.Regions {
		reg := &cfg.Regions[i]
		if reg.DR != nil {
			r[reg.Host] = cfg.Upstream(*reg.DR)
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
