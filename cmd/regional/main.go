// Command regional runs and administers a Meridian regional node.
//
//	regional serve   --config F --region ID [--data-dir D] [--dr]
//	regional migrate --config F --region ID [--data-dir D]
//	regional users   add|list|delete ...
//	regional clients add|list|delete ...
//	regional keys    rotate|list|migrate ...
//	regional promote|fence --config F --region ID [--dr] ...
//
// Run `regional help` for the commands, `regional keys` for a group's, and
// `regional keys rotate --help` for a command's flags.
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
