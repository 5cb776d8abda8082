// Package redisstore is the lookup.Store on Redis or Redis Cluster (any
// redis.UniversalClient), laid out for memory.
//
// # Layout
//
// Entries are spread over 2^BucketBits Redis hashes ("buckets"):
//
//	<prefix>{b:<bucket hex>}   hash: field = key bytes after the bucket, value = region code
//	<prefix>meta               hash: bucket_bits, layout, next_code,
//	                                 region:<id> -> code, code:<n> -> id
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
// Stats reports Overfull). BucketBits is recorded in the meta hash and New
// refuses to open a prefix with a different value; changing it means
// importing into a new prefix.
package redisstore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/lookup"
)

const (
	// DefaultBucketBits is used when Options.BucketBits is 0; it suits up to
	// about 1.3M users.
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

	layoutVersion = "1"
	scanBatch     = 256
)

// ErrLayoutMismatch is returned by New when the prefix already holds a table
// with a different layout (for example another BucketBits).
var ErrLayoutMismatch = errors.New("redisstore: stored layout differs from options")

// Options configures a Store.
type Options struct {
	// Prefix namespaces every key of the table, for example
	// "meridian:lookup:". Required.
	Prefix string
	// BucketBits is log2 of the number of buckets; 0 means
	// DefaultBucketBits. Use BucketBitsFor(expected users).
	BucketBits int
	// BatchSize is the number of commands per pipeline round trip in the bulk
	// operations; 0 means DefaultBatchSize.
	BatchSize int
}

// BucketBitsFor returns the BucketBits that keeps the mean bucket at most
// TargetMeanBucket entries for the given number of users (see Sizing).
func BucketBitsFor(users int) int {
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

// Store is a lookup.Store on Redis. It is safe for concurrent use. It does
// not own the client: closing the client is the caller's business.
type Store struct {
	c      redis.UniversalClient
	prefix string
	meta   string
	bits   uint
	skip   int // leading Key bytes implied by the bucket
	batch  int
	reg    *redis.Script

	mu       sync.RWMutex
	codeOf   map[string]string // region id -> code
	regionOf map[string]string // code -> region id
}

var _ lookup.Store = (*Store)(nil)

// New returns a Store on client under opts.Prefix, recording the layout in
// the prefix's meta hash on first use and checking it afterwards.
func New(ctx context.Context, client redis.UniversalClient, opts Options) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisstore: nil client")
	}
	if opts.Prefix == "" {
		return nil, errors.New("redisstore: empty Prefix")
	}
	if opts.BucketBits == 0 {
		opts.BucketBits = DefaultBucketBits
	}
	if opts.BucketBits < MinBucketBits || opts.BucketBits > MaxBucketBits {
		return nil, fmt.Errorf("redisstore: BucketBits %d not in %d..%d", opts.BucketBits, MinBucketBits, MaxBucketBits)
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
		bits:     uint(opts.BucketBits),
		skip:     opts.BucketBits / 8,
		batch:    opts.BatchSize,
		reg:      redis.NewScript(registerScript),
		codeOf:   map[string]string{},
		regionOf: map[string]string{},
	}
	bits := strconv.Itoa(opts.BucketBits)
	if _, err := client.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, s.meta, "bucket_bits", bits)
		p.HSetNX(ctx, s.meta, "layout", layoutVersion)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("redisstore: record layout: %w", err)
	}
	if err := s.loadMeta(ctx, bits); err != nil {
		return nil, err
	}
	return s, nil
}

