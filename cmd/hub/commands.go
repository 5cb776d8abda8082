package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/geodns"
	"github.com/meridian-id/meridian/hub/server"
	"github.com/meridian-id/meridian/internal/cli"
	"github.com/meridian-id/meridian/lookup"
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
  table-rehash     resize the Redis table's buckets to hub.expected_users (online, resumable)
  dns-failback     move a failed-over region host back to its primary (--region R; asks
                   the running hub's admin listener, hub.admin_listen)
  conflicts        list the users two regions claim (held, never last-writer-wins);
                   --resolve KEY --region R gives the entry to R (the holder or the claimant)

mesh topology (federation.topology: mesh): the table is one partition per region
(<prefix>lookup:<region>:) and hub.redis must be an operator Redis user; import,
rotate-key, finish-rotation and table-rehash work on the --region's partition,
conflicts lists and resolves keys claimed by several partitions, reconcile is refused.

common flags: --config F (default configs/regions.yaml) --data-dir D --prefix P (Redis key prefix)

secrets (key files of >= 32 bytes, mode 0600; every key also has its environment variable,
MERIDIAN_ + the key path in upper case): federation.routing_key_file, hub.key_file (k_hub),
hub.federation_key_file (the hub's federation identity; MERIDIAN_FEDERATION_KEY_FILE) and
hub.secret_file (MERIDIAN_HUB_SECRET_FILE: the hub's own signing/sealing secret;
hub.previous_secret_file during its rotation); without them development keys under
data_dir/secrets are used (and created), with a warning. federation.production: true
(MERIDIAN_FEDERATION_PRODUCTION=true) refuses that, key files readable by group or others,
and plain HTTP.
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
	region, file, previousKey, resolve string
	fix                                bool
}

type command struct {
	name, summary string
	flags         func(*flag.FlagSet, *flags)
	run           func(*env) error
}

var program = &cli.Program{Name: "hub", Usage: usage, Commands: commands([]command{
	{"serve", "run the hub (public and admin listeners)", nil, serve},
	{"reconcile", "compare the lookup table with every region's users; --fix repairs it",
		func(fs *flag.FlagSet, f *flags) { fs.BoolVar(&f.fix, "fix", false, "repair the table") }, reconcile},
	{"conflicts", "list the users two regions claim; --resolve KEY --region R gives the entry to R", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.resolve, "resolve", "", "lookup key (32 hex digits) of the conflict to resolve")
		fs.StringVar(&f.region, "region", "", "with --resolve: the region that keeps the user")
	}, conflicts},
	{"import", "assign the usernames of a file (one per line) to a region", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.region, "region", "", "region the users live in (required)")
		fs.StringVar(&f.file, "file", "", `file of usernames, one per line ("-": stdin) (required)`)
	}, importUsers},
	{"rotate-key", "step 2 of a hub key rotation: copy entries to the new key", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.region, "region", "", "region announcing the users (required)")
		fs.StringVar(&f.file, "file", "", "the region's usernames, one per line (required)")
		fs.StringVar(&f.previousKey, "previous-key-file", "", "the previous k_hub (required)")
	}, rotateKey},
	{"finish-rotation", "step 3 of a hub key rotation: drop the previous-key entries", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.file, "file", "", "every region's usernames, one per line (required)")
		fs.StringVar(&f.previousKey, "previous-key-file", "", "the previous k_hub (required)")
		fs.StringVar(&f.region, "region", "", "mesh topology: the region whose partition to finish (required there)")
	}, finishRotation},
	{"table-rehash", "resize the Redis table's buckets to hub.expected_users", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.region, "region", "", "mesh topology: the region whose partition to resize (required there)")
	}, tableRehash},
	{"dns-failback", "move a failed-over region host back to its primary", func(fs *flag.FlagSet, f *flags) {
		fs.StringVar(&f.region, "region", "", "region to fail back (required)")
	}, dnsFailback},
})}

// tableRehash resizes the Redis lookup table to the bucket count
// hub.expected_users asks for (docs/operations.md, sizing the hub table).
func tableRehash(e *env) error {
	if e.mesh() {
		if err := e.checkRegion(); err != nil {
			return cli.Usagef("mesh topology: the table is one partition per region; %v", err)
		}
		c, err := e.meshClient()
		if err != nil {
			return err
		}
		defer c.Close()
		st, err := e.partition(c, e.flags.region, false)
		if err != nil {
			return err
		}
		return st.Resize(e.ctx, e.stdout)
	}
	if e.flags.region != "" {
		return cli.Usagef("--region: hub topology has one table; --region names a mesh partition")
	}
	st, err := server.OpenStores(e.ctx, e.cfg, e.opts())
	if err != nil {
		return err
	}
	defer st.Close()
	if st.Redis == nil {
		return errors.New("hub.redis is not set: the embedded table has no buckets to resize")
	}
	return st.Redis.Resize(e.ctx, e.stdout)
}

// dnsFailback asks the running hub's GeoDNS to answer a region's primary
// again after an operator has rebuilt it (docs/operations.md, failback).
func dnsFailback(e *env) error {
	if e.flags.region == "" {
		return cli.Usagef("--region is required")
	}
	if e.cfg.Hub.AdminListen == "" {
		return errors.New("hub.admin_listen is not set: the failback endpoint lives on the admin listener")
	}
	st, err := geodns.RequestFailback(e.ctx, nil, "http://"+e.cfg.Hub.AdminListen, e.flags.region)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "region %s: failed over %v\n", st.Region, st.FailedOver)
	return nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return program.Run(ctx, args, cli.Stdio{In: stdin, Out: stdout, Err: stderr})
}

