package routing

import (
	"bytes"
	"testing"
	"time"
)

// TestHopAcrossRotationPhases: nodes in adjacent phases of a routing-key
// rotation (docs/operations.md) accept each other's hop headers; a hop
// signed only under a retired key (clients use) is refused.
func TestHopAcrossRotationPhases(t *testing.T) {
	a, b := bytes.Repeat([]byte("a"), 32), bytes.Repeat([]byte("b"), 32)
	regions := []string{"eu", "us"}
	legacy, _ := NewCodec(regions, a)
	ring := func(keys ...RoutingKey) *Codec {
		c, err := NewKeyRing(regions, keys)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	phases := []*Codec{
		legacy,
		ring(RoutingKey{a, UseSign}, RoutingKey{b, UseVerify}),
		ring(RoutingKey{b, UseSign}, RoutingKey{a, UseVerify}),
		ring(RoutingKey{b, UseSign}, RoutingKey{a, UseClients}),
	}
	now := time.Now()
	for i := 0; i+1 < len(phases); i++ {
		for _, p := range [][2]int{{i, i + 1}, {i + 1, i}} {
			v := newHopSigner(phases[p[0]]).sign("eu", "us", now)
			if from, ok := newHopSigner(phases[p[1]]).verify(v, "us", now); !ok || from != "eu" {
				t.Errorf("hop from phase %d refused in phase %d", p[0], p[1])
			}
		}
	}
	v := newHopSigner(legacy).sign("eu", "us", now)
	if _, ok := newHopSigner(phases[3]).verify(v, "us", now); ok {
		t.Error("a hop under the retired key was accepted")
	}
}
