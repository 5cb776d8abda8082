// Package redisstore is the lookup.Store on Redis or Redis Cluster (any
// redis.UniversalClient), laid out for memory.
//
// # Layout
//
// Entries are spread over 2^BucketBits Redis hashes ("buckets"):
//
//	<prefix>{b<bits>:<bucket hex>}  hash: field = key bytes after the bucket, value = region code
//	<prefix>meta                    hash: bucket_bits, layout, gen, next_code,
//	                                      region:<id> -> code, code:<n> -> id
//	                                      (during a rehash: rehash_bits, rehash_phase, rehash_next)
//
// Tables of layout "1" name their buckets <prefix>{b:<bucket hex>}; their
// first Rehash moves them to the naming above.
//
// The bucket is the leading BucketBits bits of the lookup.Key. The field is
// the raw binary Key minus the whole bytes the bucket already determines
// (15 bytes for 8..15 bucket bits, 14 bytes for 16..23), so Scan can rebuild
// the Key. Each bucket is a single key with its own hash tag, so Redis
// Cluster spreads buckets over all slots and every command touches one key.
//
// The value is a small integer region code, not the region id: Redis stores
// an integer 0..127 in a listpack entry as 2 bytes, whereas a 16-character id
// would cost 18 bytes per user. Codes are assigned by an atomic Lua script on
// first use of a region and recorded in the meta hash next to the data, never
// in configuration, so they are stable: reordering or editing the region list
// in a config file cannot silently remap users, and every hub sharing the
// prefix decodes the same way. Codes are never reused or renumbered.
//
// # Sizing
//
// A hash stays in the compact listpack encoding while it has at most
// hash-max-listpack-entries (default 128) fields of at most
// hash-max-listpack-value (default 64) bytes; a bucket that overflows turns
// into a hashtable costing about three times as much per entry. Fields here
// are 14-15 bytes, so only the entry count matters. Bucket sizes are Poisson
// distributed; with a mean of at most 80 users per bucket the chance that any
// of up to 2^20 buckets exceeds 128 is below 1% (mean 61 at 1M users and
// 14 bits: 4e-10 expected overfull buckets; mean 76 at 10M users and 17 bits:
// 0.003). BucketBitsFor applies that rule:
//
//	BucketBits = max(8, ceil(log2(expected users / 80)))
//
// Size for the expected peak user count: the table tolerates about 1.2x more
// users before buckets start to overflow (then memory grows, nothing breaks;
// Stats reports Overfull). Options.ExpectedUsers (hub.expected_users)
// sizes a new table; BucketBits is recorded in the meta hash and an existing
// table keeps it until Rehash (or Resize) moves it, online and resumably, to
// another size (see Rehash).
package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/lookup"
)

const (
	// DefaultBucketBits is used when neither Options.BucketBits nor
	// Options.ExpectedUsers is set; it suits up to about 1.3M users.
	DefaultBucketBits = 14
	// MinBucketBits and MaxBucketBits bound Options.BucketBits.
	MinBucketBits = 8
	// MaxBucketBits is the largest supported BucketBits (1.3G users).
	MaxBucketBits = 24
	// DefaultBatchSize is the number of commands per pipeline round trip.
	DefaultBatchSize = 1000
	// ListpackEntries is Redis's default hash-max-listpack-entries, the
	// bucket size the sizing rule keeps below.
	ListpackEntries = 128
	// TargetMeanBucket is the mean bucket size BucketBitsFor aims at.
	TargetMeanBucket = 80
	// MaxRegions is the number of distinct region ids one prefix can hold.
	MaxRegions = 4095

	// layoutLegacy names buckets <prefix>{b:<hex>}; layoutCurrent names
	// them <prefix>{b<bits>:<hex>} so that two bucket counts can coexist
	// during a rehash. A legacy table becomes current by its first rehash.
	layoutLegacy  = "1"
	layoutCurrent = "2"
	// tombstone is the value a delete leaves in the new bucket during a
	// rehash, so the mover cannot resurrect the entry from the old bucket.
	// Codes start at 1, so "0" is never a region.
	tombstone = "0"
	scanBatch = 256
)

