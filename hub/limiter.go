package hub

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limiter bounds attempts per client address and per identifier with fixed
// one-minute windows, like a region's. It is per hub node.
type limiter struct {
	mu     sync.Mutex
	window time.Time
	perIP  map[string]int
	perID  map[string]int
	ipMax  int
	idMax  int
}

func newLimiter(ipMax, idMax int) *limiter {
	return &limiter{perIP: map[string]int{}, perID: map[string]int{}, ipMax: ipMax, idMax: idMax}
}

// allow counts one attempt; an empty id counts against the address only.
func (l *limiter) allow(ip, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.window) > time.Minute {
		l.window = now
		clear(l.perIP)
		clear(l.perID)
	}
	l.perIP[ip]++
	ok := l.perIP[ip] <= l.ipMax
	if id != "" {
		l.perID[id]++
		ok = ok && l.perID[id] <= l.idMax
	}
	return ok
}

// clientIP is the peer address. Forwarded headers are not read here: when
// the peer is a configured trusted proxy, the broker's front handler
// (clientaddr.Trusted.Handler) has already set RemoteAddr to the client
// the proxy named; anyone else's X-Forwarded-For is ignored.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
