package geodns

import (
	"bytes"
	"net"
	"net/netip"
	"testing"

	"github.com/miekg/dns"
)

// FuzzParseECS checks the ECS option parser: it never panics, and whatever
// it accepts is canonical, so encoding it again gives back the very input.
func FuzzParseECS(f *testing.F) {
	for _, seed := range [][]byte{
		{0, 1, 24, 0, 192, 0, 2},
		{0, 1, 0, 0},
		{0, 1, 32, 0, 192, 0, 2, 1},
		{0, 1, 20, 0, 10, 1, 0x20},
		{0, 2, 56, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0xe0, 1},
		{0, 2, 128, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
		{0, 0, 0, 0},
		{0, 3, 24, 0, 192, 0, 2},
		{0, 1, 33, 0, 192, 0, 2, 0, 0},
		{0, 1, 23, 0, 192, 0, 3},
		{0, 1, 24, 0, 192, 0},
		{0, 1, 24, 0, 192, 0, 2, 0},
		{0, 1},
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseECS(data)
		if err != nil {
			return
		}
		if c.Family != 1 && c.Family != 2 {
			t.Fatalf("accepted family %d", c.Family)
		}
		if c.Addr.Is4() != (c.Family == 1) {
			t.Fatalf("family %d with address %v", c.Family, c.Addr)
		}
		if p := c.Prefix(); !p.IsValid() || p.Masked() != p {
			t.Fatalf("prefix %v has bits past the source length", p)
		}
		opt := &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: c.Family, SourceNetmask: c.SourcePrefix,
			SourceScope: c.ScopePrefix, Address: net.IP(c.Addr.AsSlice())}
		m := new(dns.Msg)
		m.SetQuestion("id.localhost.", dns.TypeA)
		m.SetEdns0(1232, false)
		m.IsEdns0().Option = []dns.EDNS0{opt}
		raw, err := m.Pack()
		if err != nil {
			t.Fatalf("cannot encode accepted option %+v: %v", c, err)
		}
		// The option payload is the tail of the packed message.
		if !bytes.HasSuffix(raw, data) || len(raw) < len(data)+4 {
			t.Fatalf("re-encoded option differs from input %x", data)
		}
	})
}

// FuzzParseRequest feeds whole messages to the parser and the answer: no
// panic, every reply packs and fits the client's limit, and where miekg/dns
// also accepts the message, both read the same question and EDNS fields.
func FuzzParseRequest(f *testing.F) {
	seeds := []*dns.Msg{
		query("id.localhost.", dns.TypeA),
		query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24")),
		query("id.localhost.", dns.TypeAAAA, ecsOpt("2001:db8:e0::/56")),
		query("Hub.ID.localhost.", dns.TypeANY, withEDNS...),
		query("id.localhost.", dns.TypeNS, rawECS(0, 1, 22, 0, 192, 0, 2)),
		query("example.org.", dns.TypeA, rawECS(0, 9, 0, 0)),
		query("nope.id.localhost.", dns.TypeSOA, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"}),
	}
	for _, m := range seeds {
		raw, err := m.Pack()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, false)
	}
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, true)
	z := mustZone(f, bigHubConfig())
	src := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, raw []byte, tcp bool) {
		req, err := ParseRequest(raw)
		if err != nil {
			return
		}
		reply := z.Answer(&Query{Request: req, Source: src, TCP: tcp}, NewSnapshot(euUp))
		out, err := reply.Pack()
		if err != nil {
			t.Fatalf("reply does not pack: %v\n%v", err, reply)
		}
		limit := dns.MinMsgSize
		switch {
		case tcp:
			limit = dns.MaxMsgSize
		case req.EDNS:
			limit = int(min(max(req.UDPSize, dns.MinMsgSize), DefaultMaxUDPSize))
		}
		if len(out) > limit {
			t.Fatalf("reply of %d octets exceeds %d", len(out), limit)
		}
		if reply.Id != req.ID || !reply.Response || reply.RecursionAvailable {
			t.Fatalf("bad reply header: %+v", reply.MsgHdr)
		}

		var m dns.Msg
		if req.Malformed != nil || m.Unpack(raw) != nil {
			return
		}
		if len(m.Question) != 1 || m.Question[0] != req.Question {
			t.Fatalf("question: miekg %v, ours %v", m.Question, req.Question)
		}
		opt := m.IsEdns0()
		if (opt != nil) != req.EDNS {
			t.Fatalf("EDNS: miekg %v, ours %v", opt != nil, req.EDNS)
		}
		if opt == nil {
			return
		}
		if opt.UDPSize() != req.UDPSize || opt.Version() != req.EDNSVersion || opt.Do() != req.DNSSECOK {
			t.Fatalf("OPT fields differ: miekg %v, ours %+v", opt, req)
		}
		var ecs *dns.EDNS0_SUBNET
		for _, o := range opt.Option {
			if e, ok := o.(*dns.EDNS0_SUBNET); ok {
				ecs = e
			}
		}
		if (ecs != nil) != req.HasECS {
			t.Fatalf("ECS: miekg %v, ours %v", ecs, req.HasECS)
		}
		if ecs != nil {
			a, _ := netip.AddrFromSlice(ecs.Address)
			if ecs.Family != req.ECS.Family || ecs.SourceNetmask != req.ECS.SourcePrefix || a.Unmap() != req.ECS.Addr.Unmap() {
				t.Fatalf("ECS differs: miekg %v, ours %+v", ecs, req.ECS)
			}
		}
	})
}
