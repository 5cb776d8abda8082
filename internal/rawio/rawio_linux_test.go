package rawio_test

import (
	"io"
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

// TestNoAllocations: a write and the read of its bytes allocate nothing
// (the hop makes several of each per call).
func TestNoAllocations(t *testing.T) {
	c, s := pair(t)
	out, in := []byte("ping"), make([]byte, 4)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := c.Write(out); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, in); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per write and read; want 0", allocs)
	}
}
