package config

import (
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// checkProductionTransport refuses, under federation.production, a
// database or Redis URL (key names its YAML key) that would speak
// plain text to a host other than loopback or a unix socket:
//
//   - PostgreSQL: sslmode must be require, verify-ca or verify-full (no
//     sslmode means prefer, which falls back to plain text);
//   - MySQL: a tls= parameter other than false or preferred;
//   - Redis: rediss://, not redis://.
//
// Loopback (127.0.0.0/8, ::1, localhost) and unix sockets are allowed:
// their traffic never leaves the host. Errors name the key and the host,
// never the URL (it may hold a password).
func checkProductionTransport(key, raw string) error {
	if raw == "" {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil // checkDatabase and the hub.redis check report it
	}
	const why = "federation.production refuses plain-text connections off the host"
	q := u.Query()
	switch u.Scheme {
	case "postgres", "postgresql":
		hosts := strings.Split(u.Host, ",") // libpq: host1:port1,host2:port2
		if h := q.Get("host"); h != "" {
			hosts = strings.Split(h, ",")
		}
		if localHosts(hosts) {
			return nil
		}
		switch q.Get("sslmode") {
		case "require", "verify-ca", "verify-full":
			return nil
		case "":
			return invalid(key, "PostgreSQL host %s without sslmode (libpq's default, prefer, falls back to plain text): %s; set sslmode=verify-full", strings.Join(hosts, ","), why)
		default:
			return invalid(key, "PostgreSQL host %s with sslmode=%s: %s; set sslmode=verify-full", strings.Join(hosts, ","), q.Get("sslmode"), why)
		}
	case "mysql":
		if localHosts([]string{u.Hostname()}) {
			return nil
		}
		switch t := q.Get("tls"); t {
		case "", "false", "preferred":
			return invalid(key, "MySQL host %s without tls=true (tls=%q): %s", u.Hostname(), t, why)
		}
		return nil
	case "redis":
		if localHosts([]string{u.Hostname()}) {
			return nil
		}
		return invalid(key, "redis:// to host %s: %s; use rediss://", u.Hostname(), why)
	}
	return nil
}

// localHosts reports whether every host is loopback or a unix socket
// (empty, or a directory path as libpq's host= takes).
func localHosts(hosts []string) bool {
	for _, h := range hosts {
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
		switch {
		case h == "" || strings.HasPrefix(h, "/") || strings.EqualFold(h, "localhost"):
			continue
		}
		a, err := netip.ParseAddr(h)
		if err != nil || !a.IsLoopback() {
			return false
		}
	}
	return true
}
