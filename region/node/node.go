// Package node assembles a regional node from configuration: it opens the
// region's store, loads secrets, builds the provider and serves it on the
// public and admin listeners with graceful shutdown.
package node

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// OpenStore opens (and migrates) the region's database: PostgreSQL when the
// region names one, else the embedded SQLite file under dataDir/<region>.
func OpenStore(ctx context.Context, r *config.Region, dataDir string) (store.Store, error) {
	if r.Database != "" {
		s, err := postgres.Open(ctx, r.Database)
		if err != nil {
			return nil, fmt.Errorf("regions[%s].database: %w", r.ID, err)
		}
		if err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, fmt.Errorf("regions[%s].database: migrate: %w", r.ID, err)
		}
		return s, nil
	}
	dir := filepath.Join(dataDir, r.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s, err := sqlite.Open(ctx, filepath.Join(dir, "meridian.db"))
	if err != nil {
		return nil, err
	}
	if err := s.Migrate(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return s, nil
}

// Codec loads the federation routing key and returns the region-tag codec
// (setup.Codec).
func Codec(cfg *config.Config, dataDir string, log *slog.Logger) (*routing.Codec, error) {
	return setup.Codec(cfg, dataDir, log)
}

// Node is one running regional node.
type Node struct {
	Provider *region.Provider
	Router   *routing.Router
	Store    store.Store
	cfg      *config.Config
	region   *config.Region
	tel      *telemetry.Telemetry
	log      *slog.Logger
	dr       bool
	fed      *federate.Node // nil when Options.Upstream was given
}

// Options tune a node beyond the config file.
type Options struct {
	DataDir string
	// DR runs the region's DR site (its listeners) instead of the primary.
	DR bool
	// Upstream federates users resident elsewhere (the hub, or mesh peers).
	Upstream region.Upstream
	// WrapTransport wraps the router's transport to other regions.
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// New builds the node of region id.
func New(ctx context.Context, cfg *config.Config, id string, opts Options, tel *telemetry.Telemetry) (*Node, error) {
	r, ok := cfg.Region(id)
	if !ok {
		return nil, fmt.Errorf("--region: %q is not configured (have %v)", id, cfg.RegionIDs())
	}
	if opts.DR && r.DR == nil {
		return nil, fmt.Errorf("regions[%s].dr: not configured", id)
	}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = cfg.DataDir
	}
	log := tel.Log
	codec, err := Codec(cfg, dataDir, log)
	if err != nil {
		return nil, err
	}
	cookieKey, err := config.LoadSecret("cookie key", os.Getenv("MERIDIAN_COOKIE_KEY_FILE"),
		filepath.Join(dataDir, "secrets", "cookie-"+id+".key"), log)
	if err != nil {
		return nil, err
	}
	prevCookieKeys, err := previousSecret("previous cookie key (MERIDIAN_PREVIOUS_COOKIE_KEY_FILE)", os.Getenv("MERIDIAN_PREVIOUS_COOKIE_KEY_FILE"), log)
	if err != nil {
		return nil, err
	}
	// The region's own federation identity (its DR site shares it): it
	// signs hops and client assertions; the routing key only MACs tags.
	keys, err := setup.Keyring(cfg, dataDir, id, log)
	if err != nil {
		return nil, err
	}
	st, err := OpenStore(ctx, r, dataDir)
	if err != nil {
		return nil, err
	}
	hosts := []string{r.Host}
	if r.DR != nil {
		hosts = append(hosts, r.DR.Host)
	}
	peerHosts := map[string]string{}
	for i := range cfg.Regions {
		o := &cfg.Regions[i]
		if o.ID == id {
			continue
		}
		peerHosts[strings.ToLower(o.Host)] = cfg.Issuer(o)
		if o.DR != nil {
			peerHosts[strings.ToLower(o.DR.Host)] = cfg.Issuer(o)
		}
	}
	upstream := opts.Upstream
	var fed *federate.Node
	if upstream == nil {
		hubKey, err := config.LoadSecret("hub.key_file", cfg.Hub.KeyFile, filepath.Join(dataDir, "secrets", "hub.key"), log)
		if err != nil {
			st.Close()
			return nil, err
		}
		fed, err = federate.NewNode(ctx, federate.NodeConfig{Config: cfg, Region: id, Store: st, Codec: codec,
			CookieKey: cookieKey, PreviousCookieKeys: prevCookieKeys, HubKey: hubKey, Keys: keys, Wrap: tel.Transport, Log: log})
		if err != nil {
			st.Close()
			return nil, err
		}
		upstream = fed.Upstream
	}
	n := &Node{Store: st, cfg: cfg, region: r, tel: tel, log: log, dr: opts.DR, fed: fed}
	var local http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Provider.ServeHTTP(w, r) })
	if fed != nil {
		local = fed.Handler(local)
	}
	wrap := func(rt http.RoundTripper) http.RoundTripper {
		rt = tel.Transport(rt)
		if opts.WrapTransport != nil {
			rt = opts.WrapTransport(rt)
		}
		return rt
	}
	rc := RouterConfig(cfg, id, wrap)
	rc.HopKey, rc.HopKeys = keys.Key, setup.HopKeys(keys)
	n.Router, err = routing.NewRouter(rc, codec, local, log, tel.Meter.Meter("meridian/routing"))
	if err != nil {
		n.Close()
		return nil, err
	}
	var regToken string
	if r.RegistrationTokenFile != "" {
		key := fmt.Sprintf("regions[%s].registration_token_file", id)
		b, err := config.LoadSecret(key, r.RegistrationTokenFile, "", log)
		if err != nil {
			n.Close()
			return nil, err
		}
		if regToken = strings.TrimSpace(string(b)); len(regToken) < 32 {
			n.Close()
			return nil, fmt.Errorf("%s: %w", key, config.ErrWeakSecret)
		}
	}
	n.Provider, err = region.New(ctx, region.Config{
		Region: id, Issuer: cfg.Issuer(r), GlobalIssuer: cfg.GlobalIssuer(), RegionHosts: hosts, PeerHosts: peerHosts,
		CookieDomain: cfg.Federation.CookieDomain, SecureCookies: cfg.Federation.Scheme == "https", CookieKey: cookieKey,
		PreviousCookieKeys: prevCookieKeys,
		Peers:              n.Router, Upstream: upstream, Meter: tel.Meter.Meter("meridian/region"),
		RegistrationToken: regToken, RegistrationsPerMinute: r.RegistrationsPerMinute,
	}, st, codec, log)
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// previousSecret loads the secret retired by a rotation, when path is set:
// it still opens what it sealed, and seals nothing new.
func previousSecret(what, path string, log *slog.Logger) ([][]byte, error) {
	if path == "" {
		return nil, nil
	}
	k, err := config.LoadSecret(what, path, "", log)
	if err != nil {
		return nil, err
	}
	return [][]byte{k}, nil
}

