package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/geodns"
	"github.com/meridian-id/meridian/hub"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/region/federation"
	"github.com/meridian-id/meridian/region/node"
	"github.com/meridian-id/meridian/telemetry"
)

const usage = `usage: hub <command> [flags]

commands:
  serve            run the hub (public and admin listeners)
  reconcile        compare the lookup table with every region's users; --fix repairs it
  import           assign the usernames of a file (one per line) to a region
                   (--region R --file F; "-" reads stdin)
  rotate-key       step 2 of a hub key rotation: copy entries to the new key
                   (--previous-key-file OLD --region R --file F, once per region)
  finish-rotation  step 3: drop the previous-key entries (--previous-key-file OLD --file F)

common flags: --config F (default configs/regions.yaml) --data-dir D --prefix P (Redis key prefix)

secrets: federation.routing_key_file, hub.key_file (k_hub) and MERIDIAN_HUB_SECRET_FILE
(the hub's own signing/sealing secret); without them development keys under data_dir/secrets
are used (and created), with a warning.
`

// env is what a command runs with.
type env struct {
	ctx    context.Context
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	cfg    *config.Config
	data   string
	prefix string
	tel    *telemetry.Telemetry
	log    *slog.Logger
	flags  *flags
}

type flags struct {
	region, file, previousKey string
	fix                       bool
}

type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

type command struct {
	flags func(*flag.FlagSet, *flags)
	run   func(*env) error
}

func commands() map[string]command {
	return map[string]command{
		"serve":     {nil, serve},
		"reconcile": {func(fs *flag.FlagSet, f *flags) { fs.BoolVar(&f.fix, "fix", false, "repair the table") }, reconcile},
		"import": {func(fs *flag.FlagSet, f *flags) {
			fs.StringVar(&f.region, "region", "", "region the users live in (required)")
			fs.StringVar(&f.file, "file", "", `file of usernames, one per line ("-": stdin) (required)`)
		}, importUsers},
		"rotate-key": {func(fs *flag.FlagSet, f *flags) {
			fs.StringVar(&f.region, "region", "", "region announcing the users (required)")
			fs.StringVar(&f.file, "file", "", "the region's usernames, one per line (required)")
			fs.StringVar(&f.previousKey, "previous-key-file", "", "the previous k_hub (required)")
		}, rotateKey},
		"finish-rotation": {func(fs *flag.FlagSet, f *flags) {
			fs.StringVar(&f.file, "file", "", "every region's usernames, one per line (required)")
			fs.StringVar(&f.previousKey, "previous-key-file", "", "the previous k_hub (required)")
		}, finishRotation},
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	name := args[0]
	cmd, ok := commands()[name]
	if !ok {
		fmt.Fprintf(stderr, "hub: unknown command %q\n\n%s", name, usage)
		return 2
	}
	if err := runCommand(ctx, name, cmd, args[1:], stdin, stdout, stderr); err != nil {
		var ue usageError
		switch {
		case errors.Is(err, flag.ErrHelp):
			return 2
		case errors.As(err, &ue):
			fmt.Fprintf(stderr, "hub %s: %v\n", name, err)
			return 2
		}
		fmt.Fprintf(stderr, "hub %s: %v\n", name, err)
		return 1
	}
	return 0
}

func runCommand(ctx context.Context, name string, cmd command, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hub "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "configs/regions.yaml", "federation config file")
	dataDir := fs.String("data-dir", "", "data directory (default: data_dir from the config)")
	prefix := fs.String("prefix", "meridian:", "key prefix in Redis")
	fv := &flags{}
	if cmd.flags != nil {
		cmd.flags(fs, fv)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected argument %q", fs.Arg(0))}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	data := *dataDir
	if data == "" {
		data = cfg.DataDir
	}
	logOut := io.Discard
	if name == "serve" {
		logOut = stderr
	}
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "meridian-hub", Instance: cfg.Hub.Host,
		OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, LogLevel: cfg.Telemetry.LogLevel}, logOut)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())
	return cmd.run(&env{ctx: ctx, stdin: stdin, stdout: stdout, stderr: stderr, cfg: cfg, data: data,
		prefix: *prefix, tel: tel, log: tel.Log, flags: fv})
}

func (e *env) secret(key, path, devName string) ([]byte, error) {
	return config.LoadSecret(key, path, filepath.Join(e.data, "secrets", devName), e.log)
}

// hasher is k_hub (and, during a rotation, the previous key).
func (e *env) hasher(previousFile string) (*lookup.Hasher, error) {
	cur, err := e.secret("hub.key_file", e.cfg.Hub.KeyFile, "hub.key")
	if err != nil {
		return nil, err
	}
	var prev []byte
	if previousFile != "" {
		if prev, err = config.LoadSecret("--previous-key-file", previousFile, "", e.log); err != nil {
			return nil, err
		}
	}
	return lookup.NewHasher(cur, prev)
}

