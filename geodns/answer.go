package geodns

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net"
	"net/netip"
	"slices"

	"github.com/miekg/dns"
)

// Query is one request as the server received it: the parsed message, the
// transport's source address, and whether it came over TCP (which decides
// the size limit of the reply).
type Query struct {
	Request
	Source netip.Addr
	TCP    bool
}

// Zone is a compiled [Config]: the records of the zone and the routing
// table. Its [Zone.Answer] method is a pure function of the query, the
// client's address and a health [Snapshot]; a Zone is immutable and safe for
// concurrent use.
type Zone struct {
	zone   string
	ttl    uint32
	maxUDP uint16

	names map[string]*zoneName // canonical owner name -> node
	ents  map[string]bool      // empty non-terminals (exist, hold no records)

	soaAnswer    []dns.RR // the apex SOA, TTL = TTL
	negAuthority []dns.RR // the apex SOA, TTL = min(TTL, SOA minimum) (RFC 2308)
	nsAnswer     []dns.RR
	nsGlue       []dns.RR

	regions       []regionInfo
	defaultRegion int
	v4, v6        []route // longest prefix first
}

type zoneName struct {
	apex   bool
	global bool
	region int    // index of the region this is the host of, or -1
	drOf   int    // index of the region this is the DR host of, or -1
	static *rrset // hub and name-server hosts: fixed addresses
}

// rrset holds a name's address records, with the address of each record at
// the same index, so that records of unhealthy addresses can be left out.
type rrset struct {
	a, aaaa []dns.RR
	a4, a6  []netip.Addr
}

func (s *rrset) get(qtype uint16) []dns.RR {
	switch qtype {
	case dns.TypeA:
		return s.a
	case dns.TypeAAAA:
		return s.aaaa
	}
	return nil
}

func (s *rrset) addrs(qtype uint16) []netip.Addr {
	if qtype == dns.TypeA {
		return s.a4
	}
	return s.a6
}

const (
	sitePrimary = 0
	siteDR      = 1
)

// Owners of a site's records: the region host, the global host, and the
// site's own name (the DR host; for a primary, the region host again).
const (
	ownerHost = iota
	ownerGlobal
	ownerSite
)

// siteInfo is one site of a region: its upstream name and its address
// records under each owner name.
type siteInfo struct {
	up   Target   // the site, without Addr
	sets [3]rrset // [ownerHost], [ownerGlobal], [ownerSite]
}

type regionInfo struct {
	id        string
	hasDR     bool
	sites     [2]siteInfo // [sitePrimary], [siteDR]
	fallbacks []int       // self, proximity, default, default's proximity; no duplicates
}

type route struct {
	prefix netip.Prefix
	region int
}

