// Command geodns-bench serves the local-demo GeoDNS zone (id.localhost.:
// regions eu, us, ap on 127.0.0.11-13, DR sites on 127.0.0.21-22, hub on
// 127.0.0.10) on a loopback address, for load tests such as
// geodns/bench/dnsperf.sh. Health checks and rate limiting are off so the
// figure measures the DNS path alone.
//
// Usage:
//
//	geodns-bench [-addr 127.0.0.1:0] [-portfile FILE] [-cpuprofile FILE]
//
// It writes the chosen port to -portfile once it is listening and serves
// until SIGINT or SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"syscall"

	"github.com/meridian-id/meridian/geodns"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "geodns-bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("geodns-bench", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "UDP and TCP listen address (loopback only)")
	portFile := fs.String("portfile", "", "write the listening port to this file")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the serving period to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		return errors.New("-addr must be a loopback address")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := geodns.New(demoConfig(), log, nil)
	if err != nil {
		return err
	}
	pc, ln, err := geodns.Listen(ctx, *addr)
	if err != nil {
		return err
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	if *portFile != "" {
		tmp := *portFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(strconv.Itoa(port)+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, *portFile); err != nil {
			return err
		}
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Fprintf(os.Stderr, "geodns-bench: serving id.localhost. on %s (udp+tcp)\n", pc.LocalAddr())
	return srv.Serve(ctx, pc, ln)
}

func demoConfig() geodns.Config {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	return geodns.Config{
		Zone:        "id.localhost.",
		GlobalHost:  "id.localhost.",
		NameServers: []geodns.NameServer{{Name: "ns1.id.localhost.", Addrs: []netip.Addr{a("127.0.0.10")}}},
		HubHost:     geodns.Host{Name: "hub.id.localhost.", Addrs: []netip.Addr{a("127.0.0.10")}},
		Regions: []geodns.Region{
			{ID: "eu", Host: geodns.Host{Name: "eu.id.localhost.", Addrs: []netip.Addr{a("127.0.0.11")}},
				DR: &geodns.Host{Name: "eu-dr.id.localhost.", Addrs: []netip.Addr{a("127.0.0.21")}}, Proximity: []string{"us", "ap"}},
			{ID: "us", Host: geodns.Host{Name: "us.id.localhost.", Addrs: []netip.Addr{a("127.0.0.12")}},
				DR: &geodns.Host{Name: "us-dr.id.localhost.", Addrs: []netip.Addr{a("127.0.0.22")}}, Proximity: []string{"eu", "ap"}},
			{ID: "ap", Host: geodns.Host{Name: "ap.id.localhost.", Addrs: []netip.Addr{a("127.0.0.13")}},
				Proximity: []string{"us", "eu"}},
		},
		Subnets: []geodns.SubnetRoute{
			{Prefix: p("192.0.2.0/24"), Region: "eu"},
			{Prefix: p("198.51.100.0/24"), Region: "us"},
			{Prefix: p("203.0.113.0/24"), Region: "ap"},
			{Prefix: p("127.0.0.0/8"), Region: "eu"},
		},
		DefaultRegion: "us",
	}
}
