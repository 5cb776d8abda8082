package redisstore_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// compareUsers is the table size of BenchmarkLookupVsNaive.
const compareUsers = 100_000

// naiveKey is the key of k in the naive layout: one string key per user,
// the hex Key under a prefix, holding the region id.
func naiveKey(prefix string, k *lookup.Key) string {
	return prefix + hex.EncodeToString(k[:])
}

// naiveLayout writes entries as one SET per user and returns the sum of
// MEMORY USAGE over its keys; the keys are deleted at cleanup.
func naiveLayout(b *testing.B, c redis.UniversalClient, prefix string, entries []lookup.Entry) int64 {
	b.Helper()
	ctx := context.Background()
	b.Cleanup(func() {
		for start := 0; start < len(entries); start += 1000 {
			p := c.Pipeline()
			for _, e := range entries[start:min(start+1000, len(entries))] {
				p.Unlink(ctx, naiveKey(prefix, &e.Key))
			}
			if _, err := p.Exec(ctx); err != nil {
				b.Errorf("cleanup: %v", err)
				return
			}
		}
	})
	var usage int64
	for start := 0; start < len(entries); start += 1000 {
		chunk := entries[start:min(start+1000, len(entries))]
		p := c.Pipeline()
		for _, e := range chunk {
			p.Set(ctx, naiveKey(prefix, &e.Key), e.Region, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		p = c.Pipeline()
		mem := make([]*redis.IntCmd, len(chunk))
		for i, e := range chunk {
			mem[i] = p.MemoryUsage(ctx, naiveKey(prefix, &e.Key), 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			b.Fatal(err)
		}
		for _, m := range mem {
			usage += m.Val()
		}
	}
	return usage
}

// bucketMemory returns the sum of MEMORY USAGE over the Store's buckets.
func bucketMemory(b *testing.B, c redis.UniversalClient, s *redisstore.Store) int64 {
	b.Helper()
	ctx := context.Background()
	var usage int64
	keys := s.BucketKeys()
	for start := 0; start < len(keys); start += 1000 {
		p := c.Pipeline()
		var mem []*redis.IntCmd
		for _, k := range keys[start:min(start+1000, len(keys))] {
			mem = append(mem, p.MemoryUsage(ctx, k, 0))
		}
		_, _ = p.Exec(ctx)
		for _, m := range mem {
			if v, err := m.Result(); err == nil {
				usage += v
			} else if !errors.Is(err, redis.Nil) {
				b.Fatal(err)
			}
		}
	}
	return usage
}

// redisCPU returns the CPU seconds the Redis server's main thread, which
// runs every command, has used so far (INFO cpu). Its difference over a
// sub-benchmark divided by the lookups made is what the layout costs the
// server per lookup: parsing, the command and the reply, without the
// client's share of the wall clock.
func redisCPU(b *testing.B, c redis.UniversalClient) float64 {
	b.Helper()
	info, err := c.Info(context.Background(), "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	found := 0
	for _, line := range strings.Split(info, "\r\n") {
		name, v, ok := strings.Cut(line, ":")
		if ok && (name == "used_cpu_user_main_thread" || name == "used_cpu_sys_main_thread") {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				b.Fatalf("INFO cpu %s: %v", name, err)
			}
			sum += f
			found++
		}
	}
	if found != 2 {
		b.Skip("INFO cpu has no main-thread CPU figures (Redis < 7)")
	}
	return sum
}

// BenchmarkLookupVsNaive compares, in one run against the same Redis and
// the same client, pipelined lookups of this package's bucket layout
// (Store.GetMany) with pipelined GETs of a naive layout holding one string
// key per user, on the same 100k users and the same random key sequence.
// Each sub-benchmark reports lookups/s and the layout's bytes/user (sum of
// MEMORY USAGE). Run both together and compare ratios:
//
//	go test ./lookup/redisstore/ -run '^$' -bench LookupVsNaive -benchtime 2s -count 5
func BenchmarkLookupVsNaive(b *testing.B) {
	c := client(b)
	ctx := context.Background()
	entries := randomEntries(b, compareUsers)
	keys := make([]lookup.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	s := newStore(b, c, redisstore.Options{ExpectedUsers: compareUsers})
	if err := s.PutMany(ctx, entries); err != nil {
		b.Fatal(err)
	}
	bucketBytes := bucketMemory(b, c, s)
	np := prefix(b) + "naive:"
	naiveBytes := naiveLayout(b, c, np, entries)

	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("layout=naive-GET/batch=%d", batch), func(b *testing.B) {
			r := rand.New(rand.NewPCG(3, uint64(batch)))
			cmds := make([]*redis.StringCmd, batch)
			n := 0
			cpu0 := redisCPU(b, c)
			start := time.Now()
			for b.Loop() {
				p := c.Pipeline()
				for i := range cmds {
					cmds[i] = p.Get(ctx, naiveKey(np, &keys[r.IntN(len(keys))]))
				}
				if _, err := p.Exec(ctx); err != nil {
					b.Fatal(err)
				}
				for _, cmd := range cmds {
					if cmd.Val() == "" {
						b.Fatal("preloaded key not found")
					}
				}
				n += batch
			}
			perSecond(b, n, time.Since(start), "lookups/s")
			b.ReportMetric((redisCPU(b, c)-cpu0)*1e6/float64(n), "redis-µs/lookup")
			b.ReportMetric(float64(naiveBytes)/compareUsers, "B/user")
		})
		{
			b.Run(fmt.Sprintf("layout=buckets/batch=%d", batch), func(b *testing.B) {
				r := rand.New(rand.NewPCG(3, uint64(batch)))
				q := make([]lookup.Key, batch)
				n := 0
				cpu0 := redisCPU(b, c)
				start := time.Now()
				for b.Loop() {
					for i := range q {
						q[i] = keys[r.IntN(len(keys))]
					}
					got, err := s.GetMany(ctx, q)
					if err != nil {
						b.Fatal(err)
					}
					for _, g := range got {
						if g == "" {
							b.Fatal("preloaded key not found")
						}
					}
					n += batch
				}
				perSecond(b, n, time.Since(start), "lookups/s")
				b.ReportMetric((redisCPU(b, c)-cpu0)*1e6/float64(n), "redis-µs/lookup")
				b.ReportMetric(float64(bucketBytes)/compareUsers, "B/user")
			})
		}
	}
}
