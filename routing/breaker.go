package routing

import (
	"sync"
	"time"
)

// breaker is a per-upstream circuit breaker: after threshold consecutive
// failures it opens for cooldown, failing calls at once so a dead region
// costs nothing; then it lets one trial call through (half-open) and closes
// on its success.
type breaker struct {
	mu        sync.Mutex
	failures  int
	openUntil time.Time
	trial     bool
	threshold int
	cooldown  time.Duration
	// drainingUntil: the address answered with serve.DrainingHeader; it is
	// tried after the site's other addresses until then.
	drainingUntil time.Time
}

// drain records that the upstream is draining (for the cooldown).
func (b *breaker) drain(now time.Time) {
	b.mu.Lock()
	b.drainingUntil = now.Add(b.cooldown)
	b.mu.Unlock()
}

// draining reports whether the upstream said recently that it drains.
func (b *breaker) draining(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return now.Before(b.drainingUntil)
}

func newBreaker(threshold int, cooldown time.Duration) *breaker {
	return &breaker{threshold: threshold, cooldown: cooldown}
}

// allow reports whether a call may be attempted now.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.failures < b.threshold {
		return true
	}
	if now.Before(b.openUntil) || b.trial {
		return false
	}
	b.trial = true
	return true
}

// done records the outcome of a call.
func (b *breaker) done(ok bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
	if ok {
		b.failures = 0
		return
	}
	b.failures++
	if b.failures >= b.threshold {
		b.openUntil = now.Add(b.cooldown)
	}
}

// abandon ends a call whose outcome says nothing about the upstream (the
// caller went away first): it frees a half-open trial without counting.
func (b *breaker) abandon() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.trial = false
}

// open reports whether the breaker currently rejects calls.
func (b *breaker) open(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.failures >= b.threshold && now.Before(b.openUntil)
}