// ErrLayoutMismatch is returned by New when the prefix already holds a table
// with a layout the options contradict (an explicit other BucketBits, or an
// unknown layout version).
var ErrLayoutMismatch = errors.New("redisstore: stored layout differs from options")

// ErrLayoutChanged is returned (wrapped) by Scan when a rehash began or
// changed target while it ran; running Scan again gives a complete result.
var ErrLayoutChanged = errors.New("redisstore: table layout changed during the operation; retry it")

// Options configures a Store.
type Options struct {
	// Prefix namespaces every key of the table, for example
	// "meridian:lookup:". Required.
	Prefix string
	// BucketBits is log2 of the number of buckets. When set, New fails with
	// ErrLayoutMismatch if the prefix holds a table of another size.
	BucketBits int
	// ExpectedUsers sizes a new table with BucketBitsFor when BucketBits
	// is 0 (configuration key hub.expected_users). An existing table keeps
	// its stored size; Layout reports the size wanted, and Rehash moves the
	// table to it.
	ExpectedUsers int64
	// BatchSize is the number of commands per pipeline round trip in the bulk
	// operations; 0 means DefaultBatchSize.
	BatchSize int
	// ReadOnly opens an existing table without writing anything, as a
	// client whose Redis user may only read the prefix does (another
	// region's partition in mesh topology, lookup.Partitioned): New fails
	// with an error matching lookup.ErrNoPartition when the prefix holds no
	// table yet, and every write fails with ErrReadOnly.
	ReadOnly bool
}

// ErrReadOnly is returned by the writes of a Store opened ReadOnly.
var ErrReadOnly = errors.New("redisstore: store opened read-only")

// BucketBitsFor returns the BucketBits that keeps the mean bucket at most
// TargetMeanBucket entries for the given number of users (see Sizing).
func BucketBitsFor(users int64) int {
	bits := MinBucketBits
	for bits < MaxBucketBits && users > TargetMeanBucket<<bits {
		bits++
	}
	return bits
}

// registerScript assigns the next free code to a region id, atomically, or
// returns the code it already has.
const registerScript = `
local c = redis.call('HGET', KEYS[1], 'region:' .. ARGV[1])
if c then return c end
local n = redis.call('HINCRBY', KEYS[1], 'next_code', 1)
if n > tonumber(ARGV[2]) then
  redis.call('HINCRBY', KEYS[1], 'next_code', -1)
  return redis.error_reply('region code space exhausted')
end
redis.call('HSET', KEYS[1], 'region:' .. ARGV[1], n, 'code:' .. n, ARGV[1])
return tostring(n)
`

// geometry is one bucket count and its key naming.
type geometry struct {
	bits   uint
	skip   int // leading Key bytes implied by the bucket
	legacy bool
}

func newGeometry(bits int, legacy bool) geometry {
	return geometry{bits: uint(bits), skip: bits / 8, legacy: legacy}
}

// layout is the table's shape as last read from the meta hash.
type layout struct {
	gen  string    // meta "gen": bumped by every layout change
	cur  geometry  // where entries live (or lived, during a rehash)
	next *geometry // rehash target: entries move from cur to next
}

// Store is a lookup.Store on Redis. It is safe for concurrent use. It does
// not own the client: closing the client is the caller's business.
type Store struct {
	c      redis.UniversalClient
	prefix string
	meta   string
	want   int
	batch  int
	reg    *redis.Script
	ro     bool

	lay atomic.Pointer[layout]

	mu       sync.RWMutex
	codeOf   map[string]string // region id -> code
	regionOf map[string]string // code -> region id
}

var _ lookup.Store = (*Store)(nil)

