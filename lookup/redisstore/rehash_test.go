package redisstore_test

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// TestRehash resizes a table on the real Redis while other Stores on the
// same prefix (other hub processes, opened before the rehash began) keep
// reading and writing: it stops half-way, resumes from another Store, and
// checks that every acknowledged write is there, every delete stays
// deleted, nothing is left under the old bucket count and no tombstone
// survives. It runs once on a table with the current key naming and once on
// a legacy (layout 1) table, the shape of tables created before the layout
// was versioned.
func TestRehash(t *testing.T) {
	for _, tc := range []struct {
		name     string
		legacy   bool
		from, to int
	}{
		{"grow", false, 8, 10},
		{"shrink", false, 10, 9},
		{"legacy-grow", true, 8, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testRehash(t, client(t), tc.legacy, tc.from, tc.to)
		})
	}
}

func testRehash(t *testing.T, c redis.UniversalClient, legacy bool, from, to int) {
	ctx := context.Background()
	p := prefix(t)
	if legacy {
		if err := c.HSet(ctx, p+"meta", "bucket_bits", from, "layout", "1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	a := newStore(t, c, redisstore.Options{Prefix: p, BucketBits: from, BatchSize: 300})
	if legacy && !strings.HasSuffix(a.BucketKeys()[5], "{b:5}") {
		t.Fatalf("legacy bucket key %q", a.BucketKeys()[5])
	}
	want := map[lookup.Key]string{}
	entries := randomEntriesT(t, 6000)
	if err := a.PutMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		want[e.Key] = e.Region
	}
	// b and stale are other processes that opened the table before the
	// rehash began.
	b, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, ExpectedUsers: 6000})
	if err != nil {
		t.Fatal(err)
	}
	stale, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p})
	if err != nil {
		t.Fatal(err)
	}

	// Half the old buckets, then stop.
	half := 1 << (from - 1)
	var last redisstore.RehashProgress
	err = a.Rehash(ctx, to, half, func(p redisstore.RehashProgress) { last = p })
	if !errors.Is(err, redisstore.ErrRehashStopped) {
		t.Fatalf("Rehash(stopAfter) = %v, want ErrRehashStopped", err)
	}
	if l, err := a.Layout(ctx); err != nil || last.Phase != "move" || last.Done != uint32(half) || l.RehashBits != to {
		t.Fatalf("progress %+v, layout %+v, %v", last, l, err)
	}
	if err := a.Rehash(ctx, to+3, 0, nil); err == nil {
		t.Fatal("a second rehash to another size was accepted while one runs")
	}
	checkAll(t, "mid-rehash, stale store", stale, want)

	// Writes mid-rehash from a Store that has not seen it (it learns after
	// the write) and from one that has.
	more := randomEntriesT(t, 500)
	if err := stale.PutMany(ctx, more); err != nil {
		t.Fatal(err)
	}
	for _, e := range more {
		want[e.Key] = e.Region
	}
	for i, e := range entries[:300] {
		switch i % 3 {
		case 0:
			if err := b.Delete(ctx, e.Key); err != nil {
				t.Fatalf("Delete mid-rehash: %v", err)
			}
			delete(want, e.Key)
		case 1:
			if err := b.Put(ctx, e.Key, "zz"); err != nil {
				t.Fatal(err)
			}
			want[e.Key] = "zz"
		}
	}
	if err := b.Delete(ctx, lookup.Key{0xff, 0xfe}); !errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("Delete of absent key mid-rehash = %v, want ErrNotFound", err)
	}
	checkAll(t, "mid-rehash", a, want)
	checkScan(t, "mid-rehash", b, want)

	// Resume from another process, with a writer running concurrently.
	var wg sync.WaitGroup
	var mu sync.Mutex
	concurrent := randomEntriesT(t, 2000)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for start := 0; start < len(concurrent); start += 100 {
			if err := stale.PutMany(ctx, concurrent[start:start+100]); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			for _, e := range concurrent[start : start+100] {
				want[e.Key] = e.Region
			}
			mu.Unlock()
		}
	}()
	if err := b.Rehash(ctx, to, 0, nil); err != nil {
		t.Fatalf("resumed Rehash: %v", err)
	}
	wg.Wait()
	if err := b.Rehash(ctx, to, 0, nil); err != nil {
		t.Fatalf("Rehash after completion: %v", err)
	}

	for name, s := range map[string]*redisstore.Store{"a": a, "b": b, "stale": stale} {
		checkAll(t, "after rehash, store "+name, s, want)
	}
	if l, err := a.Layout(ctx); err != nil || l.BucketBits != to || l.RehashBits != 0 {
		t.Fatalf("layout after rehash %+v, %v", l, err)
	}
	checkScan(t, "after rehash", a, want)
	st, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Buckets != 1<<to || st.Entries != len(want) {
		t.Fatalf("Stats %+v, want %d buckets and %d entries (no tombstones left)", st, 1<<to, len(want))
	}
	keys, err := scanKeys(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	newTag := fmt.Sprintf("{b%d:", to)
	for _, k := range keys {
		if k != p+"meta" && !strings.Contains(k, newTag) {
			t.Fatalf("key %q left outside the new layout", k)
		}
	}
}

