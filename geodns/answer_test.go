package geodns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/miekg/dns"
)

var (
	euUp   = Target{Region: "eu"}
	euDR   = Target{Region: "eu", DR: true}
	usUp   = Target{Region: "us"}
	usDR   = Target{Region: "us", DR: true}
	apUp   = Target{Region: "ap"}
	loop4  = netip.MustParseAddr("127.0.0.1")
	noAddr = netip.Addr{}
)

func TestAnswerSteering(t *testing.T) {
	z := mustZone(t, testConfig())
	tests := []struct {
		name      string
		qtype     uint16
		ecs       string // ECS source prefix, "" for none
		src       netip.Addr
		down      []Target
		want      []string
		wantScope int // checked when ecs != ""
		region    string
	}{
		{name: "ecs eu /24", ecs: "192.0.2.0/24", src: loop4, want: []string{"127.0.0.11"}, wantScope: 24, region: "eu"},
		{name: "ecs /32 is cut to /24", ecs: "192.0.2.77/32", src: loop4, want: []string{"127.0.0.11"}, wantScope: 24, region: "eu"},
		{name: "ecs us", ecs: "198.51.100.0/24", src: loop4, want: []string{"127.0.0.12"}, wantScope: 24, region: "us"},
		{name: "ecs ap", ecs: "203.0.113.0/24", src: loop4, want: []string{"127.0.0.13"}, wantScope: 24, region: "ap"},
		{name: "longest prefix wins", ecs: "10.1.2.0/24", src: loop4, want: []string{"127.0.0.11"}, wantScope: 16, region: "eu"},
		// 10.2/24 takes 10/8 (us) but 10.1/16 (eu) lies inside 10/8: the
		// answer only holds for 10.2.0.0/15, not the whole /8.
		{name: "shorter prefix, honest scope", ecs: "10.2.0.0/24", src: loop4, want: []string{"127.0.0.12"}, wantScope: 15, region: "us"},
		// A /12 source cannot tell 10.1/16 from the rest of 10/8: the scope
		// says 16 bits would be needed.
		{name: "source shorter than a route", ecs: "10.0.0.0/12", src: loop4, want: []string{"127.0.0.12"}, wantScope: 16, region: "us"},
		// No route: default region; 128.0.0.0/2 holds no route at all.
		{name: "no match uses default", ecs: "172.16.0.0/24", src: loop4, want: []string{"127.0.0.12"}, wantScope: 2, region: "us"},
		{name: "ecs v6 /56", qtype: dns.TypeAAAA, ecs: "2001:db8:e0:100::/56", src: loop4, want: []string{"fd00::11"}, wantScope: 48, region: "eu"},
		{name: "ecs v6 /64 cut to /56", qtype: dns.TypeAAAA, ecs: "2001:db8:1:2::/64", src: loop4, want: []string{"fd00::12"}, wantScope: 41, region: "us"},
		{name: "ecs /0 steers by source, scope 0", ecs: "0.0.0.0/0", src: netip.MustParseAddr("192.0.2.9"), want: []string{"127.0.0.11"}, wantScope: 0, region: "eu"},
		{name: "source address eu", src: netip.MustParseAddr("192.0.2.200"), want: []string{"127.0.0.11"}, region: "eu"},
		{name: "source loopback is ap", src: loop4, want: []string{"127.0.0.13"}, region: "ap"},
		{name: "source v4-mapped", src: netip.MustParseAddr("::ffff:198.51.100.1"), want: []string{"127.0.0.12"}, region: "us"},
		{name: "source v6 unmatched uses default", src: netip.MustParseAddr("::1"), want: []string{"127.0.0.12"}, region: "us"},
		{name: "no source at all uses default", src: noAddr, want: []string{"127.0.0.12"}, region: "us"},

		// Health.
		{name: "primary down, DR up: DR", ecs: "192.0.2.0/24", src: loop4, down: []Target{euUp}, want: []string{"127.0.0.21"}, wantScope: 24, region: "eu"},
		{name: "region down: proximity", ecs: "192.0.2.0/24", src: loop4, down: []Target{euUp, euDR}, want: []string{"127.0.0.12"}, wantScope: 24, region: "us"},
		{name: "proximity primary down: its DR", ecs: "192.0.2.0/24", src: loop4, down: []Target{euUp, euDR, usUp}, want: []string{"127.0.0.22"}, wantScope: 24, region: "us"},
		{name: "second proximity", ecs: "192.0.2.0/24", src: loop4, down: []Target{euUp, euDR, usUp, usDR}, want: []string{"127.0.0.13"}, wantScope: 24, region: "ap"},
		{name: "all down: matched region anyway", ecs: "192.0.2.0/24", src: loop4, down: []Target{euUp, euDR, usUp, usDR, apUp}, want: []string{"127.0.0.11"}, wantScope: 24, region: "eu"},
		{name: "region without DR down", ecs: "203.0.113.0/24", src: loop4, down: []Target{apUp}, want: []string{"127.0.0.12"}, wantScope: 24, region: "us"},
		{name: "default down: default's proximity", ecs: "172.16.0.0/24", src: loop4, down: []Target{usUp, usDR}, want: []string{"127.0.0.11"}, wantScope: 2, region: "eu"},
		{name: "unrelated region down", ecs: "192.0.2.0/24", src: loop4, down: []Target{apUp, usUp}, want: []string{"127.0.0.11"}, wantScope: 24, region: "eu"},
		// ap has no IPv6: an AAAA query goes to the nearest region that has.
		{name: "AAAA skips a region without IPv6", qtype: dns.TypeAAAA, ecs: "203.0.113.0/24", src: loop4, want: []string{"fd00::12"}, wantScope: 24, region: "us"},
		// us DR has no IPv6 either.
		{name: "AAAA skips a DR without IPv6", qtype: dns.TypeAAAA, ecs: "198.51.100.0/24", src: loop4, down: []Target{usUp}, want: []string{"fd00::11"}, wantScope: 24, region: "eu"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			qtype := tc.qtype
			if qtype == 0 {
				qtype = dns.TypeA
			}
			var m *dns.Msg
			if tc.ecs != "" {
				m = query("id.localhost.", qtype, ecsOpt(tc.ecs))
			} else {
				m = query("id.localhost.", qtype)
			}
			q := Query{Request: parseMsg(t, m), Source: tc.src}
			r, region := z.answer(&q, NewSnapshot(tc.down...))
			if r.Rcode != dns.RcodeSuccess || !r.Authoritative || r.RecursionAvailable {
				t.Fatalf("rcode %s aa=%v ra=%v, want NOERROR aa ra=false", dns.RcodeToString[r.Rcode], r.Authoritative, r.RecursionAvailable)
			}
			if got := addrs(r.Answer); !slices.Equal(got, tc.want) {
				t.Errorf("answer %v, want %v", got, tc.want)
			}
			if region < 0 || z.regions[region].id != tc.region {
				t.Errorf("region index %d, want %s", region, tc.region)
			}
			e := replyECS(r)
			if tc.ecs == "" {
				if e != nil {
					t.Errorf("reply has ECS %v, query had none", e)
				}
				return
			}
			if e == nil {
				t.Fatalf("reply has no ECS option")
			}
			p := netip.MustParsePrefix(tc.ecs)
			if int(e.SourceNetmask) != p.Bits() || int(e.SourceScope) != tc.wantScope {
				t.Errorf("ECS source/scope %d/%d, want %d/%d", e.SourceNetmask, e.SourceScope, p.Bits(), tc.wantScope)
			}
			if got, _ := netip.AddrFromSlice(e.Address); got.Unmap() != p.Addr() {
				t.Errorf("ECS address %v, want %v echoed", e.Address, p.Addr())
			}
		})
	}
}

