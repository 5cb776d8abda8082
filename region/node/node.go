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
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/federation/setup"
	"github.com/meridian-id/meridian/internal/clientaddr"
	"github.com/meridian-id/meridian/internal/serve"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/region/scim"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
	"github.com/meridian-id/meridian/telemetry"
)

// OpenStore opens (and migrates) the region's primary database:
// PostgreSQL when the region names one, else the embedded SQLite file under
// dataDir/<region>. On a standby it only checks the schema (OpenSiteStore).
func OpenStore(ctx context.Context, r *config.Region, dataDir string) (store.Store, error) {
	s, _, err := OpenSiteStore(ctx, r, false, dataDir)
	return s, err
}

// Codec loads the federation routing key and returns the region-tag codec
// (setup.Codec).
func Codec(cfg *config.Config, dataDir string, log *slog.Logger) (*routing.Codec, error) {
	return setup.Codec(cfg, dataDir, log)
}

// KeyOptions loads region r's key-encryption key(s) and returns its
// signing-key options: the KEK from regions[].key_encryption_key_file
// (MERIDIAN_KEY_ENCRYPTION_KEY_FILE overrides it; a development key under
// dataDir/secrets when both are empty), the previous KEK during a KEK
// rotation, and the federation's publish delay. A KEK that does not open
// the region's keys is reported when the keys are loaded, never replaced.
func KeyOptions(cfg *config.Config, r *config.Region, dataDir string, log *slog.Logger) (region.KeyOptions, error) {
	path := r.KeyEncryptionKeyFile
	if env := os.Getenv("MERIDIAN_KEY_ENCRYPTION_KEY_FILE"); env != "" {
		path = env
	}
	secret, err := cfg.Secret("regions["+r.ID+"].key_encryption_key_file", path,
		filepath.Join(dataDir, "secrets", "kek-"+r.ID+".key"), log)
	if err != nil {
		return region.KeyOptions{}, err
	}
	opts := region.KeyOptions{PublishDelay: cfg.Federation.SigningKeyPublishDelay}
	if opts.Wrapper, err = region.NewFileKEK(secret); err != nil {
		return region.KeyOptions{}, err
	}
	prev := r.PreviousKeyEncryptionKeyFile
	if env := os.Getenv("MERIDIAN_PREVIOUS_KEY_ENCRYPTION_KEY_FILE"); env != "" {
		prev = env
	}
	if prev != "" {
		old, err := cfg.Secret("regions["+r.ID+"].previous_key_encryption_key_file", prev, "", log)
		if err != nil {
			return region.KeyOptions{}, err
		}
		w, err := region.NewFileKEK(old)
		if err != nil {
			return region.KeyOptions{}, err
		}
		opts.Previous = []region.KeyWrapper{w}
	}
	return opts, nil
}

// Node is one running regional node.
type Node struct {
	Provider *region.Provider
	SCIM     *scim.Handler
	Router   *routing.Router
	Store    store.Store
	cfg      *config.Config
	region   *config.Region
	tel      *telemetry.Telemetry
	log      *slog.Logger
	dr       bool
	fed      *federate.Member // nil when Options.Federator was given

	role     atomic.Int32      // region.Role
	repl     store.Replication // nil for a store without fencing
	fenceKey []byte            // MACs generation answers between the region's sites
	rolePoll time.Duration     // how often settleRole runs
	started  atomic.Bool       // ServeListeners has begun
	primary  sync.Once         // starts the work only a primary does
	serveCtx context.Context   // ServeListeners' context, for startPrimaryWork
}

