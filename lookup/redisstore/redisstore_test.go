package redisstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/conformance"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// client returns a client for the shared test Redis, closed at cleanup.
func client(tb testing.TB) redis.UniversalClient {
	tb.Helper()
	return testenv.RedisClient(tb)
}

// prefix returns a key prefix no other test uses.
func prefix(tb testing.TB) string {
	tb.Helper()
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	name := strings.NewReplacer("/", ".", " ", "_", "*", "_", "?", "_", "[", "_", "]", "_").Replace(tb.Name())
	return fmt.Sprintf("meridian:test:lookup:%s:%s:", name, hex.EncodeToString(b[:]))
}

// newStore opens a Store on a fresh prefix and drops it at cleanup.
func newStore(tb testing.TB, c redis.UniversalClient, opts redisstore.Options) *redisstore.Store {
	tb.Helper()
	if opts.Prefix == "" {
		opts.Prefix = prefix(tb)
	}
	s, err := redisstore.New(context.Background(), c, opts)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Drop(context.Background()); err != nil {
			tb.Errorf("Drop: %v", err)
		}
		assertNoKeys(tb, c, opts.Prefix)
	})
	return s
}

// assertNoKeys checks that nothing is left under prefix.
func assertNoKeys(tb testing.TB, c redis.UniversalClient, prefix string) {
	tb.Helper()
	keys, err := scanKeys(context.Background(), c, prefix)
	if err != nil {
		tb.Errorf("scan %s: %v", prefix, err)
		return
	}
	if len(keys) != 0 {
		tb.Errorf("%d keys left under %s after Drop", len(keys), prefix)
	}
}

// scanKeys lists the keys under prefix (which must contain no glob
// metacharacters).
func scanKeys(ctx context.Context, c redis.UniversalClient, prefix string) ([]string, error) {
	if cc, ok := c.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		var keys []string
		err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			k, err := scanKeys(ctx, n, prefix)
			mu.Lock()
			keys = append(keys, k...)
			mu.Unlock()
			return err
		})
		return keys, err
	}
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	return keys, iter.Err()
}

func TestConformance(t *testing.T) {
	c := client(t)
	for _, bits := range []int{8, 13, 17} {
		t.Run(fmt.Sprintf("BucketBits=%d", bits), func(t *testing.T) {
			conformance.Run(t, func(t *testing.T) lookup.Store {
				return newStore(t, c, redisstore.Options{BucketBits: bits, BatchSize: 700})
			})
		})
	}
}

func TestNewValidation(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	for _, o := range []redisstore.Options{
		{},
		{Prefix: "x:", BucketBits: 7},
		{Prefix: "x:", BucketBits: 25},
		{Prefix: "x:", BatchSize: -1},
	} {
		if _, err := redisstore.New(ctx, c, o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
	if _, err := redisstore.New(ctx, nil, redisstore.Options{Prefix: "x:"}); err == nil {
		t.Error("New(nil client) succeeded")
	}
}

func TestLayoutMismatch(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	s := newStore(t, c, redisstore.Options{BucketBits: 10})
	p := strings.TrimSuffix(s.MetaKey(), "meta")
	if _, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, BucketBits: 11}); !errors.Is(err, redisstore.ErrLayoutMismatch) {
		t.Fatalf("New with other BucketBits = %v, want ErrLayoutMismatch", err)
	}
	if _, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, BucketBits: 10}); err != nil {
		t.Fatalf("New with same BucketBits: %v", err)
	}
	// Sized from configuration, an existing table keeps its size and says
	// that it wants another one.
	o, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, ExpectedUsers: 10_000_000})
	if err != nil {
		t.Fatalf("New with ExpectedUsers: %v", err)
	}
	if got, err := o.Layout(ctx); err != nil || got != (redisstore.Layout{BucketBits: 10, WantBits: 17}) {
		t.Fatalf("Layout = %+v, %v; want 10 bits stored, 17 wanted", got, err)
	}
}

func TestBucketBitsFor(t *testing.T) {
	for _, tc := range []struct {
		users int64
		bits  int
	}{
		{0, 8}, {1000, 8}, {20480, 8}, {20481, 9},
		{1_000_000, 14}, {1_310_720, 14}, {10_000_000, 17}, {1 << 40, 24},
	} {
		if got := redisstore.BucketBitsFor(tc.users); got != tc.bits {
			t.Errorf("BucketBitsFor(%d) = %d, want %d", tc.users, got, tc.bits)
		}
	}
}