// commands gives each command the common flags and the env it runs with.
func commands(cs []command) []cli.Command {
	out := make([]cli.Command, 0, len(cs))
	for _, cmd := range cs {
		out = append(out, cli.Command{Name: cmd.name, Summary: cmd.summary, Setup: func(fs *flag.FlagSet) cli.RunFunc {
			cfgPath := fs.String("config", "configs/regions.yaml", "federation config file")
			dataDir := fs.String("data-dir", "", "data directory (default: data_dir from the config)")
			prefix := fs.String("prefix", "meridian:", "key prefix in Redis")
			fv := &flags{}
			if cmd.flags != nil {
				cmd.flags(fs, fv)
			}
			return func(ctx context.Context, _ []string, s cli.Stdio) error {
				cfg, err := config.Load(*cfgPath)
				if err != nil {
					return err
				}
				data := *dataDir
				if data == "" {
					data = cfg.DataDir
				}
				logOut := io.Discard
				if cmd.name == "serve" {
					logOut = s.Err
				}
				tel, err := telemetry.New(ctx, telemetry.Config{Service: "meridian-hub", Instance: cfg.Hub.Host,
					OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, LogLevel: cfg.Telemetry.LogLevel}, logOut)
				if err != nil {
					return err
				}
				defer tel.Shutdown(context.Background())
				return cmd.run(&env{ctx: ctx, stdin: s.In, stdout: s.Out, stderr: s.Err, cfg: cfg, data: data,
					prefix: *prefix, tel: tel, log: tel.Log, flags: fv})
			}
		}})
	}
	return out
}

func (e *env) opts() server.Options { return server.Options{DataDir: e.data, Prefix: e.prefix} }

func serve(e *env) error {
	h, err := server.New(e.ctx, e.cfg, e.opts(), e.tel)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Serve(e.ctx)
}

func reconcile(e *env) error {
	if e.mesh() {
		return errors.New("reconcile: not available in mesh topology (no hub asks the regions for their users); each region re-announces its own users into its partition with `regional users announce`")
	}
	h, err := server.New(e.ctx, e.cfg, e.opts(), e.tel)
	if err != nil {
		return err
	}
	defer h.Close()
	rep, err := h.Broker.Reconcile(e.ctx, e.flags.fix)
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
		return nil, nil, nil, cli.Usagef("--file is required")
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
		return cli.Usagef("--region is required")
	}
	if _, ok := e.cfg.Region(e.flags.region); !ok {
		return cli.Usagef("--region: %q is not configured (have %s)", e.flags.region, strings.Join(e.cfg.RegionIDs(), ", "))
	}
	return nil
}

// table opens the lookup table with k_hub (and, during a rotation, the
// previous key in previousFile). In mesh topology it is the table of the --region's partition, opened
// with hub.redis (an operator Redis user, docs/operations.md).
func (e *env) table(previousFile string) (*lookup.Table, func(), error) {
	if e.mesh() {
		if err := e.checkRegion(); err != nil {
			return nil, nil, cli.Usagef("mesh topology: the table is one partition per region; %v", err)
		}
	}
	h, err := server.Hasher(e.cfg, e.opts(), previousFile, e.log)
	if err != nil {
		return nil, nil, err
	}
	if e.mesh() {
		c, err := e.meshClient()
		if err != nil {
			return nil, nil, err
		}
		st, err := e.partition(c, e.flags.region, false)
		if err == nil {
			var t *lookup.Table
			if t, err = lookup.NewTable(h, st); err == nil {
				return t, func() { c.Close() }, nil
			}
		}
		c.Close()
		return nil, nil, err
	}
	st, err := server.OpenStores(e.ctx, e.cfg, e.opts())
	if err != nil {
		return nil, nil, err
	}
	t, err := lookup.NewTable(h, st.Lookup)
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return t, st.Close, nil
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
		return cli.Usagef("--previous-key-file is required")
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
	if !e.mesh() && e.flags.region != "" {
		return cli.Usagef("--region: hub topology has one table; --region names a mesh partition")
	}
	return e.rotation(func(t *lookup.Table, names iter.Seq[string]) (lookup.RehashReport, error) {
		return t.FinishRotation(e.ctx, names)
	})
}

// conflicts lists the users two regions claim, or resolves one.
func conflicts(e *env) error {
	if e.mesh() {
		return meshConflicts(e)
	}
	if e.flags.resolve != "" {
		k, err := federation.ParseKey(e.flags.resolve)
		if err != nil {
			return cli.Usagef("--resolve: %v", err)
		}
		if err := e.checkRegion(); err != nil {
			return err
		}
		h, err := server.New(e.ctx, e.cfg, e.opts(), e.tel)
		if err != nil {
			return err
		}
		defer h.Close()
		if err := h.Broker.ResolveConflict(e.ctx, k, e.flags.region); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "resolved: %s now lives in %s\n", k, e.flags.region)
		return nil
	}
	if e.flags.region != "" {
		return cli.Usagef("--region needs --resolve")
	}
	h, err := server.New(e.ctx, e.cfg, e.opts(), e.tel)
	if err != nil {
		return err
	}
	defer h.Close()
	list, err := h.Broker.Conflicts(e.ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tHOLDER\tCLAIMANT")
	for _, c := range list {
		holder := c.Holder
		if holder == "" {
			holder = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Key, holder, c.Claimant)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(list) > 0 {
		fmt.Fprintln(e.stdout, "resolve: find which account is genuine, then hub conflicts --resolve KEY --region R")
	}
	return nil
}