// loadMeta reads the meta hash into the code maps and, if wantBits is not
// empty, checks the layout.
func (s *Store) loadMeta(ctx context.Context, wantBits string) error {
	m, err := s.c.HGetAll(ctx, s.meta).Result()
	if err != nil {
		return fmt.Errorf("redisstore: read meta: %w", err)
	}
	if wantBits != "" && (m["bucket_bits"] != wantBits || m["layout"] != layoutVersion) {
		return fmt.Errorf("%w: prefix has bucket_bits=%q layout=%q, options want %s and %s",
			ErrLayoutMismatch, m["bucket_bits"], m["layout"], wantBits, layoutVersion)
	}
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

// codeFor returns the code of region, registering it if needed.
func (s *Store) codeFor(ctx context.Context, region string) (string, error) {
	s.mu.RLock()
	c, ok := s.codeOf[region]
	s.mu.RUnlock()
	if ok {
		return c, nil
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
	if err := s.loadMeta(ctx, ""); err != nil {
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
func (s *Store) bucketOf(k *lookup.Key) uint32 {
	return binary.BigEndian.Uint32(k[:4]) >> (32 - s.bits)
}

// bucketKey returns the Redis key of bucket b.
func (s *Store) bucketKey(b uint32) string {
	buf := make([]byte, 0, len(s.prefix)+12)
	buf = append(buf, s.prefix...)
	buf = append(buf, "{b:"...)
	buf = strconv.AppendUint(buf, uint64(b), 16)
	buf = append(buf, '}')
	return string(buf)
}

// locate returns the bucket key and field of k.
func (s *Store) locate(k *lookup.Key) (key, field string) {
	return s.bucketKey(s.bucketOf(k)), string(k[s.skip:])
}

// keyOf rebuilds the Key stored in bucket b under field.
func (s *Store) keyOf(b uint32, field string) (lookup.Key, error) {
	var k lookup.Key
	if len(field) != lookup.KeySize-s.skip {
		return k, fmt.Errorf("redisstore: corrupt field of %d bytes in bucket %x", len(field), b)
	}
	var lead [4]byte
	binary.BigEndian.PutUint32(lead[:], b<<(32-s.bits))
	copy(k[:s.skip], lead[:])
	copy(k[s.skip:], field)
	if s.bucketOf(&k) != b {
		return k, fmt.Errorf("redisstore: field in bucket %x belongs to another bucket", b)
	}
	return k, nil
}

// Get implements lookup.Store.
func (s *Store) Get(ctx context.Context, k lookup.Key) (string, error) {
	key, field := s.locate(&k)
	code, err := s.c.HGet(ctx, key, field).Result()
	if errors.Is(err, redis.Nil) {
		return "", fmt.Errorf("redisstore: get %s: %w", k, lookup.ErrNotFound)
	}
	if err != nil {
		return "", fmt.Errorf("redisstore: get: %w", err)
	}
	return s.regionFor(ctx, code)
}

// GetMany implements lookup.Store with one pipeline of HGETs per BatchSize
// keys.
func (s *Store) GetMany(ctx context.Context, keys []lookup.Key) ([]string, error) {
	out := make([]string, len(keys))
	cmds := make([]*redis.StringCmd, 0, min(len(keys), s.batch))
	for start := 0; start < len(keys); start += s.batch {
		chunk := keys[start:min(start+s.batch, len(keys))]
		cmds = cmds[:0]
		p := s.c.Pipeline()
		for i := range chunk {
			key, field := s.locate(&chunk[i])
			cmds = append(cmds, p.HGet(ctx, key, field))
		}
		_, _ = p.Exec(ctx) // errors are checked per command below
		for i, cmd := range cmds {
			code, err := cmd.Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("redisstore: get many: %w", err)
			}
			if out[start+i], err = s.regionFor(ctx, code); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// Put implements lookup.Store.
func (s *Store) Put(ctx context.Context, k lookup.Key, region string) error {
	if err := lookup.ValidateRegion(region); err != nil {
		return fmt.Errorf("redisstore: put: %w", err)
	}
	code, err := s.codeFor(ctx, region)
	if err != nil {
		return err
	}
	key, field := s.locate(&k)
	if err := s.c.HSet(ctx, key, field, code).Err(); err != nil {
		return fmt.Errorf("redisstore: put: %w", err)
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
			return fmt.Errorf("redisstore: put many: %w", err)
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
		return fmt.Errorf("redisstore: put many: %w", err)
	}
	for start := 0; start < len(entries); start += s.batch {
		chunk := entries[start:min(start+s.batch, len(entries))]
		p := s.c.Pipeline()
		for i := range chunk {
			key, field := s.locate(&chunk[i].Key)
			p.HSet(ctx, key, field, codes[chunk[i].Region])
		}
		if _, err := p.Exec(ctx); err != nil {
			return fmt.Errorf("redisstore: put many: %w", err)
		}
	}
	return nil
}

// Delete implements lookup.Store.
func (s *Store) Delete(ctx context.Context, k lookup.Key) error {
	key, field := s.locate(&k)
	n, err := s.c.HDel(ctx, key, field).Result()
	if err != nil {
		return fmt.Errorf("redisstore: delete: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("redisstore: delete %s: %w", k, lookup.ErrNotFound)
	}
	return nil
}

// DeleteMany implements lookup.Store with one pipeline of HDELs per
// BatchSize keys.
func (s *Store) DeleteMany(ctx context.Context, keys []lookup.Key) error {
	for start := 0; start < len(keys); start += s.batch {
		chunk := keys[start:min(start+s.batch, len(keys))]
		p := s.c.Pipeline()
		for i := range chunk {
			key, field := s.locate(&chunk[i])
			p.HDel(ctx, key, field)
		}
		if _, err := p.Exec(ctx); err != nil {
			return fmt.Errorf("redisstore: delete many: %w", err)
		}
	}
	return ctx.Err()
}

// forBuckets runs fn on pipelines covering every bucket, n buckets at a
// time; fn queues its commands for buckets first..first+n-1 and then reads
// them back in after.
func (s *Store) forBuckets(ctx context.Context, n int, queue func(p redis.Pipeliner, b uint32), after func() error) error {
	total := uint32(1) << s.bits
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

// Scan implements lookup.Store by reading every bucket with pipelined
// HGETALLs (no SCAN, so it works the same on Redis Cluster). Each bucket is
// read atomically; the table as a whole is not.
func (s *Store) Scan(ctx context.Context, fn func(lookup.Entry) error) error {
	type pending struct {
		b   uint32
		cmd *redis.MapStringStringCmd
	}
	batch := make([]pending, 0, scanBatch)
	err := s.forBuckets(ctx, scanBatch, func(p redis.Pipeliner, b uint32) {
		batch = append(batch, pending{b, p.HGetAll(ctx, s.bucketKey(b))})
	}, func() error {
		defer func() { batch = batch[:0] }()
		for _, pb := range batch {
			m, err := pb.cmd.Result()
			if err != nil {
				return err
			}
			for field, code := range m {
				k, err := s.keyOf(pb.b, field)
				if err != nil {
					return err
				}
				r, err := s.regionFor(ctx, code)
				if err != nil {
					return err
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := fn(lookup.Entry{Key: k, Region: r}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("redisstore: scan: %w", err)
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

// Stats reads the size of every bucket (pipelined HLENs).
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	st := Stats{Buckets: 1 << s.bits}
	cmds := make([]*redis.IntCmd, 0, s.batch)
	err := s.forBuckets(ctx, s.batch, func(p redis.Pipeliner, b uint32) {
		cmds = append(cmds, p.HLen(ctx, s.bucketKey(b)))
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

// BucketKeys returns the Redis key of every bucket, for tools that inspect
// memory (MEMORY USAGE) or encodings (OBJECT ENCODING).
func (s *Store) BucketKeys() []string {
	keys := make([]string, 1<<s.bits)
	for b := range keys {
		keys[b] = s.bucketKey(uint32(b))
	}
	return keys
}

// MetaKey returns the Redis key of the meta hash.
func (s *Store) MetaKey() string { return s.meta }

// Drop deletes the whole table: every bucket (pipelined UNLINKs) and the
// meta hash. The Store must not be used afterwards. Meant for tests and for
// discarding a prefix after a re-import.
func (s *Store) Drop(ctx context.Context) error {
	cmds := make([]*redis.IntCmd, 0, s.batch)
	err := s.forBuckets(ctx, s.batch, func(p redis.Pipeliner, b uint32) {
		cmds = append(cmds, p.Unlink(ctx, s.bucketKey(b)))
	}, func() error {
		defer func() { cmds = cmds[:0] }()
		for _, c := range cmds {
			if err := c.Err(); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = s.c.Unlink(ctx, s.meta).Err()
	}
	if err != nil {
		return fmt.Errorf("redisstore: drop: %w", err)
	}
	return nil
}
