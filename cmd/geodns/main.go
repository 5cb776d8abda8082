// Command geodns serves the federation zone on its own (the hub serves it
// too when dns.listen is set):
//
//	geodns --config configs/regions.yaml [--admin 127.0.0.1:9053]
package main

import (
	"context"
	"flag"
	"fmt"
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
	cfgPath := flag.String("config", "configs/regions.yaml", "federation config")
	admin := flag.String("admin", "", "serve /metrics on this address (empty: off)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *cfgPath, *admin); err != nil {
		fmt.Fprintln(os.Stderr, "geodns:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfgPath, admin string) error {
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
	if admin != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.MetricsHandler())
		hs := &http.Server{Addr: admin, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.ListenAndServe() }()
		defer hs.Close()
	}
	tel.Log.Info("geodns serving", "listen", cfg.DNS.Listen, "zone", gc.Zone)
	return srv.ListenAndServe(ctx, cfg.DNS.Listen)
}