func TestAnswerNames(t *testing.T) {
	z := mustZone(t, testConfig())
	type want struct {
		rcode   int
		aa      bool
		answer  []string // addresses, or record types for non-address answers
		soaAuth bool
		extra   []string
	}
	tests := []struct {
		name  string
		qname string
		qtype uint16
		down  []Target
		want  want
	}{
		{"region host", "eu.id.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.11"}}},
		{"region host AAAA", "eu.id.localhost.", dns.TypeAAAA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"fd00::11"}}},
		{"region host, primary down: DR", "eu.id.localhost.", dns.TypeA, []Target{euUp}, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.21"}}},
		{"region host, both down: primary", "eu.id.localhost.", dns.TypeA, []Target{euUp, euDR}, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.11"}}},
		{"region host, DR down only", "eu.id.localhost.", dns.TypeA, []Target{euDR}, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.11"}}},
		{"region without DR, down", "ap.id.localhost.", dns.TypeA, []Target{apUp}, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.13"}}},
		{"DR AAAA missing: NODATA", "us.id.localhost.", dns.TypeAAAA, []Target{usUp}, want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{"DR host", "eu-dr.id.localhost.", dns.TypeA, []Target{euDR}, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.21"}}},
		{"hub", "hub.id.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.10"}}},
		{"name server", "a.ns.id.localhost.", dns.TypeAAAA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"fd00::2"}}},
		{"mixed case", "EU.Id.LocalHost.", dns.TypeA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.11"}}},
		{"apex SOA", "id.localhost.", dns.TypeSOA, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"SOA"}}},
		{"apex NS with glue", "id.localhost.", dns.TypeNS, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"NS", "NS"}, extra: []string{"127.0.0.2", "fd00::2"}}},
		{"apex ANY", "id.localhost.", dns.TypeANY, nil, want{rcode: dns.RcodeSuccess, aa: true, answer: []string{"127.0.0.13", "fd00::12", "SOA", "NS", "NS"}, extra: []string{"127.0.0.2", "fd00::2"}}},
		{"NODATA", "eu.id.localhost.", dns.TypeMX, nil, want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{"NODATA TXT at apex", "id.localhost.", dns.TypeTXT, nil, want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{"empty non-terminal: NODATA", "ns.id.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeSuccess, aa: true, soaAuth: true}},
		{"unknown name: NXDOMAIN", "nope.id.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{"below a host: NXDOMAIN", "x.eu.id.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeNameError, aa: true, soaAuth: true}},
		{"out of zone: REFUSED", "example.com.", dns.TypeA, nil, want{rcode: dns.RcodeRefused}},
		{"parent of zone: REFUSED", "localhost.", dns.TypeA, nil, want{rcode: dns.RcodeRefused}},
		{"suffix but not a label: REFUSED", "xid.localhost.", dns.TypeA, nil, want{rcode: dns.RcodeRefused}},
		{"escaped dot: REFUSED", `x\.id.localhost.`, dns.TypeA, nil, want{rcode: dns.RcodeRefused}},
		{"out-of-zone name server: REFUSED", "ns.example.net.", dns.TypeA, nil, want{rcode: dns.RcodeRefused}},
		{"AXFR: REFUSED", "id.localhost.", dns.TypeAXFR, nil, want{rcode: dns.RcodeRefused}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := Query{Request: parseMsg(t, query(tc.qname, tc.qtype)), Source: loop4}
			r := z.Answer(&q, NewSnapshot(tc.down...))
			if r.Rcode != tc.want.rcode || r.Authoritative != tc.want.aa {
				t.Fatalf("rcode %s aa=%v, want %s aa=%v", dns.RcodeToString[r.Rcode], r.Authoritative,
					dns.RcodeToString[tc.want.rcode], tc.want.aa)
			}
			if r.RecursionAvailable || !r.Response {
				t.Errorf("ra=%v qr=%v, want ra=false qr=true", r.RecursionAvailable, r.Response)
			}
			if len(r.Question) != 1 || r.Question[0].Name != tc.qname {
				t.Errorf("question %v not echoed", r.Question)
			}
			var got []string
			for _, rr := range r.Answer {
				switch rr.(type) {
				case *dns.A, *dns.AAAA:
					got = append(got, addrs([]dns.RR{rr})...)
				default:
					got = append(got, dns.TypeToString[rr.Header().Rrtype])
				}
			}
			if !slices.Equal(got, tc.want.answer) {
				t.Errorf("answer %v, want %v", got, tc.want.answer)
			}
			hasSOA := len(r.Ns) == 1 && r.Ns[0].Header().Rrtype == dns.TypeSOA
			if hasSOA != tc.want.soaAuth || (!tc.want.soaAuth && len(r.Ns) != 0) {
				t.Errorf("authority %v, want SOA=%v", r.Ns, tc.want.soaAuth)
			}
			if hasSOA && r.Ns[0].Header().Ttl != DefaultSOAMinimum {
				t.Errorf("negative SOA TTL %d, want %d", r.Ns[0].Header().Ttl, DefaultSOAMinimum)
			}
			if got := addrs(r.Extra); !slices.Equal(got, tc.want.extra) {
				t.Errorf("additional %v, want %v", got, tc.want.extra)
			}
			for _, rr := range r.Answer {
				if rr.Header().Ttl != DefaultTTL {
					t.Errorf("TTL %d, want %d: %v", rr.Header().Ttl, DefaultTTL, rr)
				}
			}
		})
	}
}

