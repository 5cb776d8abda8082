// Command geodns serves the federation zone on its own (the hub serves it
// too when dns.listen is set), and fails a region back to its primary:
//
//	geodns [serve] --config configs/regions.yaml [--admin 127.0.0.1:9053]
//	geodns failback --admin 127.0.0.1:9053 REGION
//	geodns state --admin 127.0.0.1:9053
//
// The admin listener serves /metrics, GET /dns/state and POST
// /dns/failback/{region}; it has no authentication, so bind it to loopback
// or a management network only.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/geodns"
	"github.com/meridian-id/meridian/internal/cli"
	"github.com/meridian-id/meridian/telemetry"
)

const usage = `usage: geodns [command] [flags]

commands:
  serve     serve the zone (the default) --config F [--admin HOST:PORT]
  failback  fail a region back to its primary --admin HOST:PORT REGION
  state     print the failover state --admin HOST:PORT
`

var program = &cli.Program{Name: "geodns", Usage: usage, Default: "serve", Commands: []cli.Command{
	{Name: "serve", Summary: "serve the federation zone", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		cfgPath := fs.String("config", "configs/regions.yaml", "federation config")
		admin := fs.String("admin", "", "admin listener serving /metrics and /dns/ (empty: off)")
		return func(ctx context.Context, _ []string, s cli.Stdio) error { return serve(ctx, *cfgPath, *admin, s.Err) }
	}},
	{Name: "failback", Args: "REGION", Summary: "fail a region back to its primary", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		admin := adminFlag(fs)
		return func(ctx context.Context, args []string, s cli.Stdio) error {
			if *admin == "" {
				return cli.Usagef("--admin is required")
			}
			if len(args) != 1 {
				return cli.Usagef("want one REGION, got %d arguments", len(args))
			}
			return failback(ctx, *admin, args[0], s.Out)
		}
	}},
	{Name: "state", Summary: "print the failover state", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		admin := adminFlag(fs)
		return func(ctx context.Context, _ []string, s cli.Stdio) error {
			if *admin == "" {
				return cli.Usagef("--admin is required")
			}
			return state(ctx, *admin, s.Out)
		}
	}},
}}

func adminFlag(fs *flag.FlagSet) *string {
	return fs.String("admin", "", "the running geodns's admin listener to ask (required)")
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := program.Run(ctx, os.Args[1:], cli.Stdio{In: os.Stdin, Out: os.Stdout, Err: os.Stderr})
	stop()
	os.Exit(code)
}

func serve(ctx context.Context, cfgPath, admin string, logOut io.Writer) error {
	cfg, err := config.Load(cfgPath)
	if err != nil {
		return err
	}
	if cfg.DNS.Listen == "" {
		return fmt.Errorf("dns.listen is empty in %s", cfgPath)
	}
	gc, err := geodns.FromConfig(cfg)
	if err != nil {
		return err
	}
	tel, err := telemetry.New(ctx, telemetry.Config{Service: "meridian-geodns", Instance: cfg.DNS.Listen,
		OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, LogLevel: cfg.Telemetry.LogLevel}, logOut)
	if err != nil {
		return err
	}
	defer tel.Shutdown(context.Background())
	srv, err := geodns.New(gc, tel.Log, tel.Meter.Meter("meridian/geodns"))
	if err != nil {
		return err
	}
	defer srv.Close()
	if admin != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.MetricsHandler())
		mux.Handle("/dns/", srv.AdminHandler())
		hs := &http.Server{Addr: admin, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.ListenAndServe() }()
		defer hs.Close()
	}
	tel.Log.Info("geodns serving", "listen", cfg.DNS.Listen, "zone", gc.Zone, "state_file", gc.StateFile)
	return srv.ListenAndServe(ctx, cfg.DNS.Listen)
}

func failback(ctx context.Context, admin, region string, out io.Writer) error {
	rs, err := geodns.RequestFailback(ctx, nil, "http://"+admin, region)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(rs)
}

func state(ctx context.Context, admin string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+admin+"/dns/state", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("state: HTTP %d", resp.StatusCode)
	}
	_, err = io.Copy(out, resp.Body)
	return err
}
