// Package server assembles a hub from configuration, the way region/node
// assembles a regional node: it loads the secrets, opens the lookup and
// state stores (Redis when hub.redis is set, else embedded), builds the
// hub.Broker and serves it on the public and admin listeners (and the
// federation's DNS zone when dns.listen is set) with the shutdown loop of
// package internal/serve.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/geodns"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/internal/clientaddr"
	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/telemetry"
)

// Options tune a hub beyond the config file.
type Options struct {
	// DataDir holds development secrets and the embedded lookup store
	// (default: the config's data_dir).
	DataDir string
	// Prefix is the Redis key prefix (default "meridian:").
	Prefix string
	// RP tunes the hub's relying parties towards the regions (zero: the
	// defaults; tests shorten the health probing).
	RP federation.RPOptions
}

func (o Options) withDefaults(cfg *config.Config) Options {
	if o.DataDir == "" {
		o.DataDir = cfg.DataDir
	}
	if o.Prefix == "" {
		o.Prefix = "meridian:"
	}
	return o
}

// Stores are the hub's lookup table store and login state store.
type Stores struct {
	Lookup lookup.Store
	State  hub.StateStore
	// Redis is the lookup store when hub.redis is set (nil for the
	// embedded store): its bucket layout can be resized.
	Redis *redisstore.Store
	// Conflicts holds the users two regions claim (hub conflicts).
	Conflicts lookup.Store
	close     func()
}

// Close releases the stores.
func (s *Stores) Close() { s.close() }

// OpenStores opens the lookup store and the hub state store: Redis when
// hub.redis is set, else the embedded store and in-process state.
func OpenStores(ctx context.Context, cfg *config.Config, opts Options) (*Stores, error) {
	opts = opts.withDefaults(cfg)
	if cfg.Hub.Redis != "" {
		ro, err := redis.ParseURL(cfg.Hub.Redis)
		if err != nil {
			return nil, fmt.Errorf("hub.redis: %w", err)
		}
		c := redis.NewClient(ro)
		st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: opts.Prefix + "lookup:", ExpectedUsers: cfg.Hub.ExpectedUsers})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("hub.redis: %w", err)
		}
		cf, err := redisstore.New(ctx, c, redisstore.Options{Prefix: opts.Prefix + "conflicts:"})
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("hub.redis: %w", err)
		}
		return &Stores{Lookup: st, Redis: st, State: hub.NewRedisState(c, opts.Prefix+"hub:"), Conflicts: cf, close: func() { c.Close() }}, nil
	}
	dir := filepath.Join(opts.DataDir, "hub")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	st, err := embedded.Open(ctx, filepath.Join(dir, "lookup.db"))
	if err != nil {
		return nil, err
	}
	cf, err := embedded.Open(ctx, filepath.Join(dir, "conflicts.db"))
	if err != nil {
		st.Close()
		return nil, err
	}
	return &Stores{Lookup: st, State: hub.NewMemoryState(), Conflicts: cf, close: func() { st.Close(); cf.Close() }}, nil
}

// Hasher returns the lookup hasher of k_hub (hub.key_file) and, during a
// rotation, of the previous key in previousFile.
func Hasher(cfg *config.Config, opts Options, previousFile string, log *slog.Logger) (*lookup.Hasher, error) {
	opts = opts.withDefaults(cfg)
	cur, err := cfg.Secret("hub.key_file", cfg.Hub.KeyFile, filepath.Join(opts.DataDir, "secrets", "hub.key"), log)
	if err != nil {
		return nil, err
	}
	var prev []byte
	if previousFile != "" {
		if prev, err = cfg.Secret("--previous-key-file", previousFile, "", log); err != nil {
			return nil, err
		}
	}
	return lookup.NewHasher(cur, prev)
}

// Hub is one running hub node.
type Hub struct {
	Broker *hub.Broker
	// Stores are the hub's lookup, conflict and state stores.
	Stores *Stores
	// Hasher computes lookup keys (k_hub).
	Hasher *lookup.Hasher
	cfg    *config.Config
	tel    *telemetry.Telemetry
	log    *slog.Logger
}

