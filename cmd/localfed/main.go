// Command localfed runs a whole Meridian federation on this machine: three
// regional nodes and their DR sites, the hub with GeoDNS, the demo app, and
// a development edge on 127.0.0.1 that stands in for DNS (browsers resolve
// every *.localhost name to 127.0.0.1; the edge dispatches by Host the way
// DNS would have, and picks the global host's region with GeoDNS's answer).
// It is what `make run` starts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	cfgPath := flag.String("config", "configs/regions.yaml", "federation config")
	bin := flag.String("bin", "bin", "directory holding the regional, hub and demo-app binaries")
	demo := flag.String("demo-listen", "127.0.0.1:9000", "demo app listen address")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *cfgPath, *bin, *demo); err != nil {
		fmt.Fprintln(os.Stderr, "localfed:", err)
		os.Exit(1)
	}
}
