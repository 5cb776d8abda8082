package serve

import "runtime/debug"

// GCPercent is the garbage collector's target (GOGC) of a serving process
// whose operator did not choose one. Go's default of 100 starts a cycle
// each time the heap doubles; a node's live heap is small (a few tens of
// MiB: caches, pools, connections), while every request allocates tens of
// kilobytes of short-lived objects, so at 100 the collector ran every few
// milliseconds under load and took 12-15 % of a node's CPU (issue 14
// profiles). At 400 the heap may grow to five times the live set between
// cycles: a few hundred MiB at most for a regional node, for about 20 %
// less CPU per introspection (docs/benchmarks.md).
const GCPercent = 400

// TuneGC sets the collector's target to GCPercent unless the environment
// (lookup, os.LookupEnv in a main) sets GOGC, which the operator's choice
// wins over; GOMEMLIMIT, when set, still caps the heap. It reports the
// target it left in effect, -1 when the operator's GOGC was kept.
func TuneGC(lookup func(string) (string, bool)) int {
	if _, ok := lookup("GOGC"); ok {
		return -1
	}
	debug.SetGCPercent(GCPercent)
	return GCPercent
}
