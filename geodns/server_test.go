package geodns

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestServerQueries(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode, func(t *testing.T) { testServerQueries(t, mode) })
	}
}

func testServerQueries(t *testing.T, mode string) {
	_, addr := startServerMode(t, testConfig(), mode)
	tests := []struct {
		name      string
		msg       *dns.Msg
		rcode     int
		aa        bool
		want      []string
		soaAuth   bool
		wantScope int // -1: no ECS expected in the reply
	}{
		{"ECS steers to eu", query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24")), dns.RcodeSuccess, true, []string{"127.0.0.11"}, false, 24},
		{"ECS steers to us", query("id.localhost.", dns.TypeA, ecsOpt("198.51.100.0/24")), dns.RcodeSuccess, true, []string{"127.0.0.12"}, false, 24},
		{"ECS longest prefix", query("id.localhost.", dns.TypeA, ecsOpt("10.1.9.0/24")), dns.RcodeSuccess, true, []string{"127.0.0.11"}, false, 16},
		{"ECS IPv6", query("id.localhost.", dns.TypeAAAA, ecsOpt("2001:db8:e0::/56")), dns.RcodeSuccess, true, []string{"fd00::11"}, false, 48},
		{"source 127.0.0.1 steers to ap", query("id.localhost.", dns.TypeA), dns.RcodeSuccess, true, []string{"127.0.0.13"}, false, -1},
		{"source with EDNS, no ECS", query("id.localhost.", dns.TypeA, withEDNS...), dns.RcodeSuccess, true, []string{"127.0.0.13"}, false, -1},
		{"region host", query("us.id.localhost.", dns.TypeA), dns.RcodeSuccess, true, []string{"127.0.0.12"}, false, -1},
		{"hub", query("hub.id.localhost.", dns.TypeA), dns.RcodeSuccess, true, []string{"127.0.0.10"}, false, -1},
		{"unknown name: NXDOMAIN + SOA", query("nope.id.localhost.", dns.TypeA), dns.RcodeNameError, true, nil, true, -1},
		{"NODATA", query("eu.id.localhost.", dns.TypeTXT), dns.RcodeSuccess, true, nil, true, -1},
		{"out of zone: REFUSED", query("example.org.", dns.TypeA), dns.RcodeRefused, false, nil, false, -1},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				r := exchange(t, network, addr, tc.msg.Copy())
				if r.Rcode != tc.rcode || r.Authoritative != tc.aa || r.RecursionAvailable || r.Truncated {
					t.Fatalf("rcode %s aa=%v ra=%v tc=%v, want %s aa=%v", dns.RcodeToString[r.Rcode],
						r.Authoritative, r.RecursionAvailable, r.Truncated, dns.RcodeToString[tc.rcode], tc.aa)
				}
				if got := addrs(r.Answer); !slices.Equal(got, tc.want) {
					t.Errorf("answer %v, want %v", got, tc.want)
				}
				if hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA; hasSOA != tc.soaAuth {
					t.Errorf("authority %v, want SOA %v", r.Ns, tc.soaAuth)
				}
				e := replyECS(r)
				switch {
				case tc.wantScope < 0 && e != nil:
					t.Errorf("unexpected ECS %v", e)
				case tc.wantScope >= 0 && e == nil:
					t.Errorf("no ECS in reply")
				case e != nil && int(e.SourceScope) != tc.wantScope:
					t.Errorf("ECS scope %d, want %d", e.SourceScope, tc.wantScope)
				}
			})
		}
	}
}

// rawExchange sends raw bytes and returns the raw reply, over UDP or TCP.
func rawExchange(t *testing.T, network, addr string, raw []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if network == "tcp" {
		raw = append(binary.BigEndian.AppendUint16(nil, uint16(len(raw))), raw...)
	}
	if _, err := c.Write(raw); err != nil {
		t.Fatal(err)
	}
	if network == "tcp" {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		return buf
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestServerMalformed(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode, func(t *testing.T) { testServerMalformed(t, mode) })
	}
}

