package federate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// LookupPrefix is the Redis key prefix of the lookup table (the hub's
// default, see cmd/hub --prefix). In mesh topology region R's partition is
// under LookupPrefix + R + ":".
const LookupPrefix = "meridian:lookup:"

// MemberConfig is what a regional node hands to NewMember.
type MemberConfig struct {
	Config *config.Config
	Region string
	Store  store.Store
	Codec  *routing.Codec
	// CookieKey is the region's cookie key (>= 32 bytes, shared by the
	// region's nodes); it also seals the login cookie and paging cursors.
	CookieKey []byte
	// PreviousCookieKeys are cookie keys retired by a rotation: what they
	// sealed still opens.
	PreviousCookieKeys [][]byte
	// HubKey is k_hub (hub.key_file): lookup keys are computed in the
	// region so that usernames never travel to the hub.
	HubKey []byte
	// Keys is the region's federation identity (setup.Keyring): its own
	// private key and every party's public key.
	Keys *federation.Keyring
	// Lookup is the shared lookup store (mesh topology), used as given
	// (unpartitioned: tests of the login flow). When nil in mesh topology,
	// NewMember opens the partitioned table on hub.redis (see
	// lookup.Partitioned): this region's partition under
	// LookupPrefix+region+":" read-write, the others read-only.
	Lookup lookup.Store
	// LookupPrefix replaces LookupPrefix (tests sharing one Redis).
	LookupPrefix string
	// Wrap wraps the back-channel transport (telemetry.Transport).
	Wrap func(http.RoundTripper) http.RoundTripper
	Log  *slog.Logger
	// Meter, when set, records meridian.lookup.conflicts (mesh topology:
	// lookups that met a username claimed by several regions' partitions).
	Meter metric.Meter
	// Tuning overrides the federation timings (zero: the defaults).
	Tuning Tuning
}

// Tuning overrides a member's federation timings; zero fields keep the
// defaults. Tests shorten them to make outages and recoveries visible
// within a test's polling deadline.
type Tuning struct {
	// RP tunes the relying parties towards the hub or the peers.
	RP federation.RPOptions
	// Poll, MinBackoff and MaxBackoff tune the outbox pusher
	// (PusherConfig).
	Poll, MinBackoff, MaxBackoff time.Duration
}

// Member is what a regional node runs as a member of the federation: the Login
// (region.Config.Federator), the outbox Pusher (run it with Run) and the
// user-keys listing (mount it with Handler).
type Member struct {
	Login    *Login
	Pusher   *Pusher
	UserKeys http.Handler
	closers  []func() error
}