// NewZone validates cfg (after [Config.WithDefaults]) and compiles it.
func NewZone(cfg Config) (*Zone, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	z := &Zone{
		zone:   cfg.Zone,
		ttl:    cfg.TTL,
		maxUDP: cfg.MaxUDPSize,
		names:  map[string]*zoneName{},
		ents:   map[string]bool{},
	}
	hdr := func(name string, t uint16, ttl uint32) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: ttl}
	}
	soa := func(ttl uint32) *dns.SOA {
		return &dns.SOA{Hdr: hdr(cfg.Zone, dns.TypeSOA, ttl), Ns: cfg.SOA.MName, Mbox: cfg.SOA.RName,
			Serial: cfg.SOA.Serial, Refresh: cfg.SOA.Refresh, Retry: cfg.SOA.Retry,
			Expire: cfg.SOA.Expire, Minttl: cfg.SOA.Minimum}
	}
	z.soaAnswer = []dns.RR{soa(cfg.TTL)}
	z.negAuthority = []dns.RR{soa(min(cfg.TTL, cfg.SOA.Minimum))}
	mkset := func(owner string, addrs []netip.Addr) rrset {
		var s rrset
		for _, a := range addrs {
			a = a.Unmap()
			if a.Is4() {
				s.a = append(s.a, &dns.A{Hdr: hdr(owner, dns.TypeA, cfg.TTL), A: net.IP(a.AsSlice())})
				s.a4 = append(s.a4, a)
			} else {
				s.aaaa = append(s.aaaa, &dns.AAAA{Hdr: hdr(owner, dns.TypeAAAA, cfg.TTL), AAAA: net.IP(a.AsSlice())})
				s.a6 = append(s.a6, a)
			}
		}
		return s
	}
	get := func(name string) *zoneName {
		n := z.names[name]
		if n == nil {
			n = &zoneName{region: -1, drOf: -1}
			z.names[name] = n
		}
		return n
	}

	get(cfg.Zone).apex = true
	get(cfg.GlobalHost).global = true
	for _, ns := range cfg.NameServers {
		z.nsAnswer = append(z.nsAnswer, &dns.NS{Hdr: hdr(cfg.Zone, dns.TypeNS, cfg.TTL), Ns: ns.Name})
		if !isInZone(ns.Name, cfg.Zone) {
			continue
		}
		s := mkset(ns.Name, ns.Addrs)
		get(ns.Name).static = &s
		z.nsGlue = append(z.nsGlue, s.a...)
		z.nsGlue = append(z.nsGlue, s.aaaa...)
	}
	if cfg.HubHost.Name != "" {
		s := mkset(cfg.HubHost.Name, cfg.HubHost.Addrs)
		get(cfg.HubHost.Name).static = &s
	}

	index := map[string]int{}
	for i, r := range cfg.Regions {
		index[r.ID] = i
	}
	z.defaultRegion = index[cfg.DefaultRegion]
	z.regions = make([]regionInfo, len(cfg.Regions))
	for i, r := range cfg.Regions {
		ri := &z.regions[i]
		ri.id = r.ID
		p := &ri.sites[sitePrimary]
		p.up = Target{Region: r.ID}
		p.sets[ownerHost] = mkset(r.Host.Name, r.Host.Addrs)
		p.sets[ownerGlobal] = mkset(cfg.GlobalHost, r.Host.Addrs)
		p.sets[ownerSite] = p.sets[ownerHost]
		get(r.Host.Name).region = i
		if r.DR != nil {
			ri.hasDR = true
			d := &ri.sites[siteDR]
			d.up = Target{Region: r.ID, DR: true}
			d.sets[ownerHost] = mkset(r.Host.Name, r.DR.Addrs)
			d.sets[ownerGlobal] = mkset(cfg.GlobalHost, r.DR.Addrs)
			d.sets[ownerSite] = mkset(r.DR.Name, r.DR.Addrs)
			get(r.DR.Name).drOf = i
		}
	}
	for i, r := range cfg.Regions {
		seen := map[int]bool{}
		add := func(j int) {
			if !seen[j] {
				seen[j] = true
				z.regions[i].fallbacks = append(z.regions[i].fallbacks, j)
			}
		}
		add(i)
		for _, p := range r.Proximity {
			add(index[p])
		}
		add(z.defaultRegion)
		for _, p := range cfg.Regions[z.defaultRegion].Proximity {
			add(index[p])
		}
	}

	for _, s := range cfg.Subnets {
		rt := route{prefix: s.Prefix, region: index[s.Region]}
		if s.Prefix.Addr().Is4() {
			z.v4 = append(z.v4, rt)
		} else {
			z.v6 = append(z.v6, rt)
		}
	}
	longestFirst := func(a, b route) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) }
	slices.SortStableFunc(z.v4, longestFirst)
	slices.SortStableFunc(z.v6, longestFirst)

	// Every ancestor of an owned name, up to the apex, exists (RFC 8020):
	// it answers NODATA, not NXDOMAIN.
	for name := range z.names {
		for cur := name; cur != z.zone; {
			off, end := dns.NextLabel(cur, 0)
			if end {
				break
			}
			cur = cur[off:]
			if _, owned := z.names[cur]; !owned && cur != z.zone {
				z.ents[cur] = true
			}
		}
	}
	return z, nil
}