// New returns a Store on client under opts.Prefix, recording the layout in
// the prefix's meta hash on first use and adopting the stored one afterwards.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	if opts.Prefix == "" {
		return nil, errors.New("redisstore: empty Prefix")
	}
	if opts.ExpectedUsers < 0 {
		return nil, fmt.Errorf("redisstore: ExpectedUsers %d < 0", opts.ExpectedUsers)
	}
	want := opts.BucketBits
	switch {
	case want != 0:
	case opts.ExpectedUsers > 0:
		want = BucketBitsFor(opts.ExpectedUsers)
	default:
		want = DefaultBucketBits
	}
	if want < MinBucketBits || want > MaxBucketBits {
		return nil, fmt.Errorf("redisstore: BucketBits %d not in %d..%d", want, MinBucketBits, MaxBucketBits)
	}
	if opts.BatchSize == 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.BatchSize < 1 {
		return nil, fmt.Errorf("redisstore: BatchSize %d < 1", opts.BatchSize)
	}
	s := &Store{
		c:        client,
		prefix:   opts.Prefix,
		meta:     opts.Prefix + "meta",
		want:     want,
		batch:    opts.BatchSize,
		reg:      redis.NewScript(registerScript),
		ro:       opts.ReadOnly,
		codeOf:   map[string]string{},
		regionOf: map[string]string{},
	}
	if opts.ReadOnly {
		n, err := client.Exists(ctx, s.meta).Result()
		if err != nil {
			return nil, s.unavailable("read meta", err)
		}
		if n == 0 {
			return nil, fmt.Errorf("redisstore: %s: %w", opts.Prefix, lookup.ErrNoPartition)
		}
	} else if err := initScript.Run(ctx, client, []string{s.meta}, want, layoutCurrent).Err(); err != nil {
		return nil, fmt.Errorf("redisstore: record layout: %w", err)
	}
	if err := s.loadMeta(ctx); err != nil {
		return nil, err
	}
	if l := s.lay.Load(); opts.BucketBits != 0 && int(l.cur.bits) != want && (l.next == nil || int(l.next.bits) != want) {
		return nil, fmt.Errorf("%w: prefix has bucket_bits=%d, options want %d (use Rehash to resize)", ErrLayoutMismatch, l.cur.bits, want)
	}
	return s, nil
}

// initScript records the layout of an empty prefix: a table is created with
// the current key naming, and a prefix that has a table keeps it.
var initScript = redis.NewScript(`
if redis.call('HSETNX', KEYS[1], 'bucket_bits', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'layout', ARGV[2], 'gen', '1')
end
return 1
`)

// loadMeta reads the meta hash into the layout and the code maps.
func (s *Store) loadMeta(ctx context.Context) error {
	m, err := s.c.HGetAll(ctx, s.meta).Result()
	if err != nil {
		return s.unavailable("read meta", err)
	}
	l, err := parseLayout(m)
	if err != nil {
		return err
	}
	s.lay.Store(l)
	s.mu.Lock()
	defer s.mu.Unlock()
	for f, v := range m {
		if len(f) > 5 && f[:5] == "code:" {
			s.regionOf[f[5:]] = v
			s.codeOf[v] = f[5:]
		}
	}
	return nil
}

func parseBits(m map[string]string, field string) (int, error) {
	b, err := strconv.Atoi(m[field])
	if err != nil || b < MinBucketBits || b > MaxBucketBits {
		return 0, fmt.Errorf("%w: meta %s=%q", ErrLayoutMismatch, field, m[field])
	}
	return b, nil
}

func parseLayout(m map[string]string) (*layout, error) {
	bits, err := parseBits(m, "bucket_bits")
	if err != nil {
		return nil, err
	}
	var legacy bool
	switch m["layout"] {
	case layoutLegacy:
		legacy = true
	case layoutCurrent:
	default:
		return nil, fmt.Errorf("%w: unknown layout %q", ErrLayoutMismatch, m["layout"])
	}
	l := &layout{gen: m["gen"], cur: newGeometry(bits, legacy)}
	if m["rehash_bits"] != "" {
		nb, err := parseBits(m, "rehash_bits")
		if err != nil {
			return nil, err
		}
		g := newGeometry(nb, false)
		l.next = &g
	}
	return l, nil
}

// refresh re-reads the meta hash and reports whether the layout changed
// since s last read it (another process began or finished a rehash).
func (s *Store) refresh(ctx context.Context) (bool, error) {
	return s.checkGen(ctx, s.lay.Load().gen)
}

// checkGen reads the layout generation after a write was acknowledged and
// reports whether it moved since the write was planned (gen); the caller
// then re-applies the write under the new layout. Because a rehash bumps the
// generation before it moves anything and before it finishes, a write that
// sees an unchanged generation afterwards was applied before the change
// and is carried over by the mover's sweep.
func (s *Store) checkGen(ctx context.Context, gen string) (bool, error) {
	g, err := s.c.HGet(ctx, s.meta, "gen").Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return false, err
	}
	if g == gen {
		return false, nil
	}
	if err := s.loadMeta(ctx); err != nil {
		return false, err
	}
	return true, nil
}

