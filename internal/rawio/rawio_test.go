package rawio_test

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/rawio"
)

// pair returns both ends of a loopback TCP connection, each wrapped.
func pair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.FailNow()
	}
	client, server = rawio.Wrap(c), rawio.Wrap(s)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// TestLargeWrite writes more than the socket buffers hold, so the writer
// waits for the reader (EAGAIN, then the poller) and every byte arrives in
// order.
func TestLargeWrite(t *testing.T) {
	c, s := pair(t)
	want := make([]byte, 16<<20)
	if _, err := rand.Read(want); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		n, err := c.Write(want)
		if err == nil && n != len(want) {
			err = io.ErrShortWrite
		}
		errc <- errors.Join(err, c.(interface{ CloseWrite() error }).CloseWrite())
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(want))
	}
}

func TestReadEOF(t *testing.T) {
	c, s := pair(t)
	if _, err := c.Write([]byte("last")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "last" {
		t.Fatalf("ReadAll = %q, %v; want \"last\", nil", got, err)
	}
	if n, err := s.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("Read after EOF = %d, %v; want 0, io.EOF", n, err)
	}
}

// TestReadDeadline: a read with nothing to read ends at the deadline with
// a timeout error, as net.TCPConn's does.
func TestReadDeadline(t *testing.T) {
	_, s := pair(t)
	if err := s.SetReadDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	_, err := s.Read(make([]byte, 8))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline = %v; want a timeout", err)
	}
}

// TestCloseUnblocksRead: closing the connection ends a read waiting in the
// poller with net.ErrClosed.
func TestCloseUnblocksRead(t *testing.T) {
	_, s := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read on a closed connection = %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still blocked after Close")
	}
}

// TestWriteAfterPeerReset: writing to a connection the peer reset fails
// with an *net.OpError, not silently.
func TestWriteAfterPeerReset(t *testing.T) {
	c, s := pair(t)
	if err := s.(interface{ SetLinger(int) error }).SetLinger(0); err != nil {
		t.Fatal(err)
	}
	s.Close() // RST
	deadline := time.Now().Add(5 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		_, err = c.Write([]byte("x"))
		time.Sleep(time.Millisecond)
	}
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "write" {
		t.Fatalf("Write to a reset connection = %v; want a write *net.OpError", err)
	}
}

// TestWrapOther: a connection that is not TCP is returned as it is.
func TestWrapOther(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if rawio.Wrap(a) != a {
		t.Fatal("Wrap changed a net.Pipe connection")
	}
}

// TestPeekNow: nothing waiting is EAGAIN, a waiting byte is seen and still
// read afterwards, and the peer's close is n == 0 without an error.
func TestPeekNow(t *testing.T) {
	c, s := pair(t)
	peek := func() (int, error) {
		rc, err := s.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var perr error
		if err := rc.Control(func(fd uintptr) { n, perr = rawio.PeekNow(fd) }); err != nil {
			t.Fatal(err)
		}
		return n, perr
	}
	if n, err := peek(); n != 0 || !errors.Is(err, syscall.EAGAIN) {
		t.Fatalf("PeekNow on a quiet connection = %d, %v; want 0, EAGAIN", n, err)
	}
	if _, err := c.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { n, _ := peek(); return n == 1 })
	b := make([]byte, 1)
	if n, err := s.Read(b); n != 1 || err != nil || b[0] != 'y' {
		t.Fatalf("Read after PeekNow = %d %q, %v; want the byte peeked at", n, b[:n], err)
	}
	c.Close()
	waitFor(t, func() bool { n, err := peek(); return n == 0 && err == nil })
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 5 s")
}
