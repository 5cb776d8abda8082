// Command hub runs Meridian's federation hub: the identity broker between
// regions and the user→region lookup table (serve), and the operator tasks
// on that table (import, reconcile, key rotation). See "hub help".
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
