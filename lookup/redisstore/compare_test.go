package redisstore_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// compareUsers is the default table size of BenchmarkLookupVsNaive;
// MERIDIAN_LOOKUP_COMPARE_USERS overrides it.
const compareUsers = 100_000

// compareSize returns the table size of BenchmarkLookupVsNaive.
func compareSize(b *testing.B) int {
	b.Helper()
	env := os.Getenv("MERIDIAN_LOOKUP_COMPARE_USERS")
	if env == "" {
		return compareUsers
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 {
		b.Fatalf("MERIDIAN_LOOKUP_COMPARE_USERS=%q: want a positive integer", env)
	}
	return n
}

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

// naiveClient returns a client on the same Redis as client(b) but on
// another database: MERIDIAN_LOOKUP_NAIVE_DB, by default the test database
// plus one (minus one for database 15). Each layout so has the keyspace it
// would have in a deployment: the naive layout's million keys do not
// lengthen the bucket layout's key lookups, nor the other way round.
// Setting MERIDIAN_LOOKUP_NAIVE_DB to the test database measures both in
// one keyspace.
func naiveClient(b *testing.B) redis.UniversalClient {
	b.Helper()
	o := testenv.RedisOptions(b)
	db := o.DB + 1
	if db > 15 {
		db = o.DB - 1
	}
	if env := os.Getenv("MERIDIAN_LOOKUP_NAIVE_DB"); env != "" {
		n, err := strconv.Atoi(env)
		if err != nil || n < 0 {
			b.Fatalf("MERIDIAN_LOOKUP_NAIVE_DB=%q: want a database number", env)
		}
		db = n
	}
	o.DB = db
	c := redis.NewClient(o)
	b.Cleanup(func() { _ = c.Close() })
	return c
}

// BenchmarkLookupVsNaive compares, in one run against the same Redis,
// pipelined lookups of this package's bucket layout (Store.GetMany) with
// pipelined GETs of a naive layout holding one string key per user (in a
// database of its own, see naiveClient), on the same users
// (MERIDIAN_LOOKUP_COMPARE_USERS, default 100k) and the same random key
// sequence. Each sub-benchmark reports lookups/s, the Redis main thread's
// CPU per lookup and the layout's bytes/user (sum of MEMORY USAGE). Run
// both together and compare ratios:
//
//	go test ./lookup/redisstore/ -run '^$' -bench LookupVsNaive -benchtime 2s -count 5
func BenchmarkLookupVsNaive(b *testing.B) {
	c := client(b)
	nc := naiveClient(b)
	ctx := context.Background()
	users := compareSize(b)
	entries := randomEntries(b, users)
	keys := make([]lookup.Key, len(entries))
	for i, e := range entries {
		keys[i] = e.Key
	}
	s := newStore(b, c, redisstore.Options{ExpectedUsers: int64(users)})
	if err := s.PutMany(ctx, entries); err != nil {
		b.Fatal(err)
	}
	bucketBytes := bucketMemory(b, c, s)
	np := prefix(b) + "naive:"
	naiveBytes := naiveLayout(b, nc, np, entries)

	for _, batch := range []int{100, 1000} {
		b.Run(fmt.Sprintf("layout=naive-GET/batch=%d", batch), func(b *testing.B) {
			r := rand.New(rand.NewPCG(3, uint64(batch)))
			cmds := make([]*redis.StringCmd, batch)
			n := 0
			cpu0 := redisCPU(b, c)
			start := time.Now()
			for b.Loop() {
				p := nc.Pipeline()
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
			b.ReportMetric(float64(naiveBytes)/float64(users), "B/user")
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
				b.ReportMetric(float64(bucketBytes)/float64(users), "B/user")
			})
		}
	}
}
