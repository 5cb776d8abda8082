// Package node assembles a regional node from configuration: it opens the
// region's store, loads secrets, builds the provider and serves it on the
// public and admin listeners with graceful shutdown.
package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federation"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/mysql"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// OpenStore opens (and migrates) the region's database: MySQL/MariaDB for
// a mysql:// URL, PostgreSQL for another URL, else the embedded SQLite file
// under dataDir/<region>.
func OpenStore(ctx context.Context, r *config.Region, dataDir string) (store.Store, error) {
	if r.Database != "" {
		var s interface {
			store.Store
			Migrate(context.Context) error
		}
		var err error
		if strings.HasPrefix(r.Database, "mysql://") {
			s, err = mysql.Open(ctx, r.Database)
		} else {
			s, err = postgres.Open(ctx, r.Database)
		}
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

// Codec loads the federation routing key and returns the region-tag codec.
func Codec(cfg *config.Config, dataDir string, log *slog.Logger) (*routing.Codec, error) {
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
	fed      *federation.Node // nil when Options.Upstream was given
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
	st, err := OpenStore(ctx, r, dataDir)
	if err != nil {
		return nil, err
	}
	hosts := []string{r.Host}
	if r.DR != nil {
		hosts = append(hosts, r.DR.Host)
	}
	upstream := opts.Upstream
	var fed *federation.Node
	if upstream == nil {
		hubKey, err := config.LoadSecret("hub.key_file", cfg.Hub.KeyFile, filepath.Join(dataDir, "secrets", "hub.key"), log)
		if err != nil {
			st.Close()
			return nil, err
		}
		fed, err = federation.NewNode(ctx, federation.NodeConfig{Config: cfg, Region: id, Store: st, Codec: codec,
			CookieKey: cookieKey, HubKey: hubKey, Wrap: tel.Transport, Log: log})
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
	n.Router, err = routing.NewRouter(RouterConfig(cfg, id, wrap), codec, local, log, tel.Meter.Meter("meridian/routing"))
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
		Region: id, Issuer: cfg.Issuer(r), GlobalIssuer: cfg.GlobalIssuer(), RegionHosts: hosts,
		CookieDomain: cfg.Federation.CookieDomain, SecureCookies: cfg.Federation.Scheme == "https", CookieKey: cookieKey,
		Peers: n.Router, Upstream: upstream, Meter: tel.Meter.Meter("meridian/region"),
		RegistrationToken: regToken, RegistrationsPerMinute: r.RegistrationsPerMinute,
	}, st, codec, log)
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
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
	srv := &http.Server{Handler: n.tel.Handler(n.Router, "regional"), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() {
		if site.TLS.CertFile != "" {
			srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			errc <- srv.ServeTLS(pub, site.TLS.CertFile, site.TLS.KeyFile)
			return
		}
		errc <- srv.Serve(pub)
	}()
	if adm != nil {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", n.tel.MetricsHandler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			c, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := n.Provider.Ready(c); err != nil {
				http.Error(w, "database unreachable", http.StatusServiceUnavailable)
				return
			}
			_, _ = w.Write([]byte("ok\n"))
		})
		as := AdminServer(mux)
		servers = append(servers, as)
		go func() { errc <- as.Serve(adm) }()
	}
	n.log.Info("regional node serving", "region", n.region.ID, "listen", pub.Addr().String(), "dr", n.dr)
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return err
		}
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Shutdown(shutCtx))
	}
	n.log.Info("regional node stopped", "region", n.region.ID)
	return errors.Join(errs...)
}

// AdminServer is the admin listener's server: every phase of a request is
// bounded, so idle or slow connections (a port scanner, a stuck scraper)
// cannot pile up on the listener that carries health and metrics.
func AdminServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second, MaxHeaderBytes: 16 << 10}
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