func TestAnswerHeaderCases(t *testing.T) {
	z := mustZone(t, testConfig())
	build := func(f func(*dns.Msg)) Request {
		m := query("id.localhost.", dns.TypeA)
		f(m)
		return parseMsg(t, m)
	}
	tests := []struct {
		name  string
		req   Request
		rcode int
		opt   bool
	}{
		{"NOTIFY is not implemented", build(func(m *dns.Msg) { m.Opcode = dns.OpcodeNotify }), dns.RcodeNotImplemented, false},
		{"UPDATE is not implemented", build(func(m *dns.Msg) { m.Opcode = dns.OpcodeUpdate }), dns.RcodeNotImplemented, false},
		{"no question", build(func(m *dns.Msg) { m.Question = nil }), dns.RcodeFormatError, false},
		{"two questions", build(func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }), dns.RcodeFormatError, false},
		{"EDNS version 1", build(func(m *dns.Msg) { m.SetEdns0(1232, false); m.IsEdns0().SetVersion(1) }), dns.RcodeBadVers, true},
		{"CHAOS class", build(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }), dns.RcodeRefused, false},
		{"class ANY is IN", build(func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassANY }), dns.RcodeSuccess, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := z.Answer(&Query{Request: tc.req, Source: loop4}, nil)
			// Round-trip through the wire so extended rcodes are real.
			raw, err := r.Pack()
			if err != nil {
				t.Fatalf("pack: %v", err)
			}
			var back dns.Msg
			if err := back.Unpack(raw); err != nil {
				t.Fatalf("unpack: %v", err)
			}
			if back.Rcode != tc.rcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[back.Rcode], dns.RcodeToString[tc.rcode])
			}
			if (back.IsEdns0() != nil) != tc.opt {
				t.Errorf("OPT present %v, want %v", back.IsEdns0() != nil, tc.opt)
			}
			if back.Id != tc.req.ID || back.RecursionAvailable {
				t.Errorf("id %d ra %v", back.Id, back.RecursionAvailable)
			}
			if tc.rcode != dns.RcodeSuccess && len(back.Answer) != 0 {
				t.Errorf("error reply has answers: %v", back.Answer)
			}
		})
	}
}

