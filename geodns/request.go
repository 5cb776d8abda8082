package geodns

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/miekg/dns"
)

// Errors returned by [ParseRequest] for messages that get no reply at all.
var (
	ErrShortMessage = errors.New("geodns: message shorter than a DNS header")
	ErrNotQuery     = errors.New("geodns: message is a response (QR set)")
)

// Request is a DNS query decoded from the wire, reduced to what the answer
// depends on. The query is parsed by hand (names through miekg/dns) rather
// than with dns.Msg.Unpack so that a malformed EDNS Client Subnet option can
// be told apart, and answered with FORMERR, instead of failing the whole
// unpack, and so the hot path allocates little.
type Request struct {
	ID               uint16
	Opcode           int
	RecursionDesired bool
	CheckingDisabled bool

	// HasQuestion reports that the message held exactly one well-formed
	// question, given in Question.
	HasQuestion bool
	Question    dns.Question

	// EDNS reports an OPT record; UDPSize, EDNSVersion and DNSSECOK are
	// its fields.
	EDNS        bool
	UDPSize     uint16
	EDNSVersion uint8
	DNSSECOK    bool

	// HasECS reports a well-formed EDNS Client Subnet option, given in ECS.
	HasECS bool
	ECS    ClientSubnet

	// Malformed, when set, says why the query must be answered with
	// FORMERR: no or several questions, a bad name, several OPT records,
	// a truncated section, a malformed ECS option, ...
	Malformed error
}

// ClientSubnet is an EDNS Client Subnet option (RFC 7871).
type ClientSubnet struct {
	Family       uint16 // 1 IPv4, 2 IPv6
	SourcePrefix uint8
	ScopePrefix  uint8
	// Addr is the address with every bit past SourcePrefix zero.
	Addr netip.Addr
}

// Prefix returns the option's address and source prefix length.
func (c ClientSubnet) Prefix() netip.Prefix {
	return netip.PrefixFrom(c.Addr, int(c.SourcePrefix))
}

// ParseRequest decodes a query. It returns an error only for messages that
// deserve no reply (shorter than a header, or a response); every other
// problem is reported in Request.Malformed so the caller can answer FORMERR.
func ParseRequest(raw []byte) (Request, error) {
	var r Request
	if len(raw) < 12 {
		return r, ErrShortMessage
	}
	r.ID = binary.BigEndian.Uint16(raw[0:])
	flags := binary.BigEndian.Uint16(raw[2:])
	if flags&(1<<15) != 0 {
		return r, ErrNotQuery
	}
	r.Opcode = int(flags>>11) & 0xF
	r.RecursionDesired = flags&(1<<8) != 0
	r.CheckingDisabled = flags&(1<<4) != 0
	qd := binary.BigEndian.Uint16(raw[4:])
	an := binary.BigEndian.Uint16(raw[6:])
	ns := binary.BigEndian.Uint16(raw[8:])
	ar := binary.BigEndian.Uint16(raw[10:])

	if qd != 1 {
		r.Malformed = fmt.Errorf("%d questions, want 1", qd)
		return r, nil
	}
	name, off, err := dns.UnpackDomainName(raw, 12)
	if err != nil {
		r.Malformed = fmt.Errorf("question name: %w", err)
		return r, nil
	}
	if off+4 > len(raw) {
		r.Malformed = errors.New("question truncated")
		return r, nil
	}
	r.Question = dns.Question{
		Name:   name,
		Qtype:  binary.BigEndian.Uint16(raw[off:]),
		Qclass: binary.BigEndian.Uint16(raw[off+2:]),
	}
	r.HasQuestion = true
	off += 4

	// Answer and authority sections are skipped: a query has no use for
	// them.
	for i := 0; i < int(an)+int(ns); i++ {
		if off, err = skipRR(raw, off); err != nil {
			r.Malformed = err
			return r, nil
		}
	}
	for i := 0; i < int(ar); i++ {
		start := off
		if off, err = skipName(raw, off); err != nil {
			r.Malformed = err
			return r, nil
		}
		if off+10 > len(raw) {
			r.Malformed = errors.New("additional record truncated")
			return r, nil
		}
		rtype := binary.BigEndian.Uint16(raw[off:])
		class := binary.BigEndian.Uint16(raw[off+2:])
		ttl := binary.BigEndian.Uint32(raw[off+4:])
		rdlen := int(binary.BigEndian.Uint16(raw[off+8:]))
		off += 10
		if off+rdlen > len(raw) {
			r.Malformed = errors.New("additional record data truncated")
			return r, nil
		}
		rdata := raw[off : off+rdlen]
		off += rdlen
		if rtype != dns.TypeOPT {
			continue
		}
		if r.EDNS {
			r.Malformed = errors.New("more than one OPT record")
			return r, nil
		}
		if raw[start] != 0 {
			r.Malformed = errors.New("OPT record owner is not the root")
			return r, nil
		}
		r.EDNS = true
		r.UDPSize = class
		r.EDNSVersion = uint8(ttl >> 16)
		r.DNSSECOK = ttl&(1<<15) != 0
		if err := r.parseOptions(rdata); err != nil {
			r.Malformed = err
			return r, nil
		}
	}
	return r, nil
}

