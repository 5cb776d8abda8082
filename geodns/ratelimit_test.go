package geodns

import (
	"net/netip"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestRateLimiter(t *testing.T) {
	const (
		P = rrlPass
		D = rrlDrop
		S = rrlSlip
	)
	tests := []struct {
		name  string
		cfg   RateLimitConfig
		steps []rrlAction // one query per step, 100 ms apart
	}{
		// 3/s, burst 3: three pass, then each step refills 0.3 tokens;
		// every second response over the limit slips.
		{"slip 2", RateLimitConfig{ResponsesPerSecond: 3, Burst: 3, Slip: 2}, []rrlAction{P, P, P, D, P, S, D, P, S, D}},
		{"slip 1 truncates all", RateLimitConfig{ResponsesPerSecond: 3, Burst: 1, Slip: 1}, []rrlAction{P, S, S, S, P, S}},
		{"negative slip drops all", RateLimitConfig{ResponsesPerSecond: 3, Burst: 1, Slip: -1}, []rrlAction{P, D, D, D, P, D}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
			l := newRateLimiter(tc.cfg, clk.now)
			src := netip.MustParseAddr("192.0.2.1")
			for i, want := range tc.steps {
				if got := l.allow(src); got != want {
					t.Fatalf("step %d: %v, want %v", i, got, want)
				}
				clk.advance(100 * time.Millisecond)
			}
		})
	}
}

func TestRateLimiterKeysBySubnet(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	l := newRateLimiter(RateLimitConfig{ResponsesPerSecond: 1, Burst: 1, Slip: -1}, clk.now)
	same := []string{"192.0.2.1", "192.0.2.254", "::ffff:192.0.2.7"}
	for i, s := range same {
		want := rrlDrop
		if i == 0 {
			want = rrlPass
		}
		if got := l.allow(netip.MustParseAddr(s)); got != want {
			t.Errorf("%s: %v, want %v (one /24 shares one bucket)", s, got, want)
		}
	}
	if got := l.allow(netip.MustParseAddr("2001:db8:0:ff::1")); got != rrlPass {
		t.Errorf("v6 client limited by a v4 bucket")
	}
	if got := l.allow(netip.MustParseAddr("2001:db8:0:1::1")); got != rrlDrop {
		t.Errorf("same /56 not limited together")
	}
	if newRateLimiter(RateLimitConfig{}, nil) != nil {
		t.Errorf("zero rate should disable the limiter")
	}
}