func randomEntriesT(t *testing.T, n int) []lookup.Entry {
	t.Helper()
	regions := []string{"eu", "us", "ap"}
	out := make([]lookup.Entry, n)
	for i := range out {
		out[i] = lookup.Entry{Key: randomKey(t), Region: regions[i%3]}
	}
	return out
}

func randomKey(t *testing.T) lookup.Key {
	t.Helper()
	var k lookup.Key
	if _, err := crand.Read(k[:]); err != nil {
		t.Fatal(err)
	}
	return k
}

// checkAll reads every wanted key with Get (a sample) and GetMany (all).
func checkAll(t *testing.T, when string, s *redisstore.Store, want map[lookup.Key]string) {
	t.Helper()
	ctx := context.Background()
	keys := make([]lookup.Key, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	got, err := s.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("%s: GetMany: %v", when, err)
	}
	for i, k := range keys {
		if got[i] != want[k] {
			t.Fatalf("%s: GetMany[%s] = %q, want %q", when, k, got[i], want[k])
		}
	}
	for _, k := range keys[:50] {
		if r, err := s.Get(ctx, k); err != nil || r != want[k] {
			t.Fatalf("%s: Get(%s) = %q, %v; want %q", when, k, r, err, want[k])
		}
	}
}

// checkScan checks that Scan visits exactly the wanted entries once.
func checkScan(t *testing.T, when string, s *redisstore.Store, want map[lookup.Key]string) {
	t.Helper()
	seen := map[lookup.Key]bool{}
	err := s.Scan(context.Background(), func(e lookup.Entry) error {
		if seen[e.Key] {
			return fmt.Errorf("%s visited twice", e.Key)
		}
		seen[e.Key] = true
		if want[e.Key] != e.Region {
			return fmt.Errorf("%s: region %q, want %q", e.Key, e.Region, want[e.Key])
		}
		return nil
	})
	if err != nil || len(seen) != len(want) {
		t.Fatalf("%s: Scan: %v; visited %d of %d", when, err, len(seen), len(want))
	}
}

// TestScanDuringRehashStart checks that a Scan overtaken by the start of a
// rehash says so instead of silently missing moved entries.
func TestScanDuringRehashStart(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	s := newStore(t, c, redisstore.Options{BucketBits: 8})
	if err := s.PutMany(ctx, randomEntriesT(t, 3000)); err != nil {
		t.Fatal(err)
	}
	other, err := redisstore.New(ctx, c, redisstore.Options{Prefix: strings.TrimSuffix(s.MetaKey(), "meta")})
	if err != nil {
		t.Fatal(err)
	}
	started := false
	err = s.Scan(ctx, func(lookup.Entry) error {
		if !started {
			started = true
			if err := other.Rehash(ctx, 9, 200, nil); !errors.Is(err, redisstore.ErrRehashStopped) {
				return err
			}
		}
		return nil
	})
	if !errors.Is(err, redisstore.ErrLayoutChanged) {
		t.Fatalf("Scan overtaken by a rehash = %v, want ErrLayoutChanged", err)
	}
	n := 0
	if err := s.Scan(ctx, func(lookup.Entry) error { n++; return nil }); err != nil || n != 3000 {
		t.Fatalf("Scan again = %v, %d entries; want 3000", err, n)
	}
}
