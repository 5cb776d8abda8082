// Package conformance is the shared test suite every lookup.Store
// implementation must pass. Call Run from the implementation's _test.go file.
package conformance

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/meridian-id/meridian/lookup"
)

// Run runs the conformance suite as subtests of t. newStore must return a
// fresh, empty Store for each call and arrange its own cleanup with
// t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) lookup.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s lookup.Store)
	}{
		{"Ping", testPing},
		{"NotFound", testNotFound},
		{"PutGet", testPutGet},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"InvalidRegion", testInvalidRegion},
		{"KeyEdgeCases", testKeyEdgeCases},
		{"Empty", testEmpty},
		{"Bulk", testBulk},
		{"Scan", testScan},
		{"ScanStop", testScanStop},
		{"Concurrency", testConcurrency},
		{"CanceledContext", testCanceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func randomKey(t *testing.T) lookup.Key {
	t.Helper()
	var k lookup.Key
	if _, err := rand.Read(k[:]); err != nil {
		t.Fatalf("rand: %v", err)
	}
	return k
}

func mustGet(t *testing.T, s lookup.Store, k lookup.Key, want string) {
	t.Helper()
	got, err := s.Get(context.Background(), k)
	if err != nil {
		t.Fatalf("Get(%s): %v", k, err)
	}
	if got != want {
		t.Fatalf("Get(%s) = %q, want %q", k, got, want)
	}
}

func mustNotFound(t *testing.T, s lookup.Store, k lookup.Key) {
	t.Helper()
	got, err := s.Get(context.Background(), k)
	if !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("Get(%s) = %q, %v; want ErrNotFound", k, got, err)
	}
}

func testPing(t *testing.T, s lookup.Store) {
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testNotFound(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	k := randomKey(t)
	mustNotFound(t, s, k)
	if err := s.Delete(ctx, k); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("Delete(missing) = %v, want ErrNotFound", err)
	}
	got, err := s.GetMany(ctx, []lookup.Key{k, randomKey(t)})
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if len(got) != 2 || got[0] != "" || got[1] != "" {
		t.Fatalf("GetMany(missing) = %q, want two empty strings", got)
	}
	if err := s.DeleteMany(ctx, []lookup.Key{k}); err != nil {
		t.Fatalf("DeleteMany(missing) = %v, want nil", err)
	}
}

func testPutGet(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	for _, region := range []string{"eu", "us", "ap", "x", "a-b-c-d-e-f-g-hi", "0", "127", "eu-west-2"} {
		k := randomKey(t)
		if err := s.Put(ctx, k, region); err != nil {
			t.Fatalf("Put(%q): %v", region, err)
		}
		mustGet(t, s, k, region)
	}
}

func testOverwrite(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	k := randomKey(t)
	for _, region := range []string{"eu", "us", "eu", "ap"} {
		if err := s.Put(ctx, k, region); err != nil {
			t.Fatalf("Put: %v", err)
		}
		mustGet(t, s, k, region)
	}
	if err := s.PutMany(ctx, []lookup.Entry{{Key: k, Region: "us"}, {Key: k, Region: "eu"}}); err != nil {
		t.Fatalf("PutMany: %v", err)
	}
	mustGet(t, s, k, "eu") // last write in a batch wins
}

func testDelete(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	k, other := randomKey(t), randomKey(t)
	for _, kk := range []lookup.Key{k, other} {
		if err := s.Put(ctx, kk, "eu"); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	mustNotFound(t, s, k)
	mustGet(t, s, other, "eu")
	if err := s.Delete(ctx, k); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("second Delete = %v, want ErrNotFound", err)
	}
	if err := s.Put(ctx, k, "us"); err != nil {
		t.Fatalf("Put after Delete: %v", err)
	}
	mustGet(t, s, k, "us")
}