// codeFor returns the code of region, registering it if needed.
func (s *Store) codeFor(ctx context.Context, region string) (string, error) {
	s.mu.RLock()
	c, ok := s.codeOf[region]
	s.mu.RUnlock()
	if ok {
		return c, nil
	}
	if s.ro {
		return "", ErrReadOnly
	}
	c, err := s.reg.Run(ctx, s.c, []string{s.meta}, region, MaxRegions).Text()
	if err != nil {
		return "", fmt.Errorf("redisstore: register region: %w", err)
	}
	s.mu.Lock()
	s.codeOf[region] = c
	s.regionOf[c] = region
	s.mu.Unlock()
	return c, nil
}

// regionFor decodes a stored code, re-reading the registry for codes that
// another process registered.
func (s *Store) regionFor(ctx context.Context, code string) (string, error) {
	s.mu.RLock()
	r, ok := s.regionOf[code]
	s.mu.RUnlock()
	if ok {
		return r, nil
	}
	if err := s.loadMeta(ctx); err != nil {
		return "", err
	}
	s.mu.RLock()
	r, ok = s.regionOf[code]
	s.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("redisstore: unknown region code %q (meta hash %s damaged?)", code, s.meta)
	}
	return r, nil
}

// bucketOf returns the bucket number of k.
func (g *geometry) bucketOf(k *lookup.Key) uint32 {
	return binary.BigEndian.Uint32(k[:4]) >> (32 - g.bits)
}

// appendBucketKey appends the Redis key of bucket b to buf.
func (g *geometry) appendBucketKey(buf []byte, prefix string, b uint32) []byte {
	buf = append(buf, prefix...)
	if g.legacy {
		buf = append(buf, "{b:"...)
	} else {
		buf = append(buf, "{b"...)
		buf = strconv.AppendUint(buf, uint64(g.bits), 10)
		buf = append(buf, ':')
	}
	buf = strconv.AppendUint(buf, uint64(b), 16)
	return append(buf, '}')
}

// bucketKey returns the Redis key of bucket b.
func (s *Store) bucketKey(g *geometry, b uint32) string {
	return string(g.appendBucketKey(make([]byte, 0, len(s.prefix)+16), s.prefix, b))
}

// locate returns the bucket key and field of k.
func (s *Store) locate(g *geometry, k *lookup.Key) (key, field string) {
	return s.bucketKey(g, g.bucketOf(k)), string(k[g.skip:])
}

// keyOf rebuilds the Key stored in bucket b under field.
func (g *geometry) keyOf(b uint32, field string) (lookup.Key, error) {
	var k lookup.Key
	if len(field) != lookup.KeySize-g.skip {
		return k, fmt.Errorf("redisstore: corrupt field of %d bytes in bucket %x", len(field), b)
	}
	var lead [4]byte
	binary.BigEndian.PutUint32(lead[:], b<<(32-g.bits))
	copy(k[:g.skip], lead[:])
	copy(k[g.skip:], field)
	if g.bucketOf(&k) != b {
		return k, fmt.Errorf("redisstore: field in bucket %x belongs to another bucket", b)
	}
	return k, nil
}

// Get implements lookup.Store. During a rehash it reads the new bucket and
// the old one in one round trip and trusts the new one. A miss re-reads the
// layout once, so a Store that missed a rehash another process began or
// finished does not report a moved user as unknown.
func (s *Store) Get(ctx context.Context, k lookup.Key) (string, error) {
	for attempt := 0; ; attempt++ {
		l := s.lay.Load()
		code, err := s.get(ctx, l, &k)
		if err != nil {
			return "", s.unavailable("get", err)
		}
		if code != "" {
			return s.regionFor(ctx, code)
		}
		if attempt > 0 {
			return "", fmt.Errorf("redisstore: get %s: %w", k, lookup.ErrNotFound)
		}
		if changed, err := s.refresh(ctx); err != nil {
			return "", s.unavailable("get", err)
		} else if !changed {
			return "", fmt.Errorf("redisstore: get %s: %w", k, lookup.ErrNotFound)
		}
	}
}