// Answer computes the reply to q for the given health view. It never
// recurses, never sets RA, sets AA on every answer from the zone, and fits
// the reply into the client's limit (the EDNS UDP size capped at MaxUDPSize,
// 512 without EDNS, 65535 over TCP), setting TC when records had to go.
//
// The global host is steered: the client is the ECS address when the query
// carries a non-zero ECS source prefix, else the transport source; either
// is cut to /24 (IPv4) or /56 (IPv6) and matched against Subnets, longest
// prefix first (the default region when nothing matches). A region that is
// down (no address of the site answering for it is up) is passed over for
// the first healthy one of its Proximity list, then the default region and
// its Proximity list; when every one is down the matched region is answered
// anyway.
//
// Each address counts on its own: a site answers with its addresses that
// are up (all of them when none is). A region answers with its DR site when
// it is failed over (h.FailedOver; the latch an operator lifts), or when no
// primary address is up and a DR address is; it then counts as healthy, and
// the global host answers the DR addresses as the region host does, so
// clients stay in their region. A failed-over region whose DR site is down
// is passed over, never answered with its primary.
//
// When the query carries ECS the reply echoes it with a SCOPE PREFIX-LENGTH
// for which the answer really holds: at least the matched route's length,
// and long enough that no more specific route (one that would change the
// answer) overlaps the scope. It is 0 for names that are not steered, for a
// /0 source prefix, and when no route of the client's family exists.
func (z *Zone) Answer(q *Query, h *Snapshot) *dns.Msg {
	m, _ := z.answer(q, h)
	return m
}

// answer is Answer plus the index of the region the answer came from (-1
// when the name is not region-bound), for metrics.
func (z *Zone) answer(q *Query, h *Snapshot) (*dns.Msg, int) {
	req := &q.Request
	m := new(dns.Msg)
	m.Id = req.ID
	m.Response = true
	m.Opcode = req.Opcode
	m.RecursionDesired = req.RecursionDesired
	m.CheckingDisabled = req.CheckingDisabled
	if req.HasQuestion {
		m.Question = []dns.Question{req.Question}
	}
	region, scope, echoECS := -1, 0, req.HasECS
	switch {
	case req.Opcode != dns.OpcodeQuery:
		m.Rcode = dns.RcodeNotImplemented
	case req.Malformed != nil:
		m.Rcode = dns.RcodeFormatError
		echoECS = false
	case req.EDNS && req.EDNSVersion != 0:
		m.Rcode = dns.RcodeBadVers
		echoECS = false
	default:
		region, scope = z.resolve(m, q, h)
	}

	if req.EDNS {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT, Class: z.maxUDP}}
		if req.DNSSECOK {
			opt.SetDo()
		}
		if echoECS {
			opt.Option = []dns.EDNS0{&dns.EDNS0_SUBNET{
				Code:          dns.EDNS0SUBNET,
				Family:        req.ECS.Family,
				SourceNetmask: req.ECS.SourcePrefix,
				SourceScope:   uint8(scope),
				Address:       net.IP(req.ECS.Addr.AsSlice()),
			}}
		}
		m.Extra = append(m.Extra, opt)
	}

	size := dns.MinMsgSize
	switch {
	case q.TCP:
		size = dns.MaxMsgSize
	case req.EDNS:
		size = int(min(max(req.UDPSize, dns.MinMsgSize), z.maxUDP))
	}
	m.Truncate(size)
	return m, region
}

