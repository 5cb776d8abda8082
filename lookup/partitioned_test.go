package lookup_test

import (
	"context"
	"errors"
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/memstore"
)

// TestPartitioned: a region writes only its own partition and only entries
// pointing to itself; an entry counts only in the partition of the region
// it names; a key two regions claim resolves to no region.
func TestPartitioned(t *testing.T) {
	ctx := context.Background()
	regions := []string{"eu", "us", "ap"}
	parts := map[string]lookup.Store{"eu": memstore.New(), "us": memstore.New()} // ap has none yet
	view := func(self string) *lookup.Partitioned {
		var conflicts int
		p, err := lookup.NewPartitioned(self, parts[self], regions, func(_ context.Context, r string) (lookup.Store, error) {
			if s, ok := parts[r]; ok {
				return s, nil
			}
			return nil, lookup.ErrNoPartition
		}, func(lookup.Key, []string) { conflicts++ })
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	var k1, k2 lookup.Key
	k1[0], k2[0] = 1, 2
	eu, us := view("eu"), view("us")
	if err := us.Put(ctx, k1, "us"); err != nil {
		t.Fatal(err)
	}
	if err := eu.Put(ctx, k1, "us"); !errors.Is(err, lookup.ErrForeignEntry) {
		t.Fatalf("eu put pointing to us: %v", err)
	}
	if err := eu.PutMany(ctx, []lookup.Entry{{Key: k2, Region: "eu"}, {Key: k1, Region: "us"}}); !errors.Is(err, lookup.ErrForeignEntry) {
		t.Fatalf("eu put many with a foreign entry: %v", err)
	}
	if err := eu.Delete(ctx, k1); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("eu delete of us's entry: %v", err)
	}
	if r, err := eu.Get(ctx, k1); err != nil || r != "us" {
		t.Fatalf("k1 from eu: %q %v", r, err)
	}
	// An entry naming us in eu's partition does not count.
	if err := parts["eu"].Put(ctx, k2, "us"); err != nil {
		t.Fatal(err)
	}
	if _, err := us.Get(ctx, k2); !errors.Is(err, lookup.ErrNotFound) || errors.Is(err, lookup.ErrConflict) {
		t.Fatalf("shadow entry: %v", err)
	}
	// eu claims us's user: a conflict, never eu.
	if err := eu.Put(ctx, k1, "eu"); err != nil {
		t.Fatal(err)
	}
	if r, err := us.Get(ctx, k1); !errors.Is(err, lookup.ErrConflict) || !errors.Is(err, lookup.ErrNotFound) || r != "" {
		t.Fatalf("conflicted key: %q %v", r, err)
	}
	if got, err := us.GetMany(ctx, []lookup.Key{k1, k2}); err != nil || got[0] != "us" || got[1] != "" {
		t.Fatalf("GetMany from us: %v %v", got, err)
	}
	var n int
	if err := us.Scan(ctx, func(e lookup.Entry) error { n++; return nil }); err != nil || n != 2 {
		t.Fatalf("scan: %d entries %v", n, err)
	}
	// ap's partition appears later and is read from then on.
	parts["ap"] = memstore.New()
	if err := view("ap").Put(ctx, k2, "ap"); err != nil {
		t.Fatal(err)
	}
	if r, err := eu.Get(ctx, k2); err != nil || r != "ap" {
		t.Fatalf("k2 after ap's partition appeared: %q %v", r, err)
	}
}
