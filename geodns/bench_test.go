package geodns

import (
	"context"
	"testing"

	"github.com/miekg/dns"
)

// BenchmarkAnswer measures the pure decision: a parsed ECS query for the
// global host to a packable reply, eu primary down.
func BenchmarkAnswer(b *testing.B) {
	z := mustZone(b, testConfig())
	q := Query{Request: parseMsg(b, query("id.localhost.", dns.TypeA, ecsOpt("10.1.2.0/24"))), Source: loop4}
	h := NewSnapshot(euUp)
	b.ReportAllocs()
	for b.Loop() {
		if r := z.Answer(&q, h); len(r.Answer) != 1 {
			b.Fatal("no answer")
		}
	}
}

// BenchmarkHandle measures the whole per-packet path without the socket:
// parse, rate-limit check, answer, metrics, pack.
func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct {
		name string
		msg  *dns.Msg
	}{
		{"global-ecs", query("id.localhost.", dns.TypeA, ecsOpt("192.0.2.0/24"))},
		{"global-source", query("id.localhost.", dns.TypeA)},
		{"region-host", query("eu.id.localhost.", dns.TypeA)},
		{"nxdomain", query("nope.id.localhost.", dns.TypeA)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := testConfig()
			cfg.RateLimit.ResponsesPerSecond = 1e12 // exercise the limiter, never limit
			s, err := New(cfg, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			raw, err := bc.msg.Pack()
			if err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, dns.MaxMsgSize)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if out := s.handle(ctx, raw, loop4, false, buf); out == nil {
					b.Fatal("no reply")
				}
			}
		})
	}
}
