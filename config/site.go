package config

import (
	"net"
	"strconv"
)

// DialAddrs returns every address to dial for a site, in configuration
// order: each of its addresses at the port of its listener (or the
// federation port). [Config.DialAddr] is the first of them; a caller that
// must survive one dead node of a site tries them all (GeoDNS checks and
// answers each one on its own).
func (c *Config) DialAddrs(s Site) []string {
	port := strconv.Itoa(c.Federation.Port)
	if _, p, err := net.SplitHostPort(s.Listen); err == nil && p != "0" {
		port = p
	}
	out := make([]string, len(s.Addresses))
	for i, a := range s.Addresses {
		out[i] = net.JoinHostPort(a, port)
	}
	return out
}
