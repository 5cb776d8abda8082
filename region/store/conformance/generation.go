package conformance

import (
	"context"
	"sync"
	"testing"

	"github.com/meridian-id/meridian/region/store"
)

func replication(t *testing.T, s store.Store) store.Replication {
	r, ok := s.(store.Replication)
	if !ok {
		t.Fatalf("%T does not implement store.Replication", s)
	}
	return r
}

// testGeneration walks a database through a failover: claimed by the
// primary, taken over, fenced; a fence only ever rises.
func testGeneration(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := replication(t, s)
	if in, err := r.InRecovery(ctx); err != nil || in {
		t.Fatalf("InRecovery on a writable database = %v, %v", in, err)
	}
	if err := r.CheckSchema(ctx); err != nil {
		t.Fatalf("CheckSchema on a migrated database: %v", err)
	}
	g, err := r.Generation(ctx)
	if err != nil || g.Number != 0 || g.Holder != "" || g.Fenced() {
		t.Fatalf("fresh generation = %+v, %v", g, err)
	}
	g, err = r.ClaimGeneration(ctx, "eu.example")
	if err != nil || g.Number != 1 || g.Holder != "eu.example" {
		t.Fatalf("first claim = %+v, %v", g, err)
	}
	if g2, err := r.ClaimGeneration(ctx, "eu.example"); err != nil || g2.Number != 1 {
		t.Fatalf("claim by the holder must not advance: %+v, %v", g2, err)
	}
	g, err = r.ClaimGeneration(ctx, "eu-dr.example")
	if err != nil || g.Number != 2 || g.Holder != "eu-dr.example" || g.Fenced() {
		t.Fatalf("takeover = %+v, %v", g, err)
	}
	g, err = r.Fence(ctx, 5, "eu.example")
	if err != nil || !g.Fenced() || g.FencedBy != 5 || g.FencedHolder != "eu.example" {
		t.Fatalf("fence = %+v, %v", g, err)
	}
	if g, err = r.Fence(ctx, 3, "other"); err != nil || g.FencedBy != 5 || g.FencedHolder != "eu.example" {
		t.Fatalf("a lower fence must not replace a higher one: %+v, %v", g, err)
	}
	if g, err = r.ClaimGeneration(ctx, "eu.example"); err != nil || !g.Fenced() {
		t.Fatalf("a claim must not clear the fence: %+v, %v", g, err)
	}
	if got, err := r.Generation(ctx); err != nil || got != g {
		t.Fatalf("Generation = %+v, %v; want %+v", got, err, g)
	}
}

// testConcurrentClaim: many nodes of one site starting at once advance the
// generation exactly once.
func testConcurrentClaim(t *testing.T, s store.Store) {
	ctx := context.Background()
	r := replication(t, s)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.ClaimGeneration(ctx, "eu.example"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if g, err := r.Generation(ctx); err != nil || g.Number != 1 {
		t.Fatalf("after %d concurrent claims: %+v, %v", n, g, err)
	}
}
