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
	"github.com/meridian-id/meridian/telemetry"
)

func main() {
	args := os.Args[1:]
	cmd := "serve"
	if len(args) > 0 && (args[0] == "serve" || args[0] == "failback" || args[0] == "state") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("geodns "+cmd, flag.ExitOnError)
	cfgPath := fs.String("config", "configs/regions.yaml", "federation config (serve)")
	admin := fs.String("admin", "", "admin listener: serve /metrics and /dns/ there (serve; empty: off), or the one to ask (failback, state)")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch {
	case cmd == "serve":
		err = serve(ctx, *cfgPath, *admin)
	case *admin == "":
		err = fmt.Errorf("%s: --admin is required", cmd)
	case cmd == "failback" && fs.NArg() == 1:
		err = failback(ctx, *admin, fs.Arg(0))
	case cmd == "state" && fs.NArg() == 0:
		err = state(ctx, *admin)
	default:
		err = fmt.Errorf("usage: geodns failback --admin HOST:PORT REGION | geodns state --admin HOST:PORT")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "geodns:", err)
		os.Exit(1)
	}
}

func serve(ctx context.Context, cfgPath, admin string) error {
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
		OTLPEndpoint: cfg.Telemetry.OTLPEndpoint, LogLevel: cfg.Telemetry.LogLevel}, os.Stderr)
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

func failback(ctx context.Context, admin, region string) error {
	rs, err := geodns.RequestFailback(ctx, nil, "http://"+admin, region)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(rs)
}

func state(ctx context.Context, admin string) error {
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
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}
