package region

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// limiter bounds password and TOTP attempts per client address and per
// identifier with fixed one-minute windows. It is per node: a region of N
// nodes admits at most N times the limit, which still defeats online
// guessing at scale.
type limiter struct {
	mu       sync.Mutex
	window   time.Time
	perIP    map[string]int
	perID    map[string]int
	ipMax    int
	idMax    int
	interval time.Duration
}

func newLimiter() *limiter {
	return &limiter{perIP: map[string]int{}, perID: map[string]int{}, ipMax: 30, idMax: 10, interval: time.Minute}
}

// allow counts one attempt and reports whether it is within both limits.
func (l *limiter) allow(ip, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); now.Sub(l.window) > l.interval {
		l.window = now
		clear(l.perIP)
		clear(l.perID)
	}
	l.perIP[ip]++
	l.perID[id]++
	return l.perIP[ip] <= l.ipMax && l.perID[id] <= l.idMax
}

// clientIP is the peer address. Forwarded headers are not trusted: the
// router strips them, and a client could forge them to dodge the limit.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
