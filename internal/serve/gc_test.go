package serve

import (
	"runtime/debug"
	"testing"
)

// TestTuneGC: without GOGC in the environment a serving process runs the
// collector at GCPercent; with GOGC set, the operator's value is kept.
func TestTuneGC(t *testing.T) {
	prev := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(prev) })
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int // the collector's target afterwards
	}{
		{"unset", nil, GCPercent},
		{"operator's GOGC", map[string]string{"GOGC": "100"}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			debug.SetGCPercent(100)
			TuneGC(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
			if got := debug.SetGCPercent(100); got != tc.want {
				t.Fatalf("GC percent %d, want %d", got, tc.want)
			}
		})
	}
}