// get returns the stored code of k under l, "" when there is none.
func (s *Store) get(ctx context.Context, l *layout, k *lookup.Key) (string, error) {
	if l.next == nil {
		key, field := s.locate(&l.cur, k)
		code, err := s.c.HGet(ctx, key, field).Result()
		if errors.Is(err, redis.Nil) || code == tombstone {
			return "", nil
		}
		return code, err
	}
	p := s.c.Pipeline()
	nk, nf := s.locate(l.next, k)
	ok, of := s.locate(&l.cur, k)
	n := p.HGet(ctx, nk, nf)
	o := p.HGet(ctx, ok, of)
	_, _ = p.Exec(ctx)
	for _, c := range []*redis.StringCmd{n, o} {
		code, err := c.Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return "", err
		}
		if code == tombstone {
			return "", nil
		}
		return code, nil
	}
	return "", nil
}

// GetMany implements lookup.Store with one pipeline of HGETs per BatchSize
// keys (two per key during a rehash). Bucket keys and fields of a batch are
// cut from one buffer; the commands' argument lists are windows of one
// slice holding *string arguments into that buffer's parts (a pointer fits
// an interface without an allocation; go-redis writes a *string, and
// routes it in a cluster, as the string). A lookup so allocates two
// objects (the command and its answer) where a plain GET allocates five.
// A Lua script answering a whole batch in one
// command was measured slower (docs/benchmarks.md). Keys that miss are
// looked up again with Get when another process changed the layout.
func (s *Store) GetMany(ctx context.Context, keys []lookup.Key) ([]string, error) {
	out := make([]string, len(keys))
	l := s.lay.Load()
	per := 1
	geos := []*geometry{&l.cur}
	if l.next != nil {
		per = 2
		geos = []*geometry{l.next, &l.cur}
	}
	n := min(len(keys), s.batch)
	// One buffer holds every bucket key and field of a batch; one string
	// copy of it is cut into the command arguments.
	buf := make([]byte, 0, n*per*(len(s.prefix)+14+lookup.KeySize))
	ends := make([]int, 0, 2*per*n)
	parts := make([]string, 2*per*n)
	args := make([]any, 3*per*n)
	var misses []int
	cmds := make([]*redis.StringCmd, 0, per*n)
	for start := 0; start < len(keys); start += s.batch {
		chunk := keys[start:min(start+s.batch, len(keys))]
		buf, ends = buf[:0], ends[:0]
		for i := range chunk {
			for _, g := range geos {
				buf = g.appendBucketKey(buf, s.prefix, g.bucketOf(&chunk[i]))
				ends = append(ends, len(buf))
				buf = append(buf, chunk[i][g.skip:]...)
				ends = append(ends, len(buf))
			}
		}
		arena := string(buf)
		from := 0
		for j, end := range ends {
			parts[j] = arena[from:end]
			from = end
		}
		cmds = cmds[:0]
		p := s.c.Pipeline()
		for j := 0; j < len(ends); j += 2 {
			a := args[3*j/2 : 3*j/2+3 : 3*j/2+3]
			a[0], a[1], a[2] = "hget", &parts[j], &parts[j+1]
			cmd := redis.NewStringCmd(ctx, a...)
			_ = p.Process(ctx, cmd)
			cmds = append(cmds, cmd)
		}
		_, _ = p.Exec(ctx) // errors are checked per command below
		for i := range chunk {
			code := ""
			for _, cmd := range cmds[i*per : (i+1)*per] {
				v, err := cmd.Result()
				if errors.Is(err, redis.Nil) {
					continue
				}
				if err != nil {
					return nil, s.unavailable("get many", err)
				}
				code = v
				break
			}
			if code == "" || code == tombstone {
				misses = append(misses, start+i)
				continue
			}
			r, err := s.regionFor(ctx, code)
			if err != nil {
				return nil, err
			}
			out[start+i] = r
		}
	}
	if len(misses) > 0 {
		if changed, err := s.refresh(ctx); err != nil {
			return nil, s.unavailable("get many", err)
		} else if changed {
			for _, i := range misses {
				r, err := s.Get(ctx, keys[i])
				if err != nil && !errors.Is(err, lookup.ErrNotFound) {
					return nil, err
				}
				out[i] = r
			}
		}
	}
	return out, nil
}