// Options tune a node beyond the config file.
type Options struct {
	DataDir string
	// DR runs the region's DR site (its listeners) instead of the primary.
	DR bool
	// Federator federates users resident elsewhere (the hub, or mesh peers).
	Federator region.Federator
	// WrapTransport wraps the router's transport to other regions.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// KeyTimings, when its fields are set, override the signing-key cache
	// TTLs and publish delay (tests shorten a rotation to seconds).
	KeyTimings region.KeyOptions
	// RolePoll is how often the node re-reads its database's role
	// (standby → promoted) and asks its peer site for its generation
	// (default 2s).
	RolePoll time.Duration
	// LookupPrefix replaces the Redis key prefix of the mesh lookup table
	// (federate.LookupPrefix; tests sharing one Redis).
	LookupPrefix string
	// Lookup is the shared lookup store in mesh topology (default: opened
	// from hub.redis); tests share one store between their nodes.
	Lookup lookup.Store
	// Federation overrides the member's federation timings (tests).
	Federation federate.Tuning
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
	cookieKey, prevCookieKeys, err := CookieKeys(cfg, r, dataDir, log)
	if err != nil {
		return nil, err
	}
	tlsKey, tlsKeyFile := fmt.Sprintf("regions[%s].tls.key_file", id), r.TLS.KeyFile
	if opts.DR {
		tlsKey, tlsKeyFile = fmt.Sprintf("regions[%s].dr.tls.key_file", id), r.DR.TLS.KeyFile
	}
	if tlsKeyFile != "" {
		if err := cfg.CheckKeyFile(tlsKey, tlsKeyFile, log); err != nil {
			return nil, err
		}
	}
	// The region's own federation identity (its DR site shares it): it
	// signs hops and client assertions; the routing key only MACs tags.
	keys, err := setup.Keyring(cfg, dataDir, id, log)
	if err != nil {
		return nil, err
	}
	keyOpts, err := KeyOptions(cfg, r, dataDir, log)
	if err != nil {
		return nil, err
	}
	if t := opts.KeyTimings; t.PublishDelay > 0 || t.CacheTTL > 0 || t.PeerCacheTTL > 0 {
		keyOpts.PublishDelay, keyOpts.CacheTTL, keyOpts.PeerCacheTTL = t.PublishDelay, t.CacheTTL, t.PeerCacheTTL
	}
	st, role, err := OpenSiteStore(ctx, r, opts.DR, dataDir)
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
	upstream := opts.Federator
	var fed *federate.Member
	if upstream == nil {
		hubKey, err := cfg.Secret("hub.key_file", cfg.Hub.KeyFile, filepath.Join(dataDir, "secrets", "hub.key"), log)
		if err != nil {
			st.Close()
			return nil, err
		}
		fed, err = federate.NewMember(ctx, federate.MemberConfig{Config: cfg, Region: id, Store: st, Codec: codec,
			CookieKey: cookieKey, PreviousCookieKeys: prevCookieKeys, HubKey: hubKey, Keys: keys, Wrap: tel.Transport, Log: log,
			LookupPrefix: opts.LookupPrefix, Lookup: opts.Lookup, Tuning: opts.Federation,
			Meter: tel.Meter.Meter("meridian/region/federate")})
		if err != nil {
			st.Close()
			return nil, err
		}
		upstream = fed.Login
	}
	raw, err := keys.Key.Bytes()
	if err != nil {
		if fed != nil {
			_ = fed.Close()
		}
		st.Close()
		return nil, fmt.Errorf("federation key: %w", err)
	}
	n := &Node{Store: st, cfg: cfg, region: r, tel: tel, log: log, dr: opts.DR, fed: fed,
		fenceKey: fencingKey(raw), rolePoll: opts.RolePoll}
	if n.rolePoll <= 0 {
		n.rolePoll = defaultRolePoll
	}
	n.role.Store(int32(role))
	if err := n.registerMetrics(tel.Meter.Meter("meridian/region/node")); err != nil {
		_ = n.Close()
		return nil, err
	}
	if repl, ok := st.(store.Replication); ok {
		n.repl = repl
		// Settle before the first request: a returning old primary learns
		// from its peer site that it was superseded before it serves.
		sctx, cancel := context.WithTimeout(ctx, cfg.Federation.ConnectTimeout+cfg.Federation.RequestTimeout)
		n.settleRole(sctx)
		cancel()
	}
	var local http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == scim.Prefix || strings.HasPrefix(r.URL.Path, scim.Prefix+"/") {
			n.SCIM.ServeHTTP(w, r)
			return
		}
		n.Provider.ServeHTTP(w, r)
	})
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
	rc.HopKey, rc.HopKeys, rc.AlsoHopKeys = keys.Key, setup.HopKeys(keys), setup.AlsoHopKeys(keys)
	if rc.TLSConfig, err = cfg.Federation.ClientTLS(); err != nil {
		n.Close()
		return nil, err
	}
	n.Router, err = routing.NewRouter(rc, codec, local, log, tel.Meter.Meter("meridian/routing"))
	if err != nil {
		n.Close()
		return nil, err
	}
	var regToken string
	if r.RegistrationTokenFile != "" {
		key := fmt.Sprintf("regions[%s].registration_token_file", id)
		b, err := cfg.Secret(key, r.RegistrationTokenFile, "", log)
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
		RegistrationToken:  regToken, RegistrationsPerMinute: r.RegistrationsPerMinute,
		ClientSecretOverlap: r.ClientSecretOverlap, ClientSecretMaxOverlap: r.ClientSecretMaxOverlap,
		PasswordMemoryBudget: int64(r.Login.PasswordMemoryBudgetMiB) << 20,
		Peers:                n.Router, Federator: upstream, Meter: tel.Meter.Meter("meridian/region"), Keys: keyOpts,
		Passkeys: region.PasskeyOptions{RPID: cfg.PasskeyRPID(), RPName: cfg.Account.WebAuthn.RPName, Origins: cfg.PasskeyOrigins(),
			Attestation: cfg.Account.WebAuthn.Attestation},
		Account: region.AccountOptions{EditableClaims: cfg.Account.EditableClaims, ReauthWindow: cfg.Account.ReauthWindow,
			HomeURLs: homeURLs(cfg)},
	}, st, codec, log)
	if err != nil {
		n.Close()
		return nil, err
	}
	n.SCIM, err = scim.New(scim.Config{
		Region: id, Issuer: cfg.Issuer(r), Store: n.Provider.Store(), Tokens: n.Provider, Codec: codec,
		Users: scim.Users{Normalize: region.NormalizeUsername, HashPassword: region.HashPassword},
		Audit: region.NewAuditor(log, id, tel.Meter.Meter("meridian/region")), AuditEvent: region.AuditSCIMWrite,
		Log: log, Meter: tel.Meter.Meter("meridian/region/scim"),
	})
	if err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// homeURLs maps every region to its region host's URL, where /account