// TestRegionCodesStable checks that region codes live in Redis, are shared
// by every Store on the prefix whatever order regions appear in, and that a
// Store decodes codes another process registered after it started.
func TestRegionCodesStable(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	a := newStore(t, c, redisstore.Options{BucketBits: 8})
	p := strings.TrimSuffix(a.MetaKey(), "meta")
	if err := a.Put(ctx, lookup.Key{1}, "eu"); err != nil {
		t.Fatal(err)
	}
	if err := a.Put(ctx, lookup.Key{2}, "us"); err != nil {
		t.Fatal(err)
	}
	b, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, BucketBits: 8})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.PutMany(ctx, []lookup.Entry{{Key: lookup.Key{3}, Region: "ap"}, {Key: lookup.Key{4}, Region: "us"}}); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[byte]string{1: "eu", 2: "us", 3: "ap", 4: "us"} {
		for name, s := range map[string]*redisstore.Store{"a": a, "b": b} {
			if got, err := s.Get(ctx, lookup.Key{k}); err != nil || got != want {
				t.Errorf("store %s: Get(%d) = %q, %v; want %q", name, k, got, err, want)
			}
		}
	}
	meta, err := c.HGetAll(ctx, a.MetaKey()).Result()
	if err != nil {
		t.Fatal(err)
	}
	for field, want := range map[string]string{
		"region:eu": "1", "region:us": "2", "region:ap": "3",
		"code:1": "eu", "code:2": "us", "code:3": "ap", "next_code": "3", "bucket_bits": "8",
	} {
		if meta[field] != want {
			t.Errorf("meta %s = %q, want %q", field, meta[field], want)
		}
	}
	// The stored value is the code, not the id: Key{1} is in bucket 1 (8
	// bucket bits) under the field of its 15 remaining zero bytes.
	v, err := c.HGet(ctx, a.BucketKeys()[1], string(make([]byte, lookup.KeySize-1))).Result()
	if err != nil || v != "1" {
		t.Errorf("raw value of Key{1} = %q, %v; want code \"1\"", v, err)
	}
}

// TestUnknownCode checks that a damaged value is reported, not mis-decoded.
func TestUnknownCode(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	s := newStore(t, c, redisstore.Options{BucketBits: 8})
	k := lookup.Key{7, 1}
	if err := c.HSet(ctx, s.BucketKeys()[7], string(k[1:]), "99").Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := s.Get(ctx, k); err == nil || errors.Is(err, lookup.ErrNotFound) {
		t.Fatalf("Get of unknown code = %q, %v; want a corruption error", r, err)
	}
}

// TestListpackLayout fills one bucket to the listpack limit and checks the
// encoding Redis chose and the field size.
func TestListpackLayout(t *testing.T) {
	c := client(t)
	ctx := context.Background()
	for _, bits := range []int{14, 17} {
		s := newStore(t, c, redisstore.Options{BucketBits: bits})
		entries := make([]lookup.Entry, redisstore.ListpackEntries)
		for i := range entries {
			var k lookup.Key
			if _, err := rand.Read(k[:]); err != nil {
				t.Fatal(err)
			}
			k[0], k[1], k[2] = 0xab, 0xcd, 0x00 // same bucket for both sizes
			entries[i] = lookup.Entry{Key: k, Region: "eu"}
		}
		if err := s.PutMany(ctx, entries); err != nil {
			t.Fatal(err)
		}
		st, err := s.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Entries != len(entries) || st.MaxBucket != len(entries) || st.Overfull != 0 || st.Buckets != 1<<bits {
			t.Fatalf("bits %d: Stats = %+v", bits, st)
		}
		bucketKey := s.BucketKeys()[uint32(0xabcd00)>>(24-bits)]
		if n, err := c.HLen(ctx, bucketKey).Result(); err != nil || n != int64(len(entries)) {
			t.Fatalf("bits %d: HLEN %s = %d, %v; want %d", bits, bucketKey, n, err, len(entries))
		}
		if want := fmt.Sprintf("{b%d:%x}", bits, uint32(0xabcd00)>>(24-bits)); !strings.HasSuffix(bucketKey, want) {
			t.Fatalf("bits %d: bucket key %q, want suffix %q", bits, bucketKey, want)
		}
		enc, err := c.ObjectEncoding(ctx, bucketKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		if enc != "listpack" && enc != "ziplist" {
			t.Errorf("bits %d: bucket encoding %q, want listpack", bits, enc)
		}
		fields, err := c.HKeys(ctx, bucketKey).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range fields {
			if len(f) != lookup.KeySize-bits/8 {
				t.Fatalf("bits %d: field of %d bytes, want %d", bits, len(f), lookup.KeySize-bits/8)
			}
		}
	}
}
