package faults

import (
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/fedtest"
)

// startFederation is fedtest.Start with a 2s federation.request_timeout:
// the fault tests bound a failing region's answers by it.
func startFederation(t testing.TB, o fedtest.Options) *fedtest.Federation {
	o.RequestTimeout = 2 * time.Second
	return fedtest.Start(t, o)
}
