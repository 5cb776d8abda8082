package redisstore_test

import (
	"context"
	crand "crypto/rand"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

const benchUsers = 100_000

// benchStore returns a Store preloaded with benchUsers random entries and
// their keys.
func benchStore(b *testing.B) (*redisstore.Store, []lookup.Key) {
	b.Helper()
	s := newStore(b, client(b), redisstore.Options{BucketBits: redisstore.BucketBitsFor(benchUsers)})
	entries := randomEntries(b, benchUsers)
	if err := s.PutMany(context.Background(), entries); err != nil {
		b.Fatal(err)
	}
	keys := make([]lookup.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	return s, keys
}

func randomEntries(b *testing.B, n int) []lookup.Entry {
	b.Helper()
	regions := []string{"eu", "us", "ap"}
	entries := make([]lookup.Entry, n)
	for i := range entries {
		if _, err := crand.Read(entries[i].Key[:]); err != nil {
			b.Fatal(err)
		}
		entries[i].Region = regions[i%3]
	}
	return entries
}

func perSecond(b *testing.B, n int, elapsed time.Duration, unit string) {
	b.ReportMetric(float64(n)/elapsed.Seconds(), unit)
}

// BenchmarkRedisGet: one HGET round trip per lookup, one goroutine.
func BenchmarkRedisGet(b *testing.B) {
	s, keys := benchStore(b)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(1, 1))
	n := 0
	start := time.Now()
	for b.Loop() {
		if _, err := s.Get(ctx, keys[r.IntN(len(keys))]); err != nil {
			b.Fatal(err)
		}
		n++
	}
	perSecond(b, n, time.Since(start), "lookups/s")
}

// BenchmarkRedisGetParallel: single lookups from GOMAXPROCS*8 goroutines
// sharing the client's connection pool, like concurrent logins on a hub.
func BenchmarkRedisGetParallel(b *testing.B) {
	s, keys := benchStore(b)
	ctx := context.Background()
	b.SetParallelism(8)
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			if _, err := s.Get(ctx, keys[r.IntN(len(keys))]); err != nil {
				b.Error(err)
				return
			}
		}
	})
	perSecond(b, b.N, time.Since(start), "lookups/s")
}

// BenchmarkRedisGetPipelined: GetMany of 1000 keys per op (one pipeline).
func BenchmarkRedisGetPipelined(b *testing.B) {
	s, keys := benchStore(b)
	ctx := context.Background()
	const batch = 1000
	r := rand.New(rand.NewPCG(2, 2))
	q := make([]lookup.Key, batch)
	n := 0
	start := time.Now()
	for b.Loop() {
		for i := range q {
			q[i] = keys[r.IntN(len(keys))]
		}
		got, err := s.GetMany(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if got[0] == "" {
			b.Fatal("preloaded key not found")
		}
		n += batch
	}
	perSecond(b, n, time.Since(start), "lookups/s")
}

// BenchmarkRedisPutMany: pipelined import of 1000 fresh entries per op.
func BenchmarkRedisPutMany(b *testing.B) {
	s := newStore(b, client(b), redisstore.Options{BucketBits: redisstore.BucketBitsFor(benchUsers)})
	ctx := context.Background()
	const batch = 1000
	n := 0
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		entries := randomEntries(b, batch)
		b.StartTimer()
		start := time.Now()
		if err := s.PutMany(ctx, entries); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		n += batch
	}
	perSecond(b, n, elapsed, "entries/s")
}

// BenchmarkTableImport: lookup.Table.Import (normalize + HMAC + PutMany) of
// 10,000 users per op.
func BenchmarkTableImport(b *testing.B) {
	s := newStore(b, client(b), redisstore.Options{BucketBits: redisstore.BucketBitsFor(benchUsers)})
	h, err := lookup.NewHasher([]byte("benchmark hub key, 32 bytes or more"), nil)
	if err != nil {
		b.Fatal(err)
	}
	tb, err := lookup.NewTable(h, s)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const batch = 10_000
	n := 0
	start := time.Now()
	for b.Loop() {
		if _, err := tb.Import(ctx, scaleUsers(batch), nil); err != nil {
			b.Fatal(err)
		}
		n += batch
	}
	perSecond(b, n, time.Since(start), "users/s")
}
