package rawio_test

import (
	"net"
	"testing"

	"github.com/meridian-id/meridian/internal/rawio"
)

// TestWrapTCP: on Linux a TCP connection gets the raw reads and writes the
// other tests exercise.
func TestWrapTCP(t *testing.T) {
	c, s := pair(t)
	for _, x := range []net.Conn{c, s} {
		if _, ok := x.(*rawio.Conn); !ok {
			t.Fatalf("Wrap returned %T for a TCP connection", x)
		}
	}
}