// stores opens the lookup store and the hub state store: Redis when
// hub.redis is set, else the embedded store and in-process state.
func (e *env) stores() (lookup.Store, hub.StateStore, func(), error) {
	if e.cfg.Hub.Redis != "" {
		opts, err := redis.ParseURL(e.cfg.Hub.Redis)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("hub.redis: %w", err)
		}
		c := redis.NewClient(opts)
		st, err := redisstore.New(e.ctx, c, redisstore.Options{Prefix: e.prefix + "lookup:"})
		if err != nil {
			c.Close()
			return nil, nil, nil, fmt.Errorf("hub.redis: %w", err)
		}
		return st, hub.NewRedisState(c, e.prefix+"hub:"), func() { c.Close() }, nil
	}
	dir := filepath.Join(e.data, "hub")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	st, err := embedded.Open(e.ctx, filepath.Join(dir, "lookup.db"))
	if err != nil {
		return nil, nil, nil, err
	}
	return st, hub.NewMemoryState(), func() { st.Close() }, nil
}

// broker assembles the hub from the configuration.
func (e *env) broker() (*hub.Broker, func(), error) {
	codec, err := node.Codec(e.cfg, e.data, e.log)
	if err != nil {
		return nil, nil, err
	}
	h, err := e.hasher("")
	if err != nil {
		return nil, nil, err
	}
	secret, err := e.secret("hub secret (MERIDIAN_HUB_SECRET_FILE)", os.Getenv("MERIDIAN_HUB_SECRET_FILE"), "hub-secret.key")
	if err != nil {
		return nil, nil, err
	}
	lk, state, closeStores, err := e.stores()
	if err != nil {
		return nil, nil, err
	}
	client := federation.NewHTTPClient(federation.RoutesFromConfig(e.cfg), federation.ClientOptions{
		ConnectTimeout: e.cfg.Federation.ConnectTimeout, RequestTimeout: e.cfg.Federation.RequestTimeout, Wrap: e.tel.Transport})
	b, err := hub.New(hub.Config{Issuer: e.cfg.Federation.URL(e.cfg.Hub.Host), Regions: hub.RegionsFromConfig(e.cfg),
		Codec: codec, Hasher: h, Lookup: lk, State: state, Secret: secret, HTTPClient: client,
		SecureCookies: e.cfg.Federation.Scheme == "https", Log: e.log, Meter: e.tel.Meter.Meter("meridian/hub")})
	if err != nil {
		closeStores()
		return nil, nil, err
	}
	return b, closeStores, nil
}

func serve(e *env) error {
	b, closeStores, err := e.broker()
	if err != nil {
		return err
	}
	defer closeStores()
	site := e.cfg.Hub.Site
	pub, err := net.Listen("tcp", site.Listen)
	if err != nil {
		return fmt.Errorf("hub.listen: %w", err)
	}
	srv := &http.Server{Handler: e.tel.Handler(b, "hub"), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
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
	if site.AdminListen != "" {
		adm, err := net.Listen("tcp", site.AdminListen)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("hub.admin_listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", e.tel.MetricsHandler())
		mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
		mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := b.Ready(ctx); err != nil {
				http.Error(w, "lookup or state store unreachable", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok\n")
		})
		as := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, as)
		go func() { errc <- as.Serve(adm) }()
	}

	// The hub also serves the federation zone when dns.listen is set.
	dnsCtx, stopDNS := context.WithCancel(e.ctx)
	defer stopDNS()
	dnsDone := make(chan struct{})
	if e.cfg.DNS.Listen != "" {
		gc, err := geodns.FromConfig(e.cfg)
		if err != nil {
			_ = srv.Close()
			return err
		}
		dns, err := geodns.New(gc, e.log, e.tel.Meter.Meter("meridian/geodns"))
		if err != nil {
			_ = srv.Close()
			return err
		}
		go func() {
			defer close(dnsDone)
			if err := dns.ListenAndServe(dnsCtx, e.cfg.DNS.Listen); err != nil {
				errc <- fmt.Errorf("dns.listen: %w", err)
			}
		}()
		e.log.Info("geodns serving", "listen", e.cfg.DNS.Listen, "zone", gc.Zone)
	} else {
		close(dnsDone)
	}
	defer func() { stopDNS(); <-dnsDone }()

	e.log.Info("hub serving", "issuer", b.Issuer(), "listen", pub.Addr().String())
	select {
	case <-e.ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			for _, s := range servers {
				_ = s.Close()
			}
			return err
		}
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var errs []error
	for _, s := range servers {
		errs = append(errs, s.Shutdown(shutCtx))
	}
	e.log.Info("hub stopped")
	return errors.Join(errs...)
}

