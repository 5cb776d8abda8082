package redisstore_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// TestTableRotationOnRedis runs the rotation path of lookup.Table against the
// real Redis.
func TestTableRotationOnRedis(t *testing.T) {
	ctx := context.Background()
	s := newStore(t, client(t), redisstore.Options{BucketBits: 8})
	keyA := []byte("redis rotation test key A, 32+ bytes")
	keyB := []byte("redis rotation test key B, 32+ bytes")
	hA, _ := lookup.NewHasher(keyA, nil)
	hAB, _ := lookup.NewHasher(keyB, keyA)
	hB, _ := lookup.NewHasher(keyB, nil)
	old, _ := lookup.NewTable(hA, s)
	rot, _ := lookup.NewTable(hAB, s)
	done, _ := lookup.NewTable(hB, s)

	if err := old.Assign(ctx, "Ünïcode", "eu"); err != nil {
		t.Fatal(err)
	}
	if r, err := rot.Resolve(ctx, "ÜNÏCODE"); err != nil || r != "eu" {
		t.Fatalf("rotating Resolve = %q, %v", r, err)
	}
	if _, err := done.Resolve(ctx, "ünïcode"); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("new-key-only Resolve before Rehash = %v", err)
	}
	rep, err := rot.Rehash(ctx, "eu", slices.Values([]string{"ünïcode"}))
	if err != nil || rep.Migrated != 1 {
		t.Fatalf("Rehash = %+v, %v", rep, err)
	}
	if r, err := done.Resolve(ctx, "ÜNÏCODE"); err != nil || r != "eu" {
		t.Fatalf("new-key-only Resolve after Rehash = %q, %v", r, err)
	}
	rep, err = rot.FinishRotation(ctx, slices.Values([]string{"ünïcode"}))
	if err != nil || rep.Dropped != 1 {
		t.Fatalf("FinishRotation = %+v, %v", rep, err)
	}
	if _, err := old.Resolve(ctx, "ünïcode"); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("old-key entry survived FinishRotation: %v", err)
	}
}
