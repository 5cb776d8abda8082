//go:build !linux

package rawio

import (
	"net"
	"syscall"
)

// Wrap returns c: raw system calls are used on Linux only.
func Wrap(c net.Conn) net.Conn { return c }

// PeekNow looks at the next byte of socket fd without taking it and
// without waiting: n is 1 when data is waiting and 0 at the end of the
// stream; err is EAGAIN when there is nothing to read yet.
func PeekNow(fd uintptr) (n int, err error) {
	var b [1]byte
	n, _, err = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n, err
}