// resolve fills the answer for a well-formed QUERY and returns the region
// answered (or -1) and the ECS scope.
func (z *Zone) resolve(m *dns.Msg, q *Query, h *Snapshot) (region, scope int) {
	region = -1
	qs := q.Question
	if qs.Qclass != dns.ClassINET && qs.Qclass != dns.ClassANY {
		m.Rcode = dns.RcodeRefused
		return region, 0
	}
	name := lowerASCII(qs.Name)
	if !isInZone(name, z.zone) {
		m.Rcode = dns.RcodeRefused
		return region, 0
	}
	switch qs.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		// Zone transfers are not offered.
		m.Rcode = dns.RcodeRefused
		return region, 0
	}
	m.Authoritative = true
	n := z.names[name]
	if n == nil {
		if !z.ents[name] {
			m.Rcode = dns.RcodeNameError
		}
		m.Ns = shared(z.negAuthority)
		return region, 0
	}

	var sets [][]dns.RR // at most a handful: A, AAAA, SOA, NS
	addrTypes := []uint16{qs.Qtype}
	if qs.Qtype == dns.TypeANY {
		addrTypes = []uint16{dns.TypeA, dns.TypeAAAA}
	}
	for _, t := range addrTypes {
		if t != dns.TypeA && t != dns.TypeAAAA {
			continue
		}
		switch {
		case n.global:
			var r int
			r, scope = z.steer(q, h, t)
			region = r
			ri := &z.regions[r]
			sets = append(sets, records(&ri.sites[z.site(ri, h)], ownerGlobal, t, h))
		case n.region >= 0:
			region = n.region
			ri := &z.regions[n.region]
			sets = append(sets, records(&ri.sites[z.site(ri, h)], ownerHost, t, h))
		case n.drOf >= 0:
			region = n.drOf
			sets = append(sets, records(&z.regions[n.drOf].sites[siteDR], ownerSite, t, h))
		case n.static != nil:
			sets = append(sets, n.static.get(t))
		}
	}
	if n.apex && (qs.Qtype == dns.TypeSOA || qs.Qtype == dns.TypeANY) {
		sets = append(sets, z.soaAnswer)
	}
	if n.apex && (qs.Qtype == dns.TypeNS || qs.Qtype == dns.TypeANY) {
		sets = append(sets, z.nsAnswer)
		if len(z.nsGlue) > 0 {
			m.Extra = make([]dns.RR, 0, len(z.nsGlue)+1)
			m.Extra = append(m.Extra, z.nsGlue...)
		}
	}

	total := 0
	for _, s := range sets {
		total += len(s)
	}
	switch {
	case total == 0:
		m.Ns = shared(z.negAuthority) // NODATA
	case len(sets) == 1 || total == len(sets[0]):
		m.Answer = shared(sets[0])
	default:
		m.Answer = make([]dns.RR, 0, total)
		for _, s := range sets {
			m.Answer = append(m.Answer, s...)
		}
	}
	return region, scope
}

// shared returns s with its capacity cut to its length, so that an append
// by anyone (dns.Msg.Truncate appends to Extra) copies instead of writing
// into the Zone's precomputed records.
func shared(s []dns.RR) []dns.RR { return s[:len(s):len(s)] }

// site returns which site of a region answers: the DR site once the region
// is failed over (whatever the primary's health: failing back is an
// operator's decision), else the primary while some address of it is up,
// else the DR site if some address of it is up, else the primary.
func (z *Zone) site(ri *regionInfo, h *Snapshot) int {
	switch {
	case !ri.hasDR:
		return sitePrimary
	case h.FailedOver(ri.id):
		return siteDR
	case siteUp(&ri.sites[sitePrimary], h) || !siteUp(&ri.sites[siteDR], h):
		return sitePrimary
	}
	return siteDR
}

// healthy reports whether the site answering for the region has an address
// up.
func (z *Zone) healthy(ri *regionInfo, h *Snapshot) bool {
	return siteUp(&ri.sites[z.site(ri, h)], h)
}

// siteUp reports whether some address of the site is up.
func siteUp(s *siteInfo, h *Snapshot) bool {
	if h.allUp() {
		return true
	}
	if !h.Up(s.up) {
		return false
	}
	set := &s.sets[ownerSite]
	for _, a := range set.a4 {
		if h.Up(s.up.At(a)) {
			return true
		}
	}
	for _, a := range set.a6 {
		if h.Up(s.up.At(a)) {
			return true
		}
	}
	return false
}