// sends users resident there.
func homeURLs(cfg *config.Config) map[string]string {
	out := map[string]string{}
	for i := range cfg.Regions {
		out[cfg.Regions[i].ID] = cfg.Issuer(&cfg.Regions[i])
	}
	return out
}

// CookieKeys loads region r's cookie key (regions[].cookie_key_file;
// MERIDIAN_COOKIE_KEY_FILE overrides it for the node being started; a
// development key under dataDir/secrets when both are empty) and, during a
// rotation, the previous one (regions[].previous_cookie_key_file or
// MERIDIAN_PREVIOUS_COOKIE_KEY_FILE).
func CookieKeys(cfg *config.Config, r *config.Region, dataDir string, log *slog.Logger) ([]byte, [][]byte, error) {
	path := r.CookieKeyFile
	if env := os.Getenv("MERIDIAN_COOKIE_KEY_FILE"); env != "" {
		path = env
	}
	key, err := cfg.Secret("regions["+r.ID+"].cookie_key_file", path, filepath.Join(dataDir, "secrets", "cookie-"+r.ID+".key"), log)
	if err != nil {
		return nil, nil, err
	}
	prev := r.PreviousCookieKeyFile
	if env := os.Getenv("MERIDIAN_PREVIOUS_COOKIE_KEY_FILE"); env != "" {
		prev = env
	}
	if prev == "" {
		return key, nil, nil
	}
	old, err := cfg.Secret("regions["+r.ID+"].previous_cookie_key_file", prev, "", log)
	if err != nil {
		return nil, nil, err
	}
	return key, [][]byte{old}, nil
}

// RouterConfig derives region id's router configuration from the
// federation config: every other region at each of its configured
// addresses, then its DR site's as fallback.
func RouterConfig(cfg *config.Config, id string, wrap func(http.RoundTripper) http.RoundTripper) routing.RouterConfig {
	rc := routing.RouterConfig{Local: id, ConnectTimeout: cfg.Federation.ConnectTimeout, RequestTimeout: cfg.Federation.RequestTimeout,
		HopPoll: cfg.Federation.HopPoll, WrapTransport: wrap, IdleFor: federation.IdleFor(cfg.Federation.DrainPeriod, time.Minute)}
	for i := range cfg.Regions {
		o := &cfg.Regions[i]
		if o.ID == id {
			continue
		}
		u := routing.Peer{Region: o.ID, URL: cfg.Issuer(o), Addrs: cfg.DialAddrs(o.Site), TLS: cfg.Federation.Scheme == "https"}
		if o.DR != nil {
			u.DRAddrs = cfg.DialAddrs(*o.DR)
		}
		rc.Peers = append(rc.Peers, u)
	}
	return rc
}

