package redisstore_test

import (
	"context"
	"fmt"
	"iter"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// usedMemory returns used_memory from INFO memory.
func usedMemory(ctx context.Context, c redis.UniversalClient) (int64, error) {
	info, err := c.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			return strconv.ParseInt(v, 10, 64)
		}
	}
	return 0, fmt.Errorf("no used_memory in INFO memory")
}

// scaleUsers yields n synthetic (username, region) pairs.
func scaleUsers(n int) iter.Seq2[string, string] {
	regions := []string{"eu", "us", "ap"}
	return func(yield func(string, string) bool) {
		for i := range n {
			if !yield("user-"+strconv.Itoa(i)+"@example.org", regions[i%3]) {
				return
			}
		}
	}
}

// TestMemoryAtScale measures the Redis memory cost per user. It runs only
// when MERIDIAN_LOOKUP_SCALE is set to the number of users (for example
// 1000000); MERIDIAN_LOOKUP_BUCKET_BITS overrides BucketBitsFor. Run with -v
// to see the figures. It deletes everything it wrote.
func TestMemoryAtScale(t *testing.T) {
	env := os.Getenv("MERIDIAN_LOOKUP_SCALE")
	if env == "" {
		t.Skip("set MERIDIAN_LOOKUP_SCALE=<users> to run the memory measurement")
	}
	n, err := strconv.Atoi(env)
	if err != nil || n < 1 {
		t.Fatalf("MERIDIAN_LOOKUP_SCALE=%q: want a positive integer", env)
	}
	bits := redisstore.BucketBitsFor(int64(n))
	if v := os.Getenv("MERIDIAN_LOOKUP_BUCKET_BITS"); v != "" {
		if bits, err = strconv.Atoi(v); err != nil {
			t.Fatalf("MERIDIAN_LOOKUP_BUCKET_BITS=%q: %v", v, err)
		}
	}
	ctx := context.Background()
	c := client(t)
	s := newStore(t, c, redisstore.Options{BucketBits: bits})
	h, err := lookup.NewHasher([]byte("scale test hub key, 32 bytes or more"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lookup.NewTable(h, s)
	if err != nil {
		t.Fatal(err)
	}
	// Register the regions first so the meta hash is not counted.
	if err := s.PutMany(ctx, []lookup.Entry{{Key: lookup.Key{}, Region: "eu"}, {Key: lookup.Key{}, Region: "us"}, {Key: lookup.Key{}, Region: "ap"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, lookup.Key{}); err != nil {
		t.Fatal(err)
	}

	before, err := usedMemory(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	done, err := tb.Import(ctx, scaleUsers(n), nil)
	if err != nil || done != n {
		t.Fatalf("Import = %d, %v", done, err)
	}
	elapsed := time.Since(start)
	after, err := usedMemory(ctx, c)
	if err != nil {
		t.Fatal(err)
	}

	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != n {
		t.Fatalf("Stats.Entries = %d, want %d", st.Entries, n)
	}
	// Per-key accounting (MEMORY USAGE) is immune to other tenants of the
	// shared Redis; the used_memory delta also counts allocator overhead
	// and the keyspace dictionary.
	var usage int64
	encodings := map[string]int{}
	keys := s.BucketKeys()
	for start := 0; start < len(keys); start += 1000 {
		chunk := keys[start:min(start+1000, len(keys))]
		p := c.Pipeline()
		mem := make([]*redis.IntCmd, len(chunk))
		enc := make([]*redis.StringCmd, len(chunk))
		for i, k := range chunk {
			mem[i] = p.MemoryUsage(ctx, k, 0)
			enc[i] = p.ObjectEncoding(ctx, k)
		}
		_, _ = p.Exec(ctx)
		for i := range chunk {
			if v, err := mem[i].Result(); err == nil {
				usage += v
			}
			if v, err := enc[i].Result(); err == nil {
				encodings[v]++
			}
		}
	}
	delta := after - before
	t.Logf("users=%d bucket_bits=%d buckets=%d mean=%.1f max_bucket=%d overfull(>%d)=%d encodings=%v",
		n, bits, st.Buckets, float64(n)/float64(st.Buckets), st.MaxBucket, redisstore.ListpackEntries, st.Overfull, encodings)
	t.Logf("used_memory delta=%d bytes => %.2f bytes/user", delta, float64(delta)/float64(n))
	t.Logf("sum(MEMORY USAGE buckets)=%d bytes => %.2f bytes/user", usage, float64(usage)/float64(n))
	t.Logf("import (hash+PutMany via Table.Import): %v => %.0f users/s", elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
	if per := float64(delta) / float64(n); per > 40 {
		t.Errorf("%.2f bytes/user exceeds the 40-byte budget", per)
	}
	if st.Overfull != 0 {
		t.Errorf("%d buckets exceed %d entries", st.Overfull, redisstore.ListpackEntries)
	}
}