// live returns the site's records of type t under owner whose addresses are
// up. It allocates only when some but not all of them are down.
func live(s *siteInfo, owner int, t uint16, h *Snapshot) []dns.RR {
	set := &s.sets[owner]
	rrs := set.get(t)
	if h.allUp() || len(rrs) == 0 {
		return rrs
	}
	addrs := set.addrs(t)
	n := 0
	for _, a := range addrs {
		if h.Up(s.up.At(a)) {
			n++
		}
	}
	switch n {
	case len(rrs):
		return rrs
	case 0:
		return nil
	}
	out := make([]dns.RR, 0, n)
	for i, a := range addrs {
		if h.Up(s.up.At(a)) {
			out = append(out, rrs[i])
		}
	}
	return out
}

// records is what a site answers for type t under owner: the records of its
// live addresses, or all of them when none is up (an answer is never emptied
// by health alone).
func records(s *siteInfo, owner int, t uint16, h *Snapshot) []dns.RR {
	if rrs := live(s, owner, t, h); len(rrs) > 0 {
		return rrs
	}
	return s.sets[owner].get(t)
}

// steer picks the region for a global-host query of type qtype (A or AAAA)
// and the ECS scope to report.
func (z *Zone) steer(q *Query, h *Snapshot, qtype uint16) (region, scope int) {
	client, useECS := q.Source.Unmap(), false
	bitsLimit := 0
	if q.HasECS && q.ECS.SourcePrefix > 0 {
		client, useECS = q.ECS.Addr, true
		bitsLimit = int(q.ECS.SourcePrefix)
	}
	matched, mbits := z.defaultRegion, 0
	if client.IsValid() {
		width := MaxPrefixV6
		routes := z.v6
		if client.Is4() {
			width, routes = MaxPrefixV4, z.v4
		}
		if !useECS || bitsLimit > width {
			bitsLimit = width
		}
		client = netip.PrefixFrom(client, bitsLimit).Masked().Addr()
		for _, rt := range routes {
			if rt.prefix.Bits() <= bitsLimit && rt.prefix.Contains(client) {
				matched, mbits = rt.region, rt.prefix.Bits()
				break
			}
		}
		if useECS {
			scope = honestScope(client, mbits, routes)
		}
	}

	ri := &z.regions[matched]
	for _, c := range ri.fallbacks {
		cand := &z.regions[c]
		if z.healthy(cand, h) && len(live(&cand.sites[z.site(cand, h)], ownerGlobal, qtype, h)) > 0 {
			return c, scope
		}
	}
	// Everything is down: answer the matched region, or the first fallback
	// that has records of this type at all.
	for _, c := range ri.fallbacks {
		cand := &z.regions[c]
		if len(cand.sites[z.site(cand, h)].sets[ownerGlobal].get(qtype)) > 0 {
			return c, scope
		}
	}
	return matched, scope
}

// honestScope returns the shortest prefix length L >= matchedBits such that
// every address in client/L would be routed by the same route: no more
// specific route may overlap client/L. A route r that does not contain the
// client stops overlapping once L exceeds the bits the two share; one that
// contains the (cut) client address but is longer than the source prefix
// needs its full length.
func honestScope(client netip.Addr, matchedBits int, routes []route) int {
	scope := matchedBits
	for _, rt := range routes {
		rb := rt.prefix.Bits()
		if rb <= matchedBits {
			continue
		}
		need := min(commonBits(client, rt.prefix.Addr())+1, rb)
		scope = max(scope, need)
	}
	return scope
}

// commonBits counts the leading bits two addresses of one family share.
func commonBits(a, b netip.Addr) int {
	if a.Is4() {
		x, y := a.As4(), b.As4()
		return bits.LeadingZeros32(binary.BigEndian.Uint32(x[:]) ^ binary.BigEndian.Uint32(y[:]))
	}
	x, y := a.As16(), b.As16()
	if hi := binary.BigEndian.Uint64(x[:8]) ^ binary.BigEndian.Uint64(y[:8]); hi != 0 {
		return bits.LeadingZeros64(hi)
	}
	return 64 + bits.LeadingZeros64(binary.BigEndian.Uint64(x[8:])^binary.BigEndian.Uint64(y[8:]))
}