func testServerMalformed(t *testing.T, mode string) {
	_, addr := startServerMode(t, testConfig(), mode)
	tests := []struct {
		name string
		opts []dns.EDNS0
	}{
		{"bad family", []dns.EDNS0{rawECS(0, 7, 24, 0, 192, 0, 2)}},
		{"source prefix > 32", []dns.EDNS0{rawECS(0, 1, 40, 0, 192, 0, 2, 1, 0)}},
		{"bits past the prefix", []dns.EDNS0{rawECS(0, 1, 22, 0, 192, 0, 2)}},
		{"wrong length", []dns.EDNS0{rawECS(0, 1, 8, 0, 192, 0, 2, 0)}},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				m := query("id.localhost.", dns.TypeA, tc.opts...)
				raw, err := m.Pack()
				if err != nil {
					t.Fatal(err)
				}
				var r dns.Msg
				if err := r.Unpack(rawExchange(t, network, addr, raw)); err != nil {
					t.Fatalf("unpack reply: %v", err)
				}
				if r.Id != m.Id || r.Rcode != dns.RcodeFormatError || len(r.Answer) != 0 {
					t.Fatalf("id %d rcode %s answers %d, want id %d FORMERR none", r.Id, dns.RcodeToString[r.Rcode], len(r.Answer), m.Id)
				}
			})
		}
	}

	// Responses, runts and oversized datagrams get no reply at all: the
	// next reply on the socket is the one to the valid query sent after
	// them.
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	valid := query("eu.id.localhost.", dns.TypeA)
	resp := valid.Copy()
	resp.Response = true
	resp.Id = valid.Id + 1
	huge := valid.Copy() // oversized: a 5000-octet padding option
	huge.Id = valid.Id + 2
	huge.SetEdns0(1232, false)
	huge.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_PADDING{Padding: make([]byte, 5000)}}
	for _, m := range []*dns.Msg{resp, huge, valid} {
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		if m == resp {
			if _, err := c.Write([]byte{1, 2, 3}); err != nil {
				t.Fatal(err)
			}
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	var r dns.Msg
	if err := r.Unpack(buf[:n]); err != nil || r.Id != valid.Id {
		t.Fatalf("first reply id %d (err %v), want %d: a response, runt or oversized query was answered", r.Id, err, valid.Id)
	}
}

func TestServerTruncation(t *testing.T) {
	for _, mode := range udpModes {
		t.Run(mode, func(t *testing.T) { testServerTruncation(t, mode) })
	}
}

func testServerTruncation(t *testing.T, mode string) {
	_, addr := startServerMode(t, bigHubConfig(), mode)
	m := query("hub.id.localhost.", dns.TypeA)
	r := exchange(t, "udp", addr, m.Copy())
	if !r.Truncated || len(r.Answer) >= 60 {
		t.Fatalf("UDP without EDNS: tc=%v answers=%d, want TC and fewer than 60", r.Truncated, len(r.Answer))
	}
	raw, _ := m.Pack()
	if n := len(rawExchange(t, "udp", addr, raw)); n > 512 {
		t.Fatalf("UDP reply %d octets > 512", n)
	}
	e := query("hub.id.localhost.", dns.TypeA, withEDNS...)
	if r := exchange(t, "udp", addr, e); r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("UDP with EDNS 1232: tc=%v answers=%d, want all 60", r.Truncated, len(r.Answer))
	}
	if r := exchange(t, "tcp", addr, m.Copy()); r.Truncated || len(r.Answer) != 60 {
		t.Fatalf("TCP: tc=%v answers=%d, want all 60", r.Truncated, len(r.Answer))
	}
}

func TestServerRateLimit(t *testing.T) {
	cfg := testConfig()
	// 0.01/s: no token comes back during the test.
	cfg.RateLimit = RateLimitConfig{ResponsesPerSecond: 0.01, Burst: 2, Slip: 1}
	_, addr := startServer(t, cfg)
	m := query("eu.id.localhost.", dns.TypeA)
	for i := range 2 {
		if r := exchange(t, "udp", addr, m.Copy()); r.Truncated || len(r.Answer) != 1 {
			t.Fatalf("query %d within burst: tc=%v answers=%d", i, r.Truncated, len(r.Answer))
		}
	}
	r := exchange(t, "udp", addr, m.Copy())
	if !r.Truncated || len(r.Answer) != 0 || len(r.Question) != 1 {
		t.Fatalf("over the limit: tc=%v answers=%d, want an empty TC=1 slip", r.Truncated, len(r.Answer))
	}
	// The client retries over TCP, which is never limited.
	if r := exchange(t, "tcp", addr, m.Copy()); r.Truncated || len(r.Answer) != 1 {
		t.Fatalf("TCP retry: tc=%v answers=%d", r.Truncated, len(r.Answer))
	}
}