// unavailable wraps an error of the Redis client so that it matches
// lookup.ErrUnavailable (unless it is a context error). On a Redis Cluster
// it also asks the client to reload the slot map: go-redis reloads it only
// on MOVED replies or periodically, so after a failover it would keep
// dialling the dead master for a while.
func (s *Store) unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		cc.ReloadState(context.Background())
	}
	return fmt.Errorf("redisstore: %s: %w: %w", op, lookup.ErrUnavailable, err)
}

// write applies fn under the current layout, then checks that the layout
// did not change meanwhile and re-applies fn under the new one if it did.
// Every write of the Store goes through it (see checkGen).
func (s *Store) write(ctx context.Context, fn func(l *layout) error) error {
	if s.ro {
		return ErrReadOnly
	}
	for range 8 {
		l := s.lay.Load()
		if err := fn(l); err != nil {
			return err
		}
		changed, err := s.checkGen(ctx, l.gen)
		if err != nil {
			return err
		}
		if !changed {
			return nil
		}
	}
	return errors.New("layout changed during 8 consecutive writes")
}

// queuePut queues the write of k under l: during a rehash into the new
// bucket, removing any copy in the old one.
func (s *Store) queuePut(ctx context.Context, p redis.Pipeliner, l *layout, k *lookup.Key, code string) {
	if l.next == nil {
		key, field := s.locate(&l.cur, k)
		p.HSet(ctx, key, field, code)
		return
	}
	key, field := s.locate(l.next, k)
	p.HSet(ctx, key, field, code)
	key, field = s.locate(&l.cur, k)
	p.HDel(ctx, key, field)
}

// queueDelete queues the removal of k under l: during a rehash a tombstone in
// the new bucket, so the mover cannot copy the old entry back. It returns
// the commands whose results tell whether k had an entry.
func (s *Store) queueDelete(ctx context.Context, p redis.Pipeliner, l *layout, k *lookup.Key) (had *redis.StringCmd, del *redis.IntCmd) {
	if l.next != nil {
		key, field := s.locate(l.next, k)
		had = p.HGet(ctx, key, field)
		p.HSet(ctx, key, field, tombstone)
	}
	key, field := s.locate(&l.cur, k)
	return had, p.HDel(ctx, key, field)
}

// Put implements lookup.Store.
func (s *Store) Put(ctx context.Context, k lookup.Key, region string) error {
	if err := lookup.ValidateRegion(region); err != nil {
		return s.unavailable("put", err)
	}
	code, err := s.codeFor(ctx, region)
	if err != nil {
		return err
	}
	err = s.write(ctx, func(l *layout) error {
		p := s.c.Pipeline()
		s.queuePut(ctx, p, l, &k, code)
		_, err := p.Exec(ctx)
		return err
	})
	if err != nil {
		return s.unavailable("put", err)
	}
	return nil
}

