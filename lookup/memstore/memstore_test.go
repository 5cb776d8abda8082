package memstore_test

import (
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/conformance"
	"github.com/meridian-id/meridian/lookup/memstore"
)

func TestConformance(t *testing.T) {
	conformance.Run(t, func(*testing.T) lookup.Store { return memstore.New() })
}