func testInvalidRegion(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	for _, region := range []string{"", "EU", "eu_west", "eu west", strings.Repeat("a", 17), "é", "eu\x00"} {
		k := randomKey(t)
		if err := s.Put(ctx, k, region); !errors.Is(err, lookup.ErrInvalidRegion) {
			t.Errorf("Put(%q) = %v, want ErrInvalidRegion", region, err)
		}
		mustNotFound(t, s, k)
	}
	good := randomKey(t)
	err := s.PutMany(ctx, []lookup.Entry{{Key: good, Region: "eu"}, {Key: randomKey(t), Region: "BAD"}})
	if !errors.Is(err, lookup.ErrInvalidRegion) {
		t.Fatalf("PutMany with invalid region = %v, want ErrInvalidRegion", err)
	}
	mustNotFound(t, s, good) // validated before anything is written
}

// testKeyEdgeCases uses keys that share leading bytes (and so a bucket in
// bucketed layouts) or differ only in their first or last bit.
func testKeyEdgeCases(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	var zero, ones, last, first lookup.Key
	for i := range ones {
		ones[i] = 0xff
	}
	last[lookup.KeySize-1] = 1
	first[0] = 0x80
	keys := []lookup.Key{zero, ones, last, first}
	for i := range 8 {
		k := ones
		k[lookup.KeySize-1-i] = byte(i)
		keys = append(keys, k)
	}
	for i := range 8 {
		k := zero
		k[3] = byte(1 << i) // differs inside the bucket bits of most layouts
		keys = append(keys, k)
	}
	entries := make([]lookup.Entry, len(keys))
	regions := []string{"eu", "us", "ap"}
	for i, k := range keys {
		entries[i] = lookup.Entry{Key: k, Region: regions[i%3]}
	}
	if err := s.PutMany(ctx, entries); err != nil {
		t.Fatalf("PutMany: %v", err)
	}
	for _, e := range entries {
		mustGet(t, s, e.Key, e.Region)
	}
	seen := map[lookup.Key]string{}
	if err := s.Scan(ctx, func(e lookup.Entry) error {
		seen[e.Key] = e.Region
		return nil
	}); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(seen) != len(entries) {
		t.Fatalf("Scan saw %d entries, want %d", len(seen), len(entries))
	}
	for _, e := range entries {
		if seen[e.Key] != e.Region {
			t.Fatalf("Scan: %s = %q, want %q", e.Key, seen[e.Key], e.Region)
		}
	}
}

func testEmpty(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	if err := s.PutMany(ctx, nil); err != nil {
		t.Fatalf("PutMany(nil): %v", err)
	}
	if got, err := s.GetMany(ctx, nil); err != nil || len(got) != 0 {
		t.Fatalf("GetMany(nil) = %q, %v", got, err)
	}
	if err := s.DeleteMany(ctx, nil); err != nil {
		t.Fatalf("DeleteMany(nil): %v", err)
	}
	n := 0
	if err := s.Scan(ctx, func(lookup.Entry) error { n++; return nil }); err != nil || n != 0 {
		t.Fatalf("Scan(empty store) visited %d, err %v", n, err)
	}
}

// bulk writes n entries spread over three regions and returns them.
func bulk(t *testing.T, s lookup.Store, n int) []lookup.Entry {
	t.Helper()
	regions := []string{"eu", "us", "ap"}
	entries := make([]lookup.Entry, n)
	for i := range entries {
		entries[i] = lookup.Entry{Key: randomKey(t), Region: regions[i%len(regions)]}
	}
	if err := s.PutMany(context.Background(), entries); err != nil {
		t.Fatalf("PutMany(%d): %v", n, err)
	}
	return entries
}

func testBulk(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	entries := bulk(t, s, 2500) // more than two pipeline batches
	keys := make([]lookup.Key, 0, 2*len(entries))
	want := make([]string, 0, 2*len(entries))
	for _, e := range entries {
		keys = append(keys, e.Key, randomKey(t))
		want = append(want, e.Region, "")
	}
	got, err := s.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("GetMany returned %d results, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("GetMany[%d] = %q, want %q", i, got[i], want[i])
		}
	}
	mustGet(t, s, entries[1234].Key, entries[1234].Region)

	del := make([]lookup.Key, 0, len(entries)/2+1)
	for i := 0; i < len(entries); i += 2 {
		del = append(del, entries[i].Key)
	}
	del = append(del, randomKey(t)) // a missing key is ignored
	if err := s.DeleteMany(ctx, del); err != nil {
		t.Fatalf("DeleteMany: %v", err)
	}
	all := make([]lookup.Key, len(entries))
	for i, e := range entries {
		all[i] = e.Key
	}
	got, err = s.GetMany(ctx, all)
	if err != nil {
		t.Fatalf("GetMany after DeleteMany: %v", err)
	}
	for i, e := range entries {
		w := e.Region
		if i%2 == 0 {
			w = ""
		}
		if got[i] != w {
			t.Fatalf("after DeleteMany: entry %d = %q, want %q", i, got[i], w)
		}
	}
}

