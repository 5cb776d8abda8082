package region

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meridian-id/meridian/routing"
)

// limiter bounds failed password and TOTP attempts per client address and per
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

// roll starts a new window when the current one is over. l.mu is held.
func (l *limiter) roll() {
	if now := time.Now(); now.Sub(l.window) > l.interval {
		l.window = now
		clear(l.perIP)
		clear(l.perID)
	}
}

// allow reports whether another attempt is within both limits. Only failed
// attempts count (failed), so a shared address signing many people in
// successfully is never throttled.
func (l *limiter) allow(ip, id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll()
	return l.perIP[ip] < l.ipMax && l.perID[id] < l.idMax
}

// failed counts a failed attempt.
func (l *limiter) failed(ip, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.roll()
	l.perIP[ip]++
	l.perID[id]++
}

// clientIP is the peer address. Forwarded headers are not trusted from
// clients (the router strips them, and a client could forge them to dodge
// the limit), except on a call another region's router forwarded: the
// router verified its MACed hop header (and only then sets HopFromHeader),
// replaced any client-supplied X-Forwarded-For and appended the address
// of the client it served. Without this, every login proxied from one
// region would share that router's address and one attacker could exhaust
// the per-address limit for all of them.
func clientIP(r *http.Request) string {
	if r.Header.Get(routing.HopFromHeader) != "" {
		if xff := r.Header.Values("X-Forwarded-For"); len(xff) > 0 {
			last := xff[len(xff)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			if ip := net.ParseIP(strings.TrimSpace(last)); ip != nil {
				return ip.String()
			}
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
