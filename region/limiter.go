package region

import (
	"context"
	"encoding/hex"
	"errors"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/routing"
)

// Login limits, per one-minute window (the previous window counts too), region-wide.
const (
	// addressMax bounds failed password and TOTP attempts per client address.
	addressMax = 30
	// identifierMax bounds failed attempts per identifier: a username at the
	// password step, a user at the TOTP step.
	identifierMax = 10
	// identifyMax bounds username-step posts per client address that no
	// successful login followed (enumeration probes).
	identifyMax = 60
	limitWindow = time.Minute
)

// attemptStore is the part of the regional store that counts attempts.
type attemptStore interface {
	ReserveAttempt(ctx context.Context, key string, window time.Time, limit int, expires time.Time) (bool, error)
	ReleaseAttempt(ctx context.Context, key string, window time.Time) error
	CountAttempts(ctx context.Context, key string, window time.Time) (int, error)
}

// limiter bounds login attempts with fixed windows whose counters live in
// the region's database, so every node of a region shares them. An attempt
// is reserved before the work it guards (the argon2id verification, the
// TOTP check), so concurrent guesses cannot all slip under the limit; a
// successful attempt releases its reservation, so only failures count and a
// shared address signing many people in is never throttled.
type limiter struct {
	st       attemptStore
	interval time.Duration
	now      func() time.Time
}

func newLimiter(st attemptStore) *limiter {
	return &limiter{st: st, interval: limitWindow, now: time.Now}
}

// limit is one counter an attempt is reserved against.
type limit struct {
	key string
	max int
}

// perAddress is the failed-attempt limit of a client address.
func perAddress(ip string) limit { return limit{key: "ip:" + ip, max: addressMax} }

// perIdentifier is the failed-attempt limit of one identifier of kind
// (user, totp). The identifier is stored by its digest, never in the clear.
func perIdentifier(kind, id string) limit {
	d := store.Digest(kind + ":" + id)
	return limit{key: kind + ":" + hex.EncodeToString(d[:16]), max: identifierMax}
}

// identifyLimit is the username-step limit of a client address.
func identifyLimit(ip string) limit { return limit{key: "identify:" + ip, max: identifyMax} }

// reservation is a set of reserved attempts in one window.
type reservation struct {
	keys   []string
	window time.Time
}

// errLimited is returned by reserve when a limit is exhausted.
var errLimited = errors.New("region: too many attempts")

// reserve reserves one attempt against every limit, or none: when one is
// exhausted the attempts already taken are released and it returns
// errLimited and how long until the attempt could count again.
//
// The windows are fixed, but a limit is checked against the current window
// and the whole previous one (a sliding approximation): the previous
// window's attempts count against the current window's room, so no burst
// straddling a window boundary gets twice the limit, and a run of guesses
// that happens to cross a boundary stays limited. A finished window's count
// only goes down (releases), so reading it first keeps the reservation in
// the current window atomic.
func (l *limiter) reserve(ctx context.Context, limits ...limit) (reservation, time.Duration, error) {
	now := l.now()
	res := reservation{window: now.Truncate(l.interval)}
	end := res.window.Add(l.interval)
	for _, lim := range limits {
		prev, err := l.st.CountAttempts(ctx, lim.key, res.window.Add(-l.interval))
		if err != nil {
			l.release(context.WithoutCancel(ctx), res)
			return reservation{}, 0, err
		}
		ok := false
		if room := lim.max - prev; room > 0 {
			ok, err = l.st.ReserveAttempt(ctx, lim.key, res.window, room, end.Add(l.interval))
		}
		if err != nil || !ok {
			l.release(context.WithoutCancel(ctx), res)
			if err != nil {
				return reservation{}, 0, err
			}
			wait := end.Sub(now)
			if prev > 0 {
				// The previous window's attempts count until the current
				// window ends too.
				wait += l.interval
			}
			return reservation{}, wait, errLimited
		}
		res.keys = append(res.keys, lim.key)
	}
	return res, 0, nil
}

// release takes back the attempts of res (they turned out not to count).
func (l *limiter) release(ctx context.Context, res reservation) {
	for _, k := range res.keys {
		_ = l.st.ReleaseAttempt(ctx, k, res.window)
	}
}

// refund takes back one attempt of lim in the current window.
func (l *limiter) refund(ctx context.Context, lim limit) {
	_ = l.st.ReleaseAttempt(ctx, lim.key, l.now().Truncate(l.interval))
}

// retryAfter sets Retry-After to d in whole seconds, at least one.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	secs := int64(math.Ceil(d.Seconds()))
	w.Header().Set("Retry-After", strconv.FormatInt(max(1, secs), 10))
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
