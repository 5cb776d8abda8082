package geodns

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testConfig is the demo layout: eu, us (both with DR) and ap (no DR); the
// default region is us.
func testConfig() Config {
	a := netip.MustParseAddr
	p := netip.MustParsePrefix
	hub := Host{Name: "hub.id.localhost.", Addrs: []netip.Addr{a("127.0.0.10")}}
	return Config{
		Zone:       "id.localhost.",
		GlobalHost: "id.localhost.",
		NameServers: []NameServer{
			{Name: "a.ns.id.localhost.", Addrs: []netip.Addr{a("127.0.0.2"), a("fd00::2")}},
			{Name: "ns.example.net."},
		},
		HubHost: hub,
		Regions: []Region{
			{
				ID:        "eu",
				Host:      Host{Name: "eu.id.localhost.", Addrs: []netip.Addr{a("127.0.0.11"), a("fd00::11")}},
				DR:        &Host{Name: "eu-dr.id.localhost.", Addrs: []netip.Addr{a("127.0.0.21"), a("fd00::21")}},
				Proximity: []string{"us", "ap"},
			},
			{
				ID:        "us",
				Host:      Host{Name: "us.id.localhost.", Addrs: []netip.Addr{a("127.0.0.12"), a("fd00::12")}},
				DR:        &Host{Name: "us-dr.id.localhost.", Addrs: []netip.Addr{a("127.0.0.22")}},
				Proximity: []string{"eu", "ap"},
			},
			{
				ID:        "ap",
				Host:      Host{Name: "ap.id.localhost.", Addrs: []netip.Addr{a("127.0.0.13")}},
				Proximity: []string{"us", "eu"},
			},
		},
		Subnets: []SubnetRoute{
			{Prefix: p("192.0.2.0/24"), Region: "eu"},
			{Prefix: p("198.51.100.0/24"), Region: "us"},
			{Prefix: p("203.0.113.0/24"), Region: "ap"},
			{Prefix: p("10.0.0.0/8"), Region: "us"},
			{Prefix: p("10.1.0.0/16"), Region: "eu"},
			{Prefix: p("127.0.0.0/8"), Region: "ap"},
			{Prefix: p("2001:db8::/32"), Region: "us"},
			{Prefix: p("2001:db8:e0::/48"), Region: "eu"},
		},
		DefaultRegion: "us",
	}
}

// bigHubConfig gives the hub 60 addresses, too many for 512 octets.
func bigHubConfig() Config {
	c := testConfig()
	c.HubHost.Addrs = nil
	for i := range 60 {
		c.HubHost.Addrs = append(c.HubHost.Addrs, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}))
	}
	return c
}

func mustZone(t testing.TB, c Config) *Zone {
	t.Helper()
	z, err := NewZone(c)
	if err != nil {
		t.Fatalf("NewZone: %v", err)
	}
	return z
}

// ecsOpt builds an ECS option from a prefix such as "192.0.2.0/24".
func ecsOpt(prefix string) *dns.EDNS0_SUBNET {
	p := netip.MustParsePrefix(prefix)
	fam := uint16(1)
	if p.Addr().Is6() {
		fam = 2
	}
	return &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: fam, SourceNetmask: uint8(p.Bits()),
		Address: net.IP(p.Addr().AsSlice())}
}

// rawECS builds an ECS option with an arbitrary payload.
func rawECS(payload ...byte) *dns.EDNS0_LOCAL {
	return &dns.EDNS0_LOCAL{Code: dns.EDNS0SUBNET, Data: payload}
}

// query builds a question, with EDNS (UDP size 1232) when opts is not nil.
func query(name string, qtype uint16, opts ...dns.EDNS0) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = false
	if opts != nil {
		m.SetEdns0(1232, false)
		o := m.IsEdns0()
		for _, op := range opts {
			if op != nil {
				o.Option = append(o.Option, op)
			}
		}
	}
	return m
}

// withEDNS marks that query() should add an OPT record without options.
var withEDNS = []dns.EDNS0{nil}

// parseMsg packs m and runs it through ParseRequest, as the server does.
func parseMsg(t testing.TB, m *dns.Msg) Request {
	t.Helper()
	raw, err := m.Pack()
	if err != nil {
		t.Fatalf("pack query: %v", err)
	}
	r, err := ParseRequest(raw)
	if err != nil {
		t.Fatalf("ParseRequest: %v", err)
	}
	return r
}

// addrs lists the A/AAAA addresses of a section, in order.
func addrs(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.AAAA:
			out = append(out, rr.AAAA.String())
		}
	}
	return out
}

// replyECS returns the ECS option of a reply, or nil.
func replyECS(m *dns.Msg) *dns.EDNS0_SUBNET {
	o := m.IsEdns0()
	if o == nil {
		return nil
	}
	for _, op := range o.Option {
		if e, ok := op.(*dns.EDNS0_SUBNET); ok {
			return e
		}
	}
	return nil
}

// udpModes are the server's UDP read paths: recvmmsg batches, one datagram
// per call on a *net.UDPConn, and a plain net.PacketConn.
var udpModes = []string{"batch", "single", "generic"}

// plainPacketConn hides the *net.UDPConn behind the interface.
type plainPacketConn struct{ net.PacketConn }

// startServer serves cfg on 127.0.0.1, UDP and TCP on one port, until the
// test ends. Health checks only run when the test calls CheckOnce.
func startServer(t *testing.T, cfg Config) (*Server, string) {
	t.Helper()
	return startServerMode(t, cfg, "batch")
}

// startServerMode is startServer with a UDP path from udpModes.
func startServerMode(t *testing.T, cfg Config, mode string) (*Server, string) {
	t.Helper()
	if cfg.Health.Interval == 0 {
		cfg.Health.Interval = time.Hour
	}
	s, err := New(cfg, nil, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	s.udpBatching = mode == "batch"
	ctx, cancel := context.WithCancel(context.Background())
	pc, ln, err := Listen(ctx, "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatalf("Listen: %v", err)
	}
	var served net.PacketConn = pc
	if mode == "generic" {
		served = plainPacketConn{pc}
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, served, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
		_ = s.Close()
	})
	return s, pc.LocalAddr().String()
}

// exchange sends m over "udp" or "tcp" and returns the reply.
func exchange(t testing.TB, network, addr string, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("%s exchange %s: %v", network, m.Question[0].String(), err)
	}
	if r.Id != m.Id {
		t.Fatalf("reply id %d, want %d", r.Id, m.Id)
	}
	return r
}
