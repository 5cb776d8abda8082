//go:build linux

package rawio

import (
	"io"
	"net"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Wrap returns c with raw-system-call reads and writes when c is a
// *net.TCPConn, else c unchanged. Everything else (deadlines, Close,
// addresses, CloseWrite) is c's own.
func Wrap(c net.Conn) net.Conn {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return c
	}
	w := &Conn{TCPConn: tc, rc: rc}
	// Bound once per connection: no allocation per call.
	w.r.run, w.r.fn = rc.Read, w.read
	w.w.run, w.w.fn = rc.Write, w.write
	return w
}

// Conn is a TCP connection whose Read and Write are raw system calls.
type Conn struct {
	*net.TCPConn
	rc   syscall.RawConn
	r, w op
}

// op is the state of one direction's call in progress; its mutex orders
// concurrent calls in that direction, as the socket's own lock would.
type op struct {
	mu  sync.Mutex
	run func(func(fd uintptr) bool) error // the RawConn's Read or Write
	fn  func(fd uintptr) bool             // c.read or c.write
	buf []byte
	n   int
	err error
}

// SyscallConn returns the connection's raw socket (the one Wrap took).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

// Read reads like net.TCPConn.Read.
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := c.do(&c.r, p)
	if err != nil && err != io.EOF {
		err = c.opError("read", err)
	}
	return n, err
}

func (c *Conn) read(fd uintptr) bool {
	o := &c.r
	for {
		r, _, e := unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(&o.buf[0])), uintptr(len(o.buf)))
		switch e {
		case 0:
			o.n = int(r)
			if o.n == 0 {
				o.err = io.EOF
			}
			return true
		case unix.EINTR:
		case unix.EAGAIN:
			return false // park until readable, then read again
		default:
			o.err = e
			return true
		}
	}
}

// Write writes all of p like net.TCPConn.Write.
func (c *Conn) Write(p []byte) (int, error) {
	n, err := c.do(&c.w, p)
	if err != nil {
		err = c.opError("write", err)
	}
	return n, err
}

func (c *Conn) write(fd uintptr) bool {
	o := &c.w
	for o.n < len(o.buf) {
		r, _, e := unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(&o.buf[o.n])), uintptr(len(o.buf)-o.n))
		switch e {
		case 0:
			o.n += int(r)
		case unix.EINTR:
		case unix.EAGAIN:
			return false // park until writable, then write the rest
		default:
			o.err = e
			return true
		}
	}
	return true
}

// do runs one read (o is c.r) or write (c.w) of p through the socket's
// raw connection, which calls o.fn until it is done and parks in between.
func (c *Conn) do(o *op, p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.buf, o.n, o.err = p, 0, nil
	err := o.run(o.fn)
	n, serr := o.n, o.err
	o.buf, o.err = nil, nil
	if err == nil {
		err = serr
	}
	return n, err
}

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// PeekNow looks at the next byte of socket fd without taking it and
// without waiting: n is 1 when data is waiting and 0 at the end of the
// stream; err is EAGAIN when there is nothing to read yet.
func PeekNow(fd uintptr) (n int, err error) {
	var b [1]byte
	for {
		r, _, e := unix.RawSyscall6(unix.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			return int(r), nil
		case unix.EINTR:
		default:
			return 0, e
		}
	}
}