func TestAnswerECSValidation(t *testing.T) {
	z := mustZone(t, testConfig())
	tests := []struct {
		name    string
		opts    []dns.EDNS0
		formerr bool
	}{
		{"valid /24", []dns.EDNS0{rawECS(0, 1, 24, 0, 192, 0, 2)}, false},
		{"valid /0 no address", []dns.EDNS0{rawECS(0, 1, 0, 0)}, false},
		{"valid /20", []dns.EDNS0{rawECS(0, 1, 20, 0, 10, 1, 0x20)}, false},
		{"valid v6 /56", []dns.EDNS0{rawECS(0, 2, 56, 0, 0x20, 0x01, 0x0d, 0xb8, 0, 0xe0, 1)}, false},
		{"family 0", []dns.EDNS0{rawECS(0, 0, 0, 0)}, true},
		{"family 3", []dns.EDNS0{rawECS(0, 3, 24, 0, 192, 0, 2)}, true},
		{"v4 source /33", []dns.EDNS0{rawECS(0, 1, 33, 0, 192, 0, 2, 0, 0)}, true},
		{"v6 source /129", append([]dns.EDNS0{}, rawECS(append([]byte{0, 2, 129, 0}, make([]byte, 17)...)...)), true},
		{"scope beyond width", []dns.EDNS0{rawECS(0, 1, 24, 33, 192, 0, 2)}, true},
		{"bits past the prefix", []dns.EDNS0{rawECS(0, 1, 23, 0, 192, 0, 3)}, true},
		{"too many address octets", []dns.EDNS0{rawECS(0, 1, 24, 0, 192, 0, 2, 0)}, true},
		{"too few address octets", []dns.EDNS0{rawECS(0, 1, 24, 0, 192, 0)}, true},
		{"option shorter than 4", []dns.EDNS0{rawECS(0, 1, 24)}, true},
		{"two ECS options", []dns.EDNS0{rawECS(0, 1, 24, 0, 192, 0, 2), rawECS(0, 1, 24, 0, 192, 0, 2)}, true},
		{"other option ignored", []dns.EDNS0{&dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := parseMsg(t, query("id.localhost.", dns.TypeA, tc.opts...))
			if (req.Malformed != nil) != tc.formerr {
				t.Fatalf("Malformed = %v, want malformed %v", req.Malformed, tc.formerr)
			}
			r := z.Answer(&Query{Request: req, Source: loop4}, nil)
			wantRcode := dns.RcodeSuccess
			if tc.formerr {
				wantRcode = dns.RcodeFormatError
			}
			if r.Rcode != wantRcode {
				t.Errorf("rcode %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[wantRcode])
			}
			if tc.formerr && (len(r.Answer) != 0 || replyECS(r) != nil) {
				t.Errorf("FORMERR reply carries answers or ECS: %v", r)
			}
			if r.IsEdns0() == nil {
				t.Errorf("reply to an EDNS query has no OPT")
			}
		})
	}
}

func TestParseRequestMalformedWire(t *testing.T) {
	good, err := query("id.localhost.", dns.TypeA, withEDNS...).Pack()
	if err != nil {
		t.Fatal(err)
	}
	twoOPT := func() []byte {
		m := query("id.localhost.", dns.TypeA, withEDNS...)
		m.Extra = append(m.Extra, m.Extra[0])
		b, _ := m.Pack()
		return b
	}()
	tests := []struct {
		name      string
		raw       []byte
		noReply   bool
		malformed bool
	}{
		{"good", good, false, false},
		{"empty", nil, true, false},
		{"header only, no question", good[:12], false, true},
		{"cut in the question", good[:20], false, true},
		{"cut in the OPT record", good[:len(good)-3], false, true},
		{"response bit set", append([]byte{good[0], good[1], good[2] | 0x80}, good[3:]...), true, false},
		{"two OPT records", twoOPT, false, true},
		{"name pointer loop", []byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12, 0, 1, 0, 1}, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRequest(tc.raw)
			if (err != nil) != tc.noReply {
				t.Fatalf("err = %v, want no-reply %v", err, tc.noReply)
			}
			if err == nil && (r.Malformed != nil) != tc.malformed {
				t.Fatalf("Malformed = %v, want %v", r.Malformed, tc.malformed)
			}
		})
	}
}