func testScan(t *testing.T, s lookup.Store) {
	entries := bulk(t, s, 1500)
	want := make(map[lookup.Key]string, len(entries))
	for _, e := range entries {
		want[e.Key] = e.Region
	}
	seen := make(map[lookup.Key]int, len(entries))
	err := s.Scan(context.Background(), func(e lookup.Entry) error {
		seen[e.Key]++
		if r, ok := want[e.Key]; !ok || r != e.Region {
			return fmt.Errorf("unexpected entry %s=%q (want %q, known %v)", e.Key, e.Region, r, ok)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if len(seen) != len(want) {
		t.Fatalf("Scan visited %d distinct keys, want %d", len(seen), len(want))
	}
	for k, n := range seen {
		if n != 1 {
			t.Fatalf("Scan visited %s %d times", k, n)
		}
	}
}

func testScanStop(t *testing.T, s lookup.Store) {
	bulk(t, s, 100)
	stop := errors.New("stop here")
	n := 0
	err := s.Scan(context.Background(), func(lookup.Entry) error {
		n++
		if n == 10 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("Scan = %v, want the callback's error", err)
	}
	if n != 10 {
		t.Fatalf("Scan called fn %d times after it failed at 10", n)
	}
}

func testConcurrency(t *testing.T, s lookup.Store) {
	ctx := context.Background()
	const workers, ops = 8, 50
	shared := randomKey(t)
	regions := []string{"eu", "us", "ap", "sa", "af", "me", "oc", "an"}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- func() error {
				region := regions[w]
				for i := range ops {
					var k lookup.Key
					if _, err := rand.Read(k[:]); err != nil {
						return err
					}
					if err := s.Put(ctx, k, region); err != nil {
						return fmt.Errorf("put: %w", err)
					}
					if got, err := s.Get(ctx, k); err != nil || got != region {
						return fmt.Errorf("get own key = %q, %v; want %q", got, err, region)
					}
					if err := s.Put(ctx, shared, region); err != nil {
						return fmt.Errorf("put shared: %w", err)
					}
					if got, err := s.Get(ctx, shared); err != nil || oneOf(got, regions) != nil {
						return fmt.Errorf("get shared = %q, %v", got, err)
					}
					if i%2 == 0 {
						if err := s.Delete(ctx, k); err != nil {
							return fmt.Errorf("delete: %w", err)
						}
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Get(ctx, shared)
	if err != nil || oneOf(got, regions) != nil {
		t.Fatalf("shared key = %q, %v; want one of %q", got, err, regions)
	}
	n := 0
	if err := s.Scan(ctx, func(lookup.Entry) error { n++; return nil }); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if want := workers*ops/2 + 1; n != want {
		t.Fatalf("Scan after concurrent writes saw %d entries, want %d", n, want)
	}
}

// oneOf returns nil if region is one of regions, an error otherwise.
func oneOf(region string, regions []string) error {
	for _, r := range regions {
		if r == region {
			return nil
		}
	}
	return fmt.Errorf("region %q not in %q", region, regions)
}

func testCanceled(t *testing.T, s lookup.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	k := randomKey(t)
	if _, err := s.Get(ctx, k); err == nil {
		t.Errorf("Get with canceled context succeeded")
	}
	if err := s.Put(ctx, k, "eu"); err == nil {
		t.Errorf("Put with canceled context succeeded")
	}
	if err := s.PutMany(ctx, []lookup.Entry{{Key: k, Region: "eu"}}); err == nil {
		t.Errorf("PutMany with canceled context succeeded")
	}
	if err := s.Scan(ctx, func(lookup.Entry) error { return nil }); err == nil {
		t.Errorf("Scan with canceled context succeeded")
	}
}
