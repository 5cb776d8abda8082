//go:build linux

package geodns

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// udpSockets counts the IPv4 UDP sockets bound to port, from /proc/net/udp.
func udpSockets(t *testing.T, port int) int {
	t.Helper()
	f, err := os.Open("/proc/net/udp")
	if err != nil {
		t.Skipf("no /proc/net/udp: %v", err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 1 && strings.HasSuffix(fields[1], fmt.Sprintf(":%04X", port)) {
			n++
		}
	}
	return n
}

// TestServeOneReaderPerSocket: Serve adds SO_REUSEPORT sockets on the
// address Listen bound, one per processor (at least udpWorkers), and
// queries from many client ports, which the kernel spreads over them, are
// all answered, on the batched and the single-datagram path.
func TestServeOneReaderPerSocket(t *testing.T) {
	for _, mode := range []string{"batch", "single"} {
		t.Run(mode, func(t *testing.T) {
			_, addr := startServerMode(t, testConfig(), mode)
			port := int(netip.MustParseAddrPort(addr).Port())
			// Serve opens the sockets as it starts, after startServerMode
			// returned.
			want := max(udpWorkers, runtime.GOMAXPROCS(0))
			for deadline := time.Now().Add(10 * time.Second); udpSockets(t, port) != want; {
				if time.Now().After(deadline) {
					t.Fatalf("%d UDP sockets on port %d, want %d", udpSockets(t, port), port, want)
				}
				time.Sleep(time.Millisecond)
			}
			for i := range 64 {
				r := exchange(t, "udp", addr, query("eu.id.localhost.", dns.TypeA))
				if r.Rcode != dns.RcodeSuccess || len(r.Answer) != 1 {
					t.Fatalf("query %d: %v", i, r)
				}
			}
		})
	}
}

// TestListenRefusesAddressHeldByReusePortSocket: a fixed address whose UDP
// port another server holds with SO_REUSEPORT (its TCP port free) is
// refused rather than joined, which would split that server's queries.
func TestListenRefusesAddressHeldByReusePortSocket(t *testing.T) {
	other, err := (&net.ListenConfig{Control: reusePort}).ListenPacket(context.Background(), "udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	addr := other.LocalAddr().String()
	pc, ln, err := Listen(context.Background(), addr)
	if err == nil {
		pc.Close()
		ln.Close()
		t.Fatalf("Listen(%s) joined another server's UDP socket", addr)
	}
	if !strings.Contains(err.Error(), "listen udp") {
		t.Fatalf("Listen(%s): %v, want a UDP listen error", addr, err)
	}
}