func reconcile(e *env) error {
	b, closeStores, err := e.broker()
	if err != nil {
		return err
	}
	defer closeStores()
	rep, err := b.Reconcile(e.ctx, e.flags.fix)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tUSERS\tMISSING\tMOVED\tCONFLICTS\tUNVERIFIED\tERROR")
	conflicts := 0
	for _, r := range rep.Regions {
		msg := ""
		if r.Err != nil {
			msg = r.Err.Error()
		}
		conflicts += r.Conflicts
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Region, r.Users, r.Missing, r.Moved, r.Conflicts, r.Unverified, msg)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "stale entries: %d (removed %d); entries written: %d\n", rep.Stale, rep.StaleRemoved, rep.Fixed)
	if !e.flags.fix {
		fmt.Fprintln(e.stdout, "dry run: rerun with --fix to repair")
	}
	if conflicts > 0 {
		fmt.Fprintln(e.stdout, "conflicts: a username exists in two regions; delete it from one region, then reconcile again")
	}
	if !rep.Complete {
		return errors.New("some regions could not be listed; stale entries were kept")
	}
	return nil
}

// usernames yields the non-empty, non-comment lines of the --file.
func (e *env) usernames() (iter.Seq[string], func() error, func(), error) {
	if e.flags.file == "" {
		return nil, nil, nil, usageError{"--file is required"}
	}
	var r io.Reader = e.stdin
	closeFile := func() {}
	if e.flags.file != "-" {
		f, err := os.Open(e.flags.file)
		if err != nil {
			return nil, nil, nil, err
		}
		r, closeFile = f, func() { f.Close() }
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	seq := func(yield func(string) bool) {
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if !yield(line) {
				return
			}
		}
	}
	return seq, sc.Err, closeFile, nil
}

func (e *env) checkRegion() error {
	if e.flags.region == "" {
		return usageError{"--region is required"}
	}
	if _, ok := e.cfg.Region(e.flags.region); !ok {
		return usageError{fmt.Sprintf("--region: %q is not configured (have %s)", e.flags.region, strings.Join(e.cfg.RegionIDs(), ", "))}
	}
	return nil
}

func (e *env) table(previousFile string) (*lookup.Table, func(), error) {
	h, err := e.hasher(previousFile)
	if err != nil {
		return nil, nil, err
	}
	lk, _, closeStores, err := e.stores()
	if err != nil {
		return nil, nil, err
	}
	t, err := lookup.NewTable(h, lk)
	if err != nil {
		closeStores()
		return nil, nil, err
	}
	return t, closeStores, nil
}

// importUsers assigns a file of usernames to a region, in pipelined
// batches, with progress on stderr.
func importUsers(e *env) error {
	if err := e.checkRegion(); err != nil {
		return err
	}
	names, scanErr, closeFile, err := e.usernames()
	if err != nil {
		return err
	}
	defer closeFile()
	t, closeStores, err := e.table("")
	if err != nil {
		return err
	}
	defer closeStores()
	start := time.Now()
	pairs := func(yield func(string, string) bool) {
		for n := range names {
			if !yield(n, e.flags.region) {
				return
			}
		}
	}
	n, err := t.Import(e.ctx, pairs, func(done int) {
		fmt.Fprintf(e.stderr, "\rimported %d users (%.0f/s)", done, float64(done)/max(time.Since(start).Seconds(), 1e-3))
	})
	fmt.Fprintln(e.stderr)
	if err == nil {
		err = scanErr()
	}
	if err != nil {
		return fmt.Errorf("after %d users: %w", n, err)
	}
	fmt.Fprintf(e.stdout, "imported %d users into region %s\n", n, e.flags.region)
	return nil
}

// rotation runs step (Rehash or FinishRotation) over the --file with a
// rotating hasher.
func (e *env) rotation(step func(*lookup.Table, iter.Seq[string]) (lookup.RehashReport, error)) error {
	if e.flags.previousKey == "" {
		return usageError{"--previous-key-file is required"}
	}
	names, scanErr, closeFile, err := e.usernames()
	if err != nil {
		return err
	}
	defer closeFile()
	t, closeStores, err := e.table(e.flags.previousKey)
	if err != nil {
		return err
	}
	defer closeStores()
	rep, err := step(t, names)
	if err == nil {
		err = scanErr()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "announced %d, invalid %d, migrated %d, current %d, missing %d, foreign %d, dropped %d\n",
		rep.Announced, rep.Invalid, rep.Migrated, rep.Current, rep.Missing, rep.Foreign, rep.Dropped)
	return nil
}

// rotateKey is step 2 of a k_hub rotation (see lookup.Table): hub.key_file
// holds the new key, --previous-key-file the old one.
func rotateKey(e *env) error {
	if err := e.checkRegion(); err != nil {
		return err
	}
	return e.rotation(func(t *lookup.Table, names iter.Seq[string]) (lookup.RehashReport, error) {
		return t.Rehash(e.ctx, e.flags.region, names)
	})
}

// finishRotation is step 3: afterwards run every hub and region without
// the previous key and destroy it.
func finishRotation(e *env) error {
	return e.rotation(func(t *lookup.Table, names iter.Seq[string]) (lookup.RehashReport, error) {
		return t.FinishRotation(e.ctx, names)
	})
}
