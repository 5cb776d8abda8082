// Command geodns serves the federation zone on its own (the hub serves it
// too when dns.listen is set), and fails a region back to its primary:
//
//	geodns [serve] --config configs/regions.yaml [--admin 127.0.0.1:9053]
//	geodns failback --admin 127.0.0.1:9053 REGION
//	geodns state --admin 127.0.0.1:9053
//
// The admin listener (dns.admin_listen, overridden by --admin) serves
// /metrics, GET /dns/state and POST /dns/failback/{region}, over TLS when
// dns.tls.admin is set (required by federation.production); it has no
// authentication, so bind it to loopback or a management network only.
// failback and state take HOST:PORT (plain HTTP) or an https:// URL, trusting
// the system roots plus --ca-file.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
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
  failback  fail a region back to its primary --admin HOST:PORT|https://HOST:PORT [--ca-file F] REGION
  state     print the failover state --admin HOST:PORT|https://HOST:PORT [--ca-file F]
`

var program = &cli.Program{Name: "geodns", Usage: usage, Default: "serve", Commands: []cli.Command{
	{Name: "serve", Summary: "serve the federation zone", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		cfgPath := fs.String("config", "configs/regions.yaml", "federation config")
		admin := fs.String("admin", "", "admin listener serving /metrics and /dns/; overrides dns.admin_listen (empty: the config's)")
		return func(ctx context.Context, _ []string, s cli.Stdio) error { return serve(ctx, *cfgPath, *admin, s.Err) }
	}},
	{Name: "failback", Args: "REGION", Summary: "fail a region back to its primary", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		admin, ca := adminFlag(fs)
		return func(ctx context.Context, args []string, s cli.Stdio) error {
			if *admin == "" {
				return cli.Usagef("--admin is required")
			}
			if len(args) != 1 {
				return cli.Usagef("want one REGION, got %d arguments", len(args))
			}
			hc, base, err := adminClient(*admin, *ca)
			if err != nil {
				return err
			}
			return failback(ctx, hc, base, args[0], s.Out)
		}
	}},
	{Name: "state", Summary: "print the failover state", Setup: func(fs *flag.FlagSet) cli.RunFunc {
		admin, ca := adminFlag(fs)
		return func(ctx context.Context, _ []string, s cli.Stdio) error {
			if *admin == "" {
				return cli.Usagef("--admin is required")
			}
			hc, base, err := adminClient(*admin, *ca)
			if err != nil {
				return err
			}
			return state(ctx, hc, base, s.Out)
		}
	}},
}}

func adminFlag(fs *flag.FlagSet) (admin, caFile *string) {
	return fs.String("admin", "", "the running geodns's admin listener to ask: HOST:PORT or https://HOST:PORT (required)"),
		fs.String("ca-file", "", "PEM CA bundle trusted besides the system roots for an https:// --admin")
}

// adminClient is the HTTP client and base URL for --admin: HOST:PORT is
// plain HTTP, an https:// URL is verified against the system roots plus
// caFile.
func adminClient(admin, caFile string) (*http.Client, string, error) {
	base := admin
	if !strings.Contains(admin, "://") {
		base = "http://" + admin
	}
	f := config.Federation{TLS: config.FederationTLS{CAFile: caFile}}
	tc, err := f.ClientTLS()
	if err != nil {
		return nil, "", err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, strings.TrimSuffix(base, "/"), nil
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
	if admin != "" {
		// The flag overrides dns.admin_listen; validate again so that
		// federation.production covers it too.
		cfg.DNS.AdminListen = admin
		if err := cfg.Validate(); err != nil {
			return fmt.Errorf("--admin: %w", err)
		}
	}
	if cfg.DNS.TLS.Admin {
		if err := cfg.CheckKeyFile("dns.tls.key_file", cfg.DNS.TLS.KeyFile, nil); err != nil {
			return err
		}
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
	if cfg.DNS.AdminListen != "" {
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", tel.MetricsHandler())
		mux.Handle("/dns/", srv.AdminHandler())
		hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
		l, err := net.Listen("tcp", cfg.DNS.AdminListen)
		if err != nil {
			return fmt.Errorf("dns.admin_listen: %w", err)
		}
		if cfg.DNS.TLS.Admin {
			go func() { _ = hs.ServeTLS(l, cfg.DNS.TLS.CertFile, cfg.DNS.TLS.KeyFile) }()
		} else {
			go func() { _ = hs.Serve(l) }()
		}
		defer hs.Close()
	}
	tel.Log.Info("geodns serving", "listen", cfg.DNS.Listen, "zone", gc.Zone, "state_file", gc.StateFile)
	return srv.ListenAndServe(ctx, cfg.DNS.Listen)
}

func failback(ctx context.Context, hc *http.Client, base, region string, out io.Writer) error {
	rs, err := geodns.RequestFailback(ctx, hc, base, region)
	if err != nil {
		return err
	}
	return json.NewEncoder(out).Encode(rs)
}

func state(ctx context.Context, hc *http.Client, base string, out io.Writer) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/dns/state", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
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