func TestAnswerTruncation(t *testing.T) {
	z := mustZone(t, bigHubConfig())
	tests := []struct {
		name    string
		edns    uint16 // 0: no EDNS
		tcp     bool
		wantTC  bool
		wantAll bool
	}{
		{name: "no EDNS: 512", wantTC: true},
		{name: "EDNS 600", edns: 600, wantTC: true},
		{name: "EDNS 4096 capped at 1232 still fits", edns: 4096, wantAll: true},
		{name: "EDNS below 512 counts as 512", edns: 100, wantTC: true},
		{name: "TCP", tcp: true, wantAll: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := query("hub.id.localhost.", dns.TypeA)
			if tc.edns != 0 {
				m.SetEdns0(tc.edns, false)
			}
			r := z.Answer(&Query{Request: parseMsg(t, m), Source: loop4, TCP: tc.tcp}, nil)
			raw, err := r.Pack()
			if err != nil {
				t.Fatal(err)
			}
			limit := 512
			switch {
			case tc.tcp:
				limit = dns.MaxMsgSize
			case tc.edns != 0:
				limit = int(min(max(tc.edns, 512), DefaultMaxUDPSize))
			}
			if len(raw) > limit {
				t.Errorf("reply is %d octets, limit %d", len(raw), limit)
			}
			if r.Truncated != tc.wantTC {
				t.Errorf("TC = %v, want %v", r.Truncated, tc.wantTC)
			}
			if tc.wantAll && len(r.Answer) != 60 {
				t.Errorf("%d answers, want 60", len(r.Answer))
			}
			if tc.edns != 0 && r.IsEdns0() == nil {
				t.Errorf("OPT record lost in truncation")
			}
		})
	}
	// Truncation must not touch the zone's shared records.
	r := z.Answer(&Query{Request: parseMsg(t, query("hub.id.localhost.", dns.TypeA)), Source: loop4, TCP: true}, nil)
	if len(r.Answer) != 60 {
		t.Fatalf("after truncating replies, a TCP reply has %d answers, want 60", len(r.Answer))
	}
}

func TestHonestScope(t *testing.T) {
	routes := []route{
		{prefix: netip.MustParsePrefix("10.1.2.0/24")},
		{prefix: netip.MustParsePrefix("10.1.0.0/16")},
		{prefix: netip.MustParsePrefix("10.0.0.0/8")},
	}
	tests := []struct {
		client  string
		matched int
		want    int
	}{
		{"10.1.2.0", 24, 24},
		{"10.1.3.0", 16, 24}, // 10.1.2/24 shares 23 bits
		{"10.1.128.0", 16, 17},
		{"10.200.0.0", 8, 9},
		{"11.0.0.0", 0, 8}, // 00001011 vs 00001010: 7 shared bits
		{"200.0.0.0", 0, 1},
	}
	for _, tc := range tests {
		if got := honestScope(netip.MustParseAddr(tc.client), tc.matched, routes); got != tc.want {
			t.Errorf("honestScope(%s, %d) = %d, want %d", tc.client, tc.matched, got, tc.want)
		}
	}
}