// PutMany implements lookup.Store with one pipeline of HSETs per BatchSize
// entries. Entries are validated before anything is written.
func (s *Store) PutMany(ctx context.Context, entries []lookup.Entry) error {
	codes := make(map[string]string, 4)
	for _, e := range entries {
		if _, ok := codes[e.Region]; ok {
			continue
		}
		if err := lookup.ValidateRegion(e.Region); err != nil {
			return s.unavailable("put many", err)
		}
		codes[e.Region] = ""
	}
	for r := range codes {
		c, err := s.codeFor(ctx, r)
		if err != nil {
			return err
		}
		codes[r] = c
	}
	if err := ctx.Err(); err != nil {
		return s.unavailable("put many", err)
	}
	err := s.write(ctx, func(l *layout) error {
		for start := 0; start < len(entries); start += s.batch {
			chunk := entries[start:min(start+s.batch, len(entries))]
			p := s.c.Pipeline()
			for i := range chunk {
				s.queuePut(ctx, p, l, &chunk[i].Key, codes[chunk[i].Region])
			}
			if _, err := p.Exec(ctx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return s.unavailable("put many", err)
	}
	return nil
}

// Delete implements lookup.Store.
func (s *Store) Delete(ctx context.Context, k lookup.Key) error {
	found := false
	err := s.write(ctx, func(l *layout) error {
		p := s.c.Pipeline()
		had, del := s.queueDelete(ctx, p, l, &k)
		if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if del.Val() > 0 {
			found = true
		}
		if had != nil && had.Err() == nil && had.Val() != tombstone {
			found = true
		}
		return nil
	})
	if err != nil {
		return s.unavailable("delete", err)
	}
	if !found {
		return fmt.Errorf("redisstore: delete %s: %w", k, lookup.ErrNotFound)
	}
	return nil
}

// DeleteMany implements lookup.Store with one pipeline of HDELs per
// BatchSize keys.
func (s *Store) DeleteMany(ctx context.Context, keys []lookup.Key) error {
	err := s.write(ctx, func(l *layout) error {
		for start := 0; start < len(keys); start += s.batch {
			chunk := keys[start:min(start+s.batch, len(keys))]
			p := s.c.Pipeline()
			for i := range chunk {
				s.queueDelete(ctx, p, l, &chunk[i])
			}
			if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
		}
		return ctx.Err()
	})
	if err != nil {
		return s.unavailable("delete many", err)
	}
	return nil
}

// forBuckets runs queue for buckets 0..total-1 in pipelines of n and after
// each pipeline runs after.
func (s *Store) forBuckets(ctx context.Context, total uint32, n int, queue func(p redis.Pipeliner, b uint32), after func() error) error {
	for first := uint32(0); first < total; first += uint32(n) {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := s.c.Pipeline()
		for b := first; b < min(first+uint32(n), total); b++ {
			queue(p, b)
		}
		_, _ = p.Exec(ctx) // checked per command by after
		if err := after(); err != nil {
			return err
		}
	}
	return nil
}

// span returns the buckets of g that share the leading gbits bits x.
func span(g *geometry, gbits uint, x uint32) (first, last uint32) {
	d := g.bits - gbits
	return x << d, (x+1)<<d - 1
}

// Scan implements lookup.Store by reading every bucket with pipelined
// HGETALLs (no SCAN, so it works the same on Redis Cluster). Each bucket is
// read atomically; the table as a whole is not. During a rehash it reads,
// for each group of buckets that share their leading bits, the old buckets
// and then the new ones (the mover copies before it deletes, so an entry is
// always seen in one of them), and visits each Key once, the new bucket
// winning.
//
// A Scan that started before a rehash began, or while a rehash to another
// size ran, could miss entries the mover carried past it: it then returns an
// error matching ErrLayoutChanged, and the caller runs it again.
func (s *Store) Scan(ctx context.Context, fn func(lookup.Entry) error) error {
	if _, err := s.refresh(ctx); err != nil {
		return s.unavailable("scan", err)
	}
	l := s.lay.Load()
	gbits := l.cur.bits
	geos := []*geometry{&l.cur}
	if l.next != nil {
		gbits = min(gbits, l.next.bits)
		geos = append(geos, l.next)
	}
	type read struct {
		g   *geometry
		b   uint32
		cmd *redis.MapStringStringCmd
	}
	groups := uint32(1) << gbits
	var reads []read
	seen := map[lookup.Key]string{}
	for first := uint32(0); first < groups; first += scanBatch {
		last := min(first+scanBatch, groups) - 1
		reads = reads[:0]
		for _, g := range geos { // old buckets first, then new
			p := s.c.Pipeline()
			lo, _ := span(g, gbits, first)
			_, hi := span(g, gbits, last)
			for b := lo; b <= hi; b++ {
				reads = append(reads, read{g, b, p.HGetAll(ctx, s.bucketKey(g, b))})
			}
			_, _ = p.Exec(ctx)
		}
		clear(seen)
		for _, r := range reads {
			m, err := r.cmd.Result()
			if err != nil {
				return fmt.Errorf("redisstore: scan: %w", err)
			}
			for field, code := range m {
				k, err := r.g.keyOf(r.b, field)
				if err != nil {
					return fmt.Errorf("redisstore: scan: %w", err)
				}
				seen[k] = code // the new bucket is read last and wins
			}
		}
		for k, code := range seen {
			if code == tombstone {
				continue
			}
			r, err := s.regionFor(ctx, code)
			if err != nil {
				return fmt.Errorf("redisstore: scan: %w", err)
			}
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("redisstore: scan: %w", err)
			}
			if err := fn(lookup.Entry{Key: k, Region: r}); err != nil {
				return fmt.Errorf("redisstore: scan: %w", err)
			}
		}
	}
	if changed, err := s.checkGen(ctx, l.gen); err != nil {
		return s.unavailable("scan", err)
	} else if changed {
		// A finished rehash (the target scanned is now the layout) is fine:
		// every group was read old-then-new. Anything else may have missed
		// entries.
		if nl := s.lay.Load(); l.next == nil || nl.next != nil || nl.cur.bits != l.next.bits {
			return fmt.Errorf("redisstore: scan: %w", ErrLayoutChanged)
		}
	}
	return nil
}

// Ping implements lookup.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redisstore: ping: %w", err)
	}
	return nil
}

