//go:build !linux

package geodns

import "syscall"

// reusePort does nothing here: the UDP socket is served by one reader.
func reusePort(_, _ string, _ syscall.RawConn) error { return nil }