// New builds the hub from the configuration: k_hub, the routing key, the
// hub's own secret (hub.secret_file, env MERIDIAN_HUB_SECRET_FILE), the
// stores and the back-channel client.
func New(ctx context.Context, cfg *config.Config, opts Options, tel *telemetry.Telemetry) (*Hub, error) {
	opts = opts.withDefaults(cfg)
	log := tel.Log
	codec, err := setup.Codec(cfg, opts.DataDir, log)
	if err != nil {
		return nil, err
	}
	h, err := Hasher(cfg, opts, "", log)
	if err != nil {
		return nil, err
	}
	if f := cfg.Hub.TLS.KeyFile; f != "" {
		if err := cfg.CheckKeyFile("hub.tls.key_file", f, log); err != nil {
			return nil, err
		}
	}
	secret, err := cfg.Secret("hub.secret_file", cfg.Hub.SecretFile, filepath.Join(opts.DataDir, "secrets", "hub-secret.key"), log)
	if err != nil {
		return nil, err
	}
	var previous [][]byte
	prevFile := cfg.Hub.PreviousSecretFile
	if p := os.Getenv("MERIDIAN_PREVIOUS_HUB_SECRET_FILE"); p != "" {
		prevFile = p // the variable's name before hub.previous_secret_file existed
	}
	if prevFile != "" {
		prev, err := cfg.Secret("hub.previous_secret_file", prevFile, "", log)
		if err != nil {
			return nil, err
		}
		previous = append(previous, prev)
	}
	keys, err := setup.Keyring(cfg, opts.DataDir, federation.PartyHub, log)
	if err != nil {
		return nil, err
	}
	stores, err := OpenStores(ctx, cfg, opts)
	if err != nil {
		return nil, err
	}
	trusted, err := clientaddr.Parse(cfg.Hub.TrustedProxies)
	if err != nil {
		stores.Close()
		return nil, fmt.Errorf("hub.trusted_proxies: %w", err)
	}
	b, err := hub.New(hub.Config{Issuer: cfg.Federation.URL(cfg.Hub.Host), Regions: hub.RegionsFromConfig(cfg), TrustedProxies: trusted,
		Codec: codec, Keys: keys, Hasher: h, Lookup: stores.Lookup, State: stores.State, Conflicts: stores.Conflicts, Secret: secret, PreviousSecrets: previous,
		HTTPClient: setup.HTTPClient(cfg, tel.Transport), SecureCookies: cfg.Federation.Scheme == "https",
		Log: log, Meter: tel.Meter.Meter("meridian/hub"), RP: opts.RP})
	if err != nil {
		stores.Close()
		return nil, err
	}
	return &Hub{Broker: b, Stores: stores, Hasher: h, cfg: cfg, tel: tel, log: log}, nil
}

// Close releases the stores.
func (h *Hub) Close() error {
	h.Stores.Close()
	return nil
}

// Serve opens the hub's listeners (hub.listen, hub.admin_listen) and runs
// ServeListeners.
func (h *Hub) Serve(ctx context.Context) error {
	site := h.cfg.Hub.Site
	pub, err := net.Listen("tcp", site.Listen)
	if err != nil {
		return fmt.Errorf("hub.listen: %w", err)
	}
	var adm net.Listener
	if site.AdminListen != "" {
		if adm, err = net.Listen("tcp", site.AdminListen); err != nil {
			pub.Close()
			return fmt.Errorf("hub.admin_listen: %w", err)
		}
	}
	return h.ServeListeners(ctx, pub, adm)
}

// ServeListeners serves the hub on listeners the caller opened (adm may be
// nil), and the DNS zone when dns.listen is set, until ctx ends or one of
// them fails.
func (h *Hub) ServeListeners(ctx context.Context, pub, adm net.Listener) error {
	site := h.cfg.Hub.Site
	var tasks []serve.Task
	var mounts []serve.Mount
	if h.cfg.DNS.Listen != "" {
		gc, err := geodns.FromConfig(h.cfg)
		if err != nil {
			closeAll(pub, adm)
			return err
		}
		dns, err := geodns.New(gc, h.log, h.tel.Meter.Meter("meridian/geodns"))
		if err != nil {
			closeAll(pub, adm)
			return err
		}
		tasks = append(tasks, func(ctx context.Context) error {
			if err := dns.ListenAndServe(ctx, h.cfg.DNS.Listen); err != nil {
				return fmt.Errorf("dns.listen: %w", err)
			}
			return nil
		})
		// The operator's failback endpoint (`hub dns-failback`) lives on
		// the admin listener only.
		mounts = append(mounts, serve.Mount{Pattern: "/dns/", Handler: dns.AdminHandler()})
		h.log.Info("geodns serving", "listen", h.cfg.DNS.Listen, "zone", gc.Zone)
	}
	ls := []serve.Listener{{Server: serve.Public(h.tel.Handler(h.Broker, "hub")), Listener: pub,
		CertFile: site.TLS.CertFile, KeyFile: site.TLS.KeyFile}}
	if adm != nil {
		al := serve.Listener{Server: serve.Admin(h.tel.MetricsHandler(), h.Broker.Ready, "lookup or state store unreachable", mounts...), Listener: adm}
		if site.TLS.Admin {
			al.CertFile, al.KeyFile = site.TLS.CertFile, site.TLS.KeyFile
		}
		ls = append(ls, al)
	}
	h.log.Info("hub serving", "issuer", h.Broker.Issuer(), "listen", pub.Addr().String())
	err := serve.RunDrain(ctx, h.cfg.Federation.DrainPeriod, ls, tasks...)
	h.log.Info("hub stopped")
	return err
}

func closeAll(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			l.Close()
		}
	}
}