// RouterConfig derives region id's router configuration from the
// federation config: every other region at its configured address, its DR
// site as fallback.
func RouterConfig(cfg *config.Config, id string, wrap func(http.RoundTripper) http.RoundTripper) routing.RouterConfig {
	rc := routing.RouterConfig{Local: id, ConnectTimeout: cfg.Federation.ConnectTimeout, RequestTimeout: cfg.Federation.RequestTimeout,
		WrapTransport: wrap}
	for i := range cfg.Regions {
		o := &cfg.Regions[i]
		if o.ID == id {
			continue
		}
		u := routing.Upstream{Region: o.ID, URL: cfg.Issuer(o), Addr: cfg.Upstream(o.Site), TLS: cfg.Federation.Scheme == "https"}
		if o.DR != nil {
			u.DRAddr = cfg.Upstream(*o.DR)
		}
		rc.Upstreams = append(rc.Upstreams, u)
	}
	return rc
}

// Routes are the regional node's public endpoints as its HTTP metrics name
// them (http.route); any other path is counted as "other".
var Routes = []string{
	"/authorize", "/authorize/callback", "/oauth/token", "/oauth/introspect", "/revoke", "/userinfo", "/dereference",
	"/end_session", "/logged-out", "/login", "/login/password", "/login/totp", "/consent", "/login/federated/callback",
	"/register", "/keys", "/.well-known/openid-configuration", "/healthz", "/readyz", "/internal/",
}

// Close releases the store.
func (n *Node) Close() error {
	if n.fed != nil {
		_ = n.fed.Close()
	}
	return n.Store.Close()
}

func (n *Node) site() config.Site {
	if n.dr {
		return *n.region.DR
	}
	return n.region.Site
}

// Serve runs the public and admin listeners until ctx is cancelled, then
// drains in-flight requests for up to 15 seconds.
func (n *Node) Serve(ctx context.Context) error {
	site := n.site()
	pub, err := net.Listen("tcp", site.Listen)
	if err != nil {
		return fmt.Errorf("regions[%s].listen: %w", n.region.ID, err)
	}
	var adm net.Listener
	if site.AdminListen != "" {
		if adm, err = net.Listen("tcp", site.AdminListen); err != nil {
			pub.Close()
			return fmt.Errorf("regions[%s].admin_listen: %w", n.region.ID, err)
		}
	}
	return n.ServeListeners(ctx, pub, adm)
}

// ServeListeners is Serve on listeners the caller opened (tests use port 0).
func (n *Node) ServeListeners(ctx context.Context, pub, adm net.Listener) error {
	site := n.site()
	go n.sweep(ctx)
	if n.fed != nil {
		go func() { _ = n.fed.Pusher.Run(ctx) }()
	}
	ls := []serve.Listener{{Server: serve.Public(n.tel.Handler(n.Router, "regional", Routes...)), Listener: pub,
		CertFile: site.TLS.CertFile, KeyFile: site.TLS.KeyFile}}
	if adm != nil {
		ls = append(ls, serve.Listener{Server: serve.Admin(n.tel.MetricsHandler(), n.Provider.Ready, "database unreachable"), Listener: adm})
	}
	n.log.Info("regional node serving", "region", n.region.ID, "listen", pub.Addr().String(), "dr", n.dr)
	err := serve.Run(ctx, ls)
	n.log.Info("regional node stopped", "region", n.region.ID)
	return err
}

// sweep deletes expired artifacts every few minutes.
func (n *Node) sweep(ctx context.Context) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := n.Store.DeleteExpired(ctx, time.Now().UTC()); err != nil {
				n.log.Warn("deleting expired artifacts failed", "err", err)
			}
		}
	}
}
