package geodns_test

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/meridian-id/meridian/geodns"
	"github.com/miekg/dns"
)

// A resolver asks for the global host on behalf of a client in
// 192.0.2.0/24, which is routed to eu. The eu primary is down and its DR
// site is up, so the answer is the DR address, with an ECS scope of /24.
func ExampleZone_Answer() {
	a := netip.MustParseAddr
	zone, err := geodns.NewZone(geodns.Config{
		Zone:        "id.localhost.",
		GlobalHost:  "id.localhost.",
		NameServers: []geodns.NameServer{{Name: "ns1.id.localhost.", Addrs: []netip.Addr{a("127.0.0.2")}}},
		Regions: []geodns.Region{
			{ID: "eu", Host: geodns.Host{Name: "eu.id.localhost.", Addrs: []netip.Addr{a("127.0.0.11")}},
				DR: &geodns.Host{Name: "eu-dr.id.localhost.", Addrs: []netip.Addr{a("127.0.0.21")}}},
			{ID: "us", Host: geodns.Host{Name: "us.id.localhost.", Addrs: []netip.Addr{a("127.0.0.12")}},
				Proximity: []string{"eu"}},
		},
		Subnets:       []geodns.SubnetRoute{{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Region: "eu"}},
		DefaultRegion: "us",
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	q := new(dns.Msg)
	q.SetQuestion("id.localhost.", dns.TypeA)
	q.SetEdns0(1232, false)
	q.IsEdns0().Option = []dns.EDNS0{&dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1,
		SourceNetmask: 24, Address: net.ParseIP("192.0.2.0").To4()}}
	raw, _ := q.Pack()
	req, err := geodns.ParseRequest(raw)
	if err != nil {
		fmt.Println(err)
		return
	}

	health := geodns.NewSnapshot(geodns.Target{Region: "eu"}) // eu primary down
	reply := zone.Answer(&geodns.Query{Request: req, Source: a("127.0.0.1")}, health)
	fmt.Println(dns.RcodeToString[reply.Rcode], "aa:", reply.Authoritative)
	for _, rr := range reply.Answer {
		fmt.Println(rr)
	}
	fmt.Println("ECS:", reply.IsEdns0().Option[0])
	// Output:
	// NOERROR aa: true
	// id.localhost.	30	IN	A	127.0.0.21
	// ECS: 192.0.2.0/24/24
}