// Stats describes how full the buckets are.
type Stats struct {
	// Buckets is the number of buckets (2^BucketBits).
	Buckets int
	// Entries is the number of entries in all buckets.
	Entries int
	// MaxBucket is the size of the largest bucket.
	MaxBucket int
	// Overfull counts buckets with more than ListpackEntries entries, which
	// Redis keeps in the costlier hashtable encoding under default settings.
	// A non-zero value means BucketBits is too small for the user count.
	Overfull int
}

// Stats reads the size of every bucket (pipelined HLENs) of the current
// layout; during a rehash, of the new one (entries not moved yet are not
// counted).
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	l := s.lay.Load()
	g := &l.cur
	if l.next != nil {
		g = l.next
	}
	st := Stats{Buckets: 1 << g.bits}
	cmds := make([]*redis.IntCmd, 0, s.batch)
	err := s.forBuckets(ctx, 1<<g.bits, s.batch, func(p redis.Pipeliner, b uint32) {
		cmds = append(cmds, p.HLen(ctx, s.bucketKey(g, b)))
	}, func() error {
		defer func() { cmds = cmds[:0] }()
		for _, c := range cmds {
			n, err := c.Result()
			if err != nil {
				return err
			}
			st.Entries += int(n)
			st.MaxBucket = max(st.MaxBucket, int(n))
			if n > ListpackEntries {
				st.Overfull++
			}
		}
		return nil
	})
	if err != nil {
		return Stats{}, fmt.Errorf("redisstore: stats: %w", err)
	}
	return st, nil
}

// BucketKeys returns the Redis key of every bucket of the current layout,
// for tools that inspect memory (MEMORY USAGE) or encodings (OBJECT
// ENCODING).
func (s *Store) BucketKeys() []string {
	l := s.lay.Load()
	keys := make([]string, 1<<l.cur.bits)
	for b := range keys {
		keys[b] = s.bucketKey(&l.cur, uint32(b))
	}
	return keys
}

// MetaKey returns the Redis key of the meta hash.
func (s *Store) MetaKey() string { return s.meta }

// Drop deletes the whole table: every bucket (pipelined UNLINKs) of the
// current layout and of a rehash target, and the meta hash. The Store must
// not be used afterwards. Meant for tests and for discarding a prefix.
func (s *Store) Drop(ctx context.Context) error {
	if s.ro {
		return ErrReadOnly
	}
	if err := s.loadMeta(ctx); err != nil {
		return fmt.Errorf("redisstore: drop: %w", err)
	}
	l := s.lay.Load()
	geos := []*geometry{&l.cur}
	if l.next != nil {
		geos = append(geos, l.next)
	}
	for _, g := range geos {
		cmds := make([]*redis.IntCmd, 0, s.batch)
		err := s.forBuckets(ctx, 1<<g.bits, s.batch, func(p redis.Pipeliner, b uint32) {
			cmds = append(cmds, p.Unlink(ctx, s.bucketKey(g, b)))
		}, func() error {
			defer func() { cmds = cmds[:0] }()
			for _, c := range cmds {
				if err := c.Err(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("redisstore: drop: %w", err)
		}
	}
	if err := s.c.Unlink(ctx, s.meta).Err(); err != nil {
		return fmt.Errorf("redisstore: drop: %w", err)
	}
	return nil
}
