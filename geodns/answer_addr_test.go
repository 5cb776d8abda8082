package geodns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

// TestAnswerEveryAddress is the pure decision with per-address health and
// the failover latch. eu's primary has 127.0.0.51 and .52, its DR site
// 127.0.0.53 and .54; us's primary 127.0.0.12. The client (ECS
// 192.0.2.0/24) is routed to eu.
func TestAnswerEveryAddress(t *testing.T) {
	a := netip.MustParseAddr
	cfg := testConfig()
	cfg.Regions[0].Host.Addrs = []netip.Addr{a("127.0.0.51"), a("127.0.0.52"), a("fd00::51")}
	cfg.Regions[0].DR.Addrs = []netip.Addr{a("127.0.0.53"), a("127.0.0.54")}
	z := mustZone(t, cfg)
	p51, p52, p6 := euUp.At(a("127.0.0.51")), euUp.At(a("127.0.0.52")), euUp.At(a("fd00::51"))
	d53, d54 := euDR.At(a("127.0.0.53")), euDR.At(a("127.0.0.54"))

	tests := []struct {
		name       string
		down       []Target
		failedOver bool // eu latched to its DR site
		qtype      uint16
		host       []string // eu.id.localhost
		global     []string // id.localhost for an eu client
		drHost     []string // eu-dr.id.localhost
	}{
		{name: "all up", host: []string{"127.0.0.51", "127.0.0.52"}, global: []string{"127.0.0.51", "127.0.0.52"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "one primary address down: dropped, region kept", down: []Target{p51},
			host: []string{"127.0.0.52"}, global: []string{"127.0.0.52"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "the other one down", down: []Target{p52},
			host: []string{"127.0.0.51"}, global: []string{"127.0.0.51"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "IPv4 primary addresses down, IPv6 up: no failover, AAAA kept", down: []Target{p51, p52}, qtype: dns.TypeAAAA,
			host: []string{"fd00::51"}, global: []string{"fd00::51"}},
		// With only the IPv6 address up the site is up, so eu is not failed
		// over; A has no live record: the host answers all (never empty by
		// health), the global host moves on to a region with a live A.
		{name: "IPv4 primary addresses down, IPv6 up: A", down: []Target{p51, p52},
			host: []string{"127.0.0.51", "127.0.0.52"}, global: []string{"127.0.0.12"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "every primary address down: DR", down: []Target{p51, p52, p6},
			host: []string{"127.0.0.53", "127.0.0.54"}, global: []string{"127.0.0.53", "127.0.0.54"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "primary site down as a whole: DR", down: []Target{euUp},
			host: []string{"127.0.0.53", "127.0.0.54"}, global: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "primary down, one DR address down", down: []Target{euUp, d53},
			host: []string{"127.0.0.54"}, global: []string{"127.0.0.54"}, drHost: []string{"127.0.0.54"}},
		{name: "both sites down: primary answered, global moves", down: []Target{euUp, d53, d54},
			host: []string{"127.0.0.51", "127.0.0.52"}, global: []string{"127.0.0.12"}, drHost: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "failed over, primary healthy again: still DR", failedOver: true,
			host: []string{"127.0.0.53", "127.0.0.54"}, global: []string{"127.0.0.53", "127.0.0.54"}},
		{name: "failed over, one DR address down", failedOver: true, down: []Target{d54},
			host: []string{"127.0.0.53"}, global: []string{"127.0.0.53"}},
		{name: "failed over, DR down: never the primary; global moves", failedOver: true, down: []Target{euDR},
			host: []string{"127.0.0.53", "127.0.0.54"}, global: []string{"127.0.0.12"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qtype := tc.qtype
			if qtype == 0 {
				qtype = dns.TypeA
			}
			h := NewSnapshot(tc.down...)
			if tc.failedOver {
				h = h.WithFailedOver("eu")
			}
			ask := func(name string, opts ...dns.EDNS0) []string {
				q := Query{Request: parseMsg(t, query(name, qtype, opts...)), Source: loop4}
				r := z.Answer(&q, h)
				if r.Rcode != dns.RcodeSuccess {
					t.Fatalf("%s: rcode %s", name, dns.RcodeToString[r.Rcode])
				}
				return addrs(r.Answer)
			}
			if got := ask("eu.id.localhost."); !slices.Equal(got, tc.host) {
				t.Errorf("region host: %v, want %v", got, tc.host)
			}
			if got := ask("id.localhost.", ecsOpt("192.0.2.0/24")); !slices.Equal(got, tc.global) {
				t.Errorf("global host: %v, want %v", got, tc.global)
			}
			if tc.drHost != nil {
				if got := ask("eu-dr.id.localhost."); !slices.Equal(got, tc.drHost) {
					t.Errorf("DR host: %v, want %v", got, tc.drHost)
				}
			}
		})
	}
}

func TestSnapshotAddresses(t *testing.T) {
	a := netip.MustParseAddr("127.0.0.51")
	s := NewSnapshot(euUp.At(a))
	if s.Up(euUp.At(a)) || !s.Up(euUp) || !s.Up(euUp.At(netip.MustParseAddr("127.0.0.52"))) {
		t.Error("an address down must not take its site or its other addresses down")
	}
	s = NewSnapshot(euUp)
	if s.Up(euUp.At(a)) || !s.Up(euDR.At(a)) {
		t.Error("a site down takes each of its addresses down, not the DR site's")
	}
	if got := euDR.At(netip.MustParseAddr("::ffff:127.0.0.53")).String(); got != "eu/dr@127.0.0.53" {
		t.Errorf("String = %q", got)
	}
	if s.FailedOver("eu") || !s.WithFailedOver("eu").FailedOver("eu") || s.FailedOver("eu") {
		t.Error("WithFailedOver must return a copy with the latch set")
	}
	if s.WithFailedOver("eu").Up(euUp.At(a)) != s.Up(euUp.At(a)) {
		t.Error("WithFailedOver must keep the health view")
	}
}
