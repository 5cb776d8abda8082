// Package clientaddr finds the address of the client behind a request for
// per-address limits. X-Forwarded-For is honoured only when the peer is a
// configured trusted proxy, and then only as far as the chain of trusted
// proxies goes: the client is the rightmost address in the header that is
// not itself a trusted proxy. Anyone else's X-Forwarded-For is ignored, so
// it cannot be used to dodge a limit or to spend another client's.
package clientaddr

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// Trusted is a set of trusted proxy networks. A nil or empty Trusted
// trusts nobody: the client is always the peer.
type Trusted struct {
	nets []netip.Prefix
}

// Parse reads trusted proxies as CIDR prefixes ("10.0.0.0/8") or single
// addresses ("192.0.2.7"). It fails on anything else.
func Parse(entries []string) (*Trusted, error) {
	t := &Trusted{}
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if p, err := netip.ParsePrefix(e); err == nil {
			t.nets = append(t.nets, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(e)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("clientaddr: %q is neither an address nor a CIDR prefix", e)
		}
		t.nets = append(t.nets, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return t, nil
}

// Empty reports whether t trusts nobody.
func (t *Trusted) Empty() bool { return t == nil || len(t.nets) == 0 }

// trusts reports whether a is a trusted proxy.
func (t *Trusted) trusts(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range t.nets {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Client returns the client address of r: the peer's, unless the peer is a
// trusted proxy; then the rightmost X-Forwarded-For entry (over all the
// header's lines) that is not a trusted proxy, or the leftmost entry when
// every one is trusted. An entry that does not parse ends the walk at the
// last trusted address: a trusted proxy vouches only for its own peer.
func (t *Trusted) Client(r *http.Request) string {
	peer := peerAddr(r.RemoteAddr)
	if t.Empty() || !peer.IsValid() || !t.trusts(peer) {
		if peer.IsValid() {
			return peer.String()
		}
		return r.RemoteAddr
	}
	var hops []string
	for _, line := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(line, ",")...)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			break
		}
		client = a
		if !t.trusts(a) {
			break
		}
	}
	return client.String()
}

// Handler passes requests to next with RemoteAddr set to the client's
// address (Client) when the peer is a trusted proxy, so every per-address
// limit, log and forwarding header behind it sees the client. With an
// empty t it is next itself.
func (t *Trusted) Handler(next http.Handler) http.Handler {
	if t.Empty() {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer := peerAddr(r.RemoteAddr)
		if peer.IsValid() && t.trusts(peer) {
			if c := t.Client(r); c != peer.String() {
				r2 := r.Clone(r.Context())
				r2.RemoteAddr = net.JoinHostPort(c, "0")
				r = r2
			}
		}
		next.ServeHTTP(w, r)
	})
}

func peerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := netip.ParseAddr(remote)
	return a.Unmap()
}

// parseHop reads one X-Forwarded-For entry: an address, possibly with a
// port ("192.0.2.1:4711", "[2001:db8::1]:4711").
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil && ap.Addr().Zone() == "" {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}
