//go:build linux

package geodns

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort marks a socket SO_REUSEPORT before it is bound, so that more
// UDP sockets can bind the same address and the kernel spreads datagrams
// over them by the client's address and port (see [Server.Serve]). Only
// sockets of the same user can join.
func reusePort(_, _ string, c syscall.RawConn) error {
	var serr error
	if err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	}); err != nil {
		return err
	}
	return serr
}