func TestServerMetrics(t *testing.T) {
	meter := newRecMeter()
	cfg := testConfig()
	cfg.Health.Interval = time.Hour
	s, err := New(cfg, nil, meter)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pc, ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	addr := pc.LocalAddr().String()

	exchange(t, "udp", addr, query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24")))
	exchange(t, "udp", addr, query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24")))
	exchange(t, "tcp", addr, query("id.localhost.", dns.TypeA))
	exchange(t, "udp", addr, query("nope.id.localhost.", dns.TypeA))
	exchange(t, "udp", addr, query("example.org.", dns.TypeA))
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := meter.observe()
	for key, want := range map[string]int64{
		"geodns.queries{rcode=NOERROR,region=eu,transport=udp}":    2,
		"geodns.queries{rcode=NOERROR,region=ap,transport=tcp}":    1,
		"geodns.queries{rcode=NXDOMAIN,region=none,transport=udp}": 1,
		"geodns.queries{rcode=REFUSED,region=none,transport=udp}":  1,
	} {
		if got[key] != want {
			t.Errorf("%s = %d, want %d", key, got[key], want)
		}
	}
	// Only cells that counted something are reported.
	n := 0
	for key := range got {
		if strings.HasPrefix(key, "geodns.queries{") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d geodns.queries series reported, want 4: %v", n, got)
	}
}

func TestServerShutdownClosesIdleTCP(t *testing.T) {
	s, err := New(testConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	pc, ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	// An idle TCP client that has completed one query.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	conn := &dns.Conn{Conn: c}
	if err := conn.WriteMsg(query("eu.id.localhost.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(tcpIdleTimeout / 2):
		t.Fatal("Serve waited for the idle TCP connection instead of closing it")
	}
	t.Logf("shutdown took %v", time.Since(start))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection still open after shutdown")
	}
}

func TestListen(t *testing.T) {
	ctx := context.Background()
	pc, ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	defer ln.Close()
	up := pc.LocalAddr().(*net.UDPAddr).Port
	tp := ln.Addr().(*net.TCPAddr).Port
	if up != tp || up == 0 {
		t.Fatalf("udp port %d, tcp port %d: want the same non-zero port", up, tp)
	}
	if pc2, ln2, err := Listen(ctx, "localhost:0"); err != nil {
		t.Errorf("Listen(localhost:0): %v", err)
	} else {
		u, l := pc2.LocalAddr().(*net.UDPAddr), ln2.Addr().(*net.TCPAddr)
		if !u.IP.Equal(l.IP) || u.Port != l.Port {
			t.Errorf("localhost: udp %v, tcp %v", u, l)
		}
		_ = pc2.Close()
		_ = ln2.Close()
	}
	if _, _, err := Listen(ctx, "127.0.0.1"); err == nil {
		t.Error("address without port accepted")
	}
	// The port is taken now: a second Listen on it fails cleanly.
	if _, _, err := Listen(ctx, "127.0.0.1:"+strconv.Itoa(up)); err == nil {
		t.Error("Listen on a busy port succeeded")
	}

	s, err := New(testConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ctx, nil, nil); err == nil {
		t.Error("Serve without listeners succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.ListenAndServe(cctx, "127.0.0.1:0"); err == nil {
		// A cancelled context may fail the listen or return at once;
		// both are fine, hanging is not.
		t.Log("ListenAndServe with a cancelled context returned nil")
	}
}

func TestServerIPv6Source(t *testing.T) {
	s, err := New(testConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pc, ln, err := Listen(ctx, "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, ln) }()
	// ::1 matches no IPv6 route: the default region (us) answers.
	r := exchange(t, "udp", pc.LocalAddr().String(), query("id.localhost.", dns.TypeA))
	if got := addrs(r.Answer); !slices.Equal(got, []string{"127.0.0.12"}) {
		t.Errorf("answer %v, want the default region", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
