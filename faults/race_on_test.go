//go:build race

package faults

// raceEnabled reports whether the test binary runs under the race detector.
const raceEnabled = true