// NewMember registers the region's federation clients (the hub's client,
// or every peer's in mesh topology) in the store and builds the Login,
// Pusher and user-keys handler from the configuration.
func NewMember(ctx context.Context, nc MemberConfig) (*Member, error) {
	cfg := nc.Config
	if cfg == nil || nc.Store == nil || nc.Codec == nil || nc.Keys == nil || nc.Keys.Key == nil {
		return nil, errors.New("federation: node needs the config, store, codec and federation keys")
	}
	hubPubs := nc.Keys.PublicKeys(federation.PartyHub)
	if len(hubPubs) == 0 {
		return nil, errors.New("federation: no public key for the hub")
	}
	r, ok := cfg.Region(nc.Region)
	if !ok {
		return nil, fmt.Errorf("federation: region %q is not configured", nc.Region)
	}
	if nc.Log == nil {
		nc.Log = slog.New(slog.DiscardHandler)
	}
	hasher, err := lookup.NewHasher(nc.HubKey, nil)
	if err != nil {
		return nil, fmt.Errorf("hub.key_file: %w", err)
	}
	client := setup.HTTPClient(cfg, nc.Wrap)
	hubURL := cfg.Federation.URL(cfg.Hub.Host)
	n := &Member{}
	var ids []string
	for i := range cfg.Regions {
		ids = append(ids, cfg.Regions[i].ID)
	}
	ucfg := LoginConfig{Hasher: hasher, Regions: ids, Region: nc.Region, Bases: setup.RegionBases(cfg, r), Topology: cfg.Federation.Topology, HubURL: hubURL,
		Codec: nc.Codec, Key: nc.Keys.Key, CookieKey: nc.CookieKey, PreviousCookieKeys: nc.PreviousCookieKeys, SecureCookies: cfg.Federation.Scheme == "https", HTTPClient: client, Log: nc.Log,
		RP: nc.Tuning.RP}
	var sink KeySink
	switch cfg.Federation.Topology {
	case federation.TopologyMesh:
		lk := nc.Lookup
		if lk == nil {
			if cfg.Hub.Redis == "" {
				return nil, errors.New("federation: mesh topology needs a shared lookup store: set hub.redis")
			}
			opts, err := redis.ParseURL(cfg.Hub.Redis)
			if err != nil {
				return nil, fmt.Errorf("hub.redis: %w", err)
			}
			c := redis.NewClient(opts)
			n.closers = append(n.closers, c.Close)
			if lk, err = openPartitioned(ctx, c, nc, cfg.RegionIDs()); err != nil {
				n.Close()
				return nil, err
			}
		}
		if ucfg.Table, err = lookup.NewTable(hasher, lk); err != nil {
			n.Close()
			return nil, err
		}
		ucfg.Peers = map[string]string{}
		entries := map[string][]string{}
		for i := range cfg.Regions {
			p := &cfg.Regions[i]
			ucfg.Peers[p.ID] = cfg.Issuer(p)
			entries[p.ID] = setup.RegionBases(cfg, p)
		}
		if err := EnsurePeerClients(ctx, nc.Store, nc.Codec, nc.Region, entries, nc.Keys); err != nil {
			n.Close()
			return nil, err
		}
		sink = StoreSink{Store: lk, Region: nc.Region}
	default:
		if err := EnsureHubClient(ctx, nc.Store, nc.Codec, nc.Region, hubURL, hubPubs...); err != nil {
			return nil, err
		}
		if sink, err = NewHubSink(hubURL, nc.Keys.Key, nc.Region, client); err != nil {
			return nil, err
		}
	}
	if n.Login, err = NewLogin(ucfg); err != nil {
		n.Close()
		return nil, err
	}
	if n.Pusher, err = NewPusher(PusherConfig{Region: nc.Region, Outbox: nc.Store, Hasher: hasher, Sink: sink, Log: nc.Log,
		Poll: nc.Tuning.Poll, MinBackoff: nc.Tuning.MinBackoff, MaxBackoff: nc.Tuning.MaxBackoff}); err != nil {
		n.Close()
		return nil, err
	}
	if n.UserKeys, err = NewUserKeysHandler(UserKeysConfig{Region: nc.Region, Issuer: cfg.Issuer(r), Codec: nc.Codec, HubKey: hubPubs[0], AlsoHubKeys: hubPubs[1:], Hasher: hasher,
		Users: nc.Store, CursorKey: nc.CookieKey, PreviousCursorKeys: nc.PreviousCookieKeys}); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// Handler serves UserKeysPath and passes everything else to provider.
func (n *Member) Handler(provider http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(federation.UserKeysPath, n.UserKeys)
	mux.Handle("/", provider)
	return mux
}

// Close releases what NewMember opened (the Redis client in mesh topology).
func (n *Member) Close() error {
	var errs []error
	for _, c := range n.closers {
		errs = append(errs, c())
	}
	n.closers = nil
	return errors.Join(errs...)
}

// openPartitioned opens the mesh table on c: the region's own partition
// read-write, every other region's read-only (lazily: a region that has
// not started yet has none). Its Redis user must be allowed to write only
// its own partition (docs/operations.md, "Mesh topology"); a node whose
// credentials can write another region's partition logs an error at
// start, since the table is then not region-restricted.
func openPartitioned(ctx context.Context, c *redis.Client, nc MemberConfig, regions []string) (lookup.Store, error) {
	prefix := nc.LookupPrefix
	if prefix == "" {
		prefix = LookupPrefix
	}
	own, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + nc.Region + ":"})
	if err != nil {
		return nil, fmt.Errorf("hub.redis: %w", err)
	}
	for _, r := range regions {
		if r == nc.Region {
			continue
		}
		probe := prefix + r + ":acl-probe:" + nc.Region
		if err := c.Set(ctx, probe, "1", time.Minute).Err(); err == nil {
			c.Del(ctx, probe)
			nc.Log.ErrorContext(ctx, "mesh lookup store: this region's Redis user can write another region's partition; table writes are not region-restricted (see docs/operations.md, Mesh topology)",
				"region", nc.Region, "partition", r)
		}
		break
	}
	open := func(ctx context.Context, r string) (lookup.Store, error) {
		return redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + r + ":", ReadOnly: true})
	}
	meter := nc.Meter
	if meter == nil {
		meter = noop.NewMeterProvider().Meter("")
	}
	conflicts, err := meter.Int64Counter("meridian.lookup.conflicts",
		metric.WithDescription("mesh lookups that met a username claimed by more than one region's partition (resolved to no region; list them with hub conflicts)"))
	if err != nil {
		return nil, err
	}
	return lookup.NewPartitioned(nc.Region, own, regions, open, func(k lookup.Key, claimers []string) {
		nc.Log.Warn("audit", "event", "lookup.conflict", "key", k.String(), "regions", claimers)
		conflicts.Add(ctx, 1, metric.WithAttributes(attribute.String("regions", strings.Join(claimers, ","))))
	})
}