// parseOptions walks the OPT RDATA and extracts the ECS option; other
// options are ignored.
func (r *Request) parseOptions(b []byte) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return errors.New("EDNS option header truncated")
		}
		code := binary.BigEndian.Uint16(b)
		n := int(binary.BigEndian.Uint16(b[2:]))
		if 4+n > len(b) {
			return errors.New("EDNS option data truncated")
		}
		data := b[4 : 4+n]
		b = b[4+n:]
		if code != dns.EDNS0SUBNET {
			continue
		}
		if r.HasECS {
			return errors.New("more than one ECS option")
		}
		ecs, err := ParseECS(data)
		if err != nil {
			return err
		}
		r.ECS, r.HasECS = ecs, true
	}
	return nil
}

// ParseECS decodes the payload of an EDNS Client Subnet option (RFC 7871
// section 6), strictly: the family must be 1 or 2, the source prefix length
// at most 32 or 128, the address exactly ceil(source/8) octets long, and
// every address bit past the source prefix zero. The scope prefix length of
// a query is kept as sent but must not exceed the family's width.
func ParseECS(b []byte) (ClientSubnet, error) {
	var c ClientSubnet
	if len(b) < 4 {
		return c, fmt.Errorf("ECS option: %d octets, need at least 4", len(b))
	}
	c.Family = binary.BigEndian.Uint16(b)
	c.SourcePrefix = b[2]
	c.ScopePrefix = b[3]
	var width int
	switch c.Family {
	case 1:
		width = 32
	case 2:
		width = 128
	default:
		return c, fmt.Errorf("ECS option: unknown address family %d", c.Family)
	}
	if int(c.SourcePrefix) > width {
		return c, fmt.Errorf("ECS option: source prefix /%d exceeds /%d", c.SourcePrefix, width)
	}
	if int(c.ScopePrefix) > width {
		return c, fmt.Errorf("ECS option: scope prefix /%d exceeds /%d", c.ScopePrefix, width)
	}
	addr := b[4:]
	want := (int(c.SourcePrefix) + 7) / 8
	if len(addr) != want {
		return c, fmt.Errorf("ECS option: %d address octets for a /%d source prefix, want %d", len(addr), c.SourcePrefix, want)
	}
	if rem := c.SourcePrefix % 8; rem != 0 {
		if addr[want-1]&(0xFF>>rem) != 0 {
			return c, fmt.Errorf("ECS option: address bits set beyond the /%d source prefix", c.SourcePrefix)
		}
	}
	var a16 [16]byte
	if c.Family == 1 {
		var a4 [4]byte
		copy(a4[:], addr)
		c.Addr = netip.AddrFrom4(a4)
	} else {
		copy(a16[:], addr)
		c.Addr = netip.AddrFrom16(a16)
	}
	return c, nil
}

// skipName steps over a possibly compressed domain name without decoding it.
func skipName(msg []byte, off int) (int, error) {
	for n := 0; n < 128; n++ {
		if off >= len(msg) {
			return 0, errors.New("name truncated")
		}
		c := int(msg[off])
		switch c & 0xC0 {
		case 0x00:
			if c == 0 {
				return off + 1, nil
			}
			off += 1 + c
		case 0xC0:
			if off+2 > len(msg) {
				return 0, errors.New("name pointer truncated")
			}
			return off + 2, nil
		default:
			return 0, errors.New("name has a reserved label type")
		}
	}
	return 0, errors.New("name has too many labels")
}

// skipRR steps over one resource record.
func skipRR(msg []byte, off int) (int, error) {
	off, err := skipName(msg, off)
	if err != nil {
		return 0, err
	}
	if off+10 > len(msg) {
		return 0, errors.New("record header truncated")
	}
	rdlen := int(binary.BigEndian.Uint16(msg[off+8:]))
	off += 10 + rdlen
	if off > len(msg) {
		return 0, errors.New("record data truncated")
	}
	return off, nil
}