// Routes are the regional node's public endpoints as its HTTP metrics name
// them (http.route); any other path is counted as "other".
var Routes = []string{
	"/authorize", "/authorize/callback", "/oauth/token", "/oauth/introspect", "/revoke", "/userinfo", "/dereference",
	"/end_session", "/logged-out", "/login", "/login/password", "/login/totp", "/consent", "/login/federated/callback",
	"/register", "/keys", "/.well-known/openid-configuration", "/healthz", "/readyz", "/internal/", "/scim/v2/",
}

// Member is the node's federation membership (its login, outbox pusher
// and user-keys listing); nil when Options.Federator replaced it.
func (n *Node) Member() *federate.Member { return n.fed }

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
// fails /readyz for federation.drain_period while still serving, and
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
	n.serveCtx = ctx
	n.started.Store(true)
	if n.Role() == region.RolePrimary {
		n.startPrimaryWork()
	}
	if n.repl != nil {
		go n.watchRole(ctx)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+generationPath, n.serveGeneration)
	mux.Handle("/", n.Provider.WriteGate(n.Router, n.Role))
	// Behind a trusted reverse proxy the client is the one it names, for
	// the login limits and for the X-Forwarded-For the router sends on.
	trusted, err := clientaddr.Parse(site.TrustedProxies)
	if err != nil {
		return fmt.Errorf("trusted_proxies: %w", err)
	}
	// Calls routed to another region skip the HTTP server middleware while
	// no span is recorded and this node is primary (routing.Router.Front).
	recording := n.tel.Recording()
	lean := func(*http.Request) bool { return !recording && n.Role() == region.RolePrimary }
	front := n.Router.Front(n.tel.Handler(mux, "regional", Routes...), lean)
	ls := []serve.Listener{{Server: serve.Public(trusted.Handler(front)), Listener: pub,
		CertFile: site.TLS.CertFile, KeyFile: site.TLS.KeyFile, Log: n.log}}
	if trusted.Empty() {
		// The same calls Front proxies, taken off the connection before
		// net/http's server (behind a trusted proxy every call needs its
		// forwarded client address: all go through net/http).
		ls[0].Calls = n.Router.Calls(lean)
	}
	if adm != nil {
		al := serve.Listener{Server: serve.Admin(n.tel.MetricsHandler(), n.ready, "database unreachable"), Listener: adm}
		if site.TLS.Admin {
			al.CertFile, al.KeyFile = site.TLS.CertFile, site.TLS.KeyFile
		}
		ls = append(ls, al)
	}
	n.log.Info("regional node serving", "region", n.region.ID, "listen", pub.Addr().String(), "dr", n.dr, "role", n.Role().String())
	err = serve.RunDrain(ctx, n.cfg.Federation.DrainPeriod, ls)
	n.log.Info("regional node stopped", "region", n.region.ID)
	return err
}

// ready is the admin /readyz check: only a primary on a reachable
// database is ready; a standby or fenced node says which it is.
func (n *Node) ready(ctx context.Context) error {
	if role := n.Role(); role != region.RolePrimary {
		return serve.NotReady(role.String())
	}
	return n.Provider.Ready(ctx)
}

// startPrimaryWork starts, once, what only a node on a writable database
// does: the sweeper and the outbox pusher.
func (n *Node) startPrimaryWork() {
	n.primary.Do(func() {
		ctx := n.serveCtx
		go n.sweep(ctx)
		if n.fed != nil {
			go func() { _ = n.fed.Pusher.Run(ctx) }()
		}
	})
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
			if n.Role() != region.RolePrimary {
				continue
			}
			if err := n.Store.DeleteExpired(ctx, time.Now().UTC()); err != nil {
				n.log.Warn("deleting expired artifacts failed", "err", err)
			}
		}
	}
}
