package geodns

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// rrlAction is what the rate limiter decides for one UDP response.
type rrlAction int

const (
	rrlPass rrlAction = iota // send the answer
	rrlDrop                  // send nothing
	rrlSlip                  // send an empty TC=1 reply so the client retries over TCP
)

// rateLimiter is a token bucket per client subnet (/24 or /56). Buckets live
// in a fixed table indexed by a seeded hash of the subnet: memory is bounded
// however many sources a flood forges, and subnets that collide share a
// bucket, which errs on the side of limiting. Seeding makes collisions
// unpredictable to an attacker.
type rateLimiter struct {
	rate  float64 // tokens per nanosecond
	burst float64
	slip  int64 // 1 in slip over-limit responses is slipped; <= 0 never
	seed  maphash.Seed
	now   func() time.Time

	over    atomic.Int64 // over-limit responses so far, for slip
	stripes [rrlStripes]struct {
		mu sync.Mutex
		_  [56]byte // keep stripes on separate cache lines
	}
	buckets []bucket
}

type bucket struct {
	tokens float64
	last   int64 // unix nanoseconds of the last update; 0 = never used
}

const (
	rrlBuckets = 1 << 16
	rrlStripes = 64
)

// newRateLimiter returns nil when rate limiting is off.
func newRateLimiter(c RateLimitConfig, now func() time.Time) *rateLimiter {
	if c.ResponsesPerSecond <= 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	burst := c.Burst
	if burst < 1 {
		burst = 1
	}
	return &rateLimiter{
		rate:    c.ResponsesPerSecond / float64(time.Second),
		burst:   float64(burst),
		slip:    int64(c.Slip),
		seed:    maphash.MakeSeed(),
		now:     now,
		buckets: make([]bucket, rrlBuckets),
	}
}

// clientKey cuts a source address to the subnet the limiter keys on.
func clientKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, MaxPrefixV4).Masked()
	}
	return netip.PrefixFrom(a, MaxPrefixV6).Masked()
}

// allow takes one token for src's subnet and says what to do with the
// response.
func (l *rateLimiter) allow(src netip.Addr) rrlAction {
	k := clientKey(src)
	a := k.Addr().As16()
	var h maphash.Hash
	h.SetSeed(l.seed)
	_, _ = h.Write(a[:])
	_ = h.WriteByte(byte(k.Bits()))
	sum := h.Sum64()
	idx := sum % rrlBuckets
	st := &l.stripes[idx%rrlStripes]

	now := l.now().UnixNano()
	st.mu.Lock()
	b := &l.buckets[idx]
	if b.last == 0 {
		b.tokens = l.burst
	} else if dt := now - b.last; dt > 0 {
		b.tokens = min(l.burst, b.tokens+float64(dt)*l.rate)
	}
	b.last = now
	ok := b.tokens >= 1
	if ok {
		b.tokens--
	}
	st.mu.Unlock()
	if ok {
		return rrlPass
	}
	if l.slip > 0 && l.over.Add(1)%l.slip == 0 {
		return rrlSlip
	}
	return rrlDrop
}
