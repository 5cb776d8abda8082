package redisstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Layout describes the table's bucket count as stored and as wanted.
type Layout struct {
	// BucketBits is the stored bucket count (log2).
	BucketBits int
	// RehashBits is the target of a rehash in progress, 0 if none.
	RehashBits int
	// WantBits is what the Store's options ask for (Options.BucketBits or
	// BucketBitsFor(Options.ExpectedUsers)). When it differs from
	// BucketBits and no rehash is running, the table needs Rehash.
	WantBits int
}

// Layout reads the layout from Redis.
func (s *Store) Layout(ctx context.Context) (Layout, error) {
	if err := s.loadMeta(ctx); err != nil {
		return Layout{}, err
	}
	l := s.lay.Load()
	out := Layout{BucketBits: int(l.cur.bits), WantBits: s.want}
	if l.next != nil {
		out.RehashBits = int(l.next.bits)
	}
	return out, nil
}

// RehashProgress reports where a rehash is.
type RehashProgress struct {
	// Phase is "move" (first pass over the old buckets) or "sweep" (second
	// pass, for entries written by processes that had not seen the rehash).
	Phase string
	// Done and Total count old buckets in the current phase.
	Done, Total uint32
}

// beginScript records a rehash target: a no-op when the same rehash is
// already recorded, an error for a different one.
var beginScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'bucket_bits')
local tgt = redis.call('HGET', KEYS[1], 'rehash_bits')
if tgt then
  if tgt == ARGV[1] then return 'resumed' end
  return redis.error_reply('rehash to ' .. tgt .. ' bits already in progress')
end
if cur == ARGV[1] then return 'same' end
redis.call('HSET', KEYS[1], 'rehash_bits', ARGV[1], 'rehash_phase', 'move', 'rehash_next', '0')
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return 'begun'
`)

// advanceScript stores the mover's cursor, never moving it backwards (two
// movers may run at once; both are idempotent).
var advanceScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rehash_bits') ~= ARGV[1] or redis.call('HGET', KEYS[1], 'rehash_phase') ~= ARGV[2] then return 0 end
local n = tonumber(redis.call('HGET', KEYS[1], 'rehash_next') or '0')
if tonumber(ARGV[3]) > n then redis.call('HSET', KEYS[1], 'rehash_next', ARGV[3]) end
return 1
`)

// phaseScript moves from the move phase to the sweep phase.
var phaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rehash_bits') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'rehash_phase') == 'move' then
  redis.call('HSET', KEYS[1], 'rehash_phase', 'sweep', 'rehash_next', '0')
end
return 1
`)

// switchScript makes the rehash target the table's layout.
var switchScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'rehash_bits') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'bucket_bits', ARGV[1], 'layout', ARGV[2])
redis.call('HDEL', KEYS[1], 'rehash_bits', 'rehash_phase', 'rehash_next')
redis.call('HINCRBY', KEYS[1], 'gen', 1)
return 1
`)

// purgeScript deletes the tombstones of one bucket.
var purgeScript = redis.NewScript(`
local kv = redis.call('HGETALL', KEYS[1])
local n = 0
for i = 1, #kv, 2 do
  if kv[i+1] == ARGV[1] then redis.call('HDEL', KEYS[1], kv[i]); n = n + 1 end
end
return n
`)

// ErrRehashStopped is returned (wrapped) by Rehash when stopAfter buckets
// were moved before the rehash was complete; calling Rehash again resumes.
var ErrRehashStopped = errors.New("redisstore: rehash stopped before completion")

// Rehash moves the table to 2^bits buckets while it stays in use, and can be
// interrupted and resumed at any point (by this or another process):
//
//  1. The target is recorded in the meta hash and the layout generation is
//     bumped. From then on every Store (each re-checks the generation after
//     each write and on each miss) writes into the new buckets, deletes from
//     the old ones and reads new-then-old.
//  2. Move: each old bucket is read, its entries copied into the new buckets
//     with HSETNX (a newer write or a delete's tombstone wins) and then
//     deleted from the old bucket. The cursor is saved in the meta hash
//     after every batch, so a restarted Rehash goes on where it stopped.
//  3. Sweep: a second pass over the old buckets moves what a process that
//     had not seen step 1 wrote there meanwhile.
//  4. Switch: the meta hash names the new bucket count and the generation
//     is bumped; then the delete tombstones are purged from the new buckets.
//
// progress, if not nil, is called after every batch. stopAfter > 0 stops
// with ErrRehashStopped after that many old buckets (for tests and for
// operators who want to spread the work); 0 runs to completion.
func (s *Store) Rehash(ctx context.Context, bits int, stopAfter int, progress func(RehashProgress)) error {
	if bits < MinBucketBits || bits > MaxBucketBits {
		return fmt.Errorf("redisstore: rehash: BucketBits %d not in %d..%d", bits, MinBucketBits, MaxBucketBits)
	}
	target := strconv.Itoa(bits)
	res, err := beginScript.Run(ctx, s.c, []string{s.meta}, target).Text()
	if err != nil {
		return fmt.Errorf("redisstore: rehash: %w", err)
	}
	if err := s.loadMeta(ctx); err != nil {
		return err
	}
	if res == "same" {
		return nil
	}
	moved := 0
	for {
		m, err := s.c.HGetAll(ctx, s.meta).Result()
		if err != nil {
			return fmt.Errorf("redisstore: rehash: %w", err)
		}
		if m["rehash_bits"] != target {
			// Another process finished it.
			return s.loadMeta(ctx)
		}
		l, err := parseLayout(m)
		if err != nil {
			return err
		}
		s.lay.Store(l)
		phase := m["rehash_phase"]
		next, _ := strconv.ParseUint(m["rehash_next"], 10, 32)
		total := uint32(1) << l.cur.bits
		if uint32(next) >= total {
			if phase == "move" {
				if err := phaseScript.Run(ctx, s.c, []string{s.meta}, target).Err(); err != nil {
					return fmt.Errorf("redisstore: rehash: %w", err)
				}
				continue
			}
			return s.finishRehash(ctx, l, target)
		}
		if stopAfter > 0 && moved >= stopAfter {
			return fmt.Errorf("%w: %s phase at bucket %d of %d", ErrRehashStopped, phase, next, total)
		}
		n := uint32(scanBatch)
		if stopAfter > 0 {
			n = uint32(min(scanBatch, stopAfter-moved))
		}
		end := min(uint32(next)+n, total)
		if err := s.moveBuckets(ctx, l, uint32(next), end); err != nil {
			return fmt.Errorf("redisstore: rehash: %w", err)
		}
		moved += int(end - uint32(next))
		if err := advanceScript.Run(ctx, s.c, []string{s.meta}, target, phase, end).Err(); err != nil {
			return fmt.Errorf("redisstore: rehash: %w", err)
		}
		if progress != nil {
			progress(RehashProgress{Phase: phase, Done: end, Total: total})
		}
	}
}

// moveBuckets moves the entries of old buckets [first, end) into the new
// layout: copy (HSETNX) first, then delete from the old bucket.
func (s *Store) moveBuckets(ctx context.Context, l *layout, first, end uint32) error {
	p := s.c.Pipeline()
	reads := make([]*redis.MapStringStringCmd, 0, end-first)
	for b := first; b < end; b++ {
		reads = append(reads, p.HGetAll(ctx, s.bucketKey(&l.cur, b)))
	}
	if _, err := p.Exec(ctx); err != nil {
		return err
	}
	copyP, delP := s.c.Pipeline(), s.c.Pipeline()
	for i, r := range reads {
		b := first + uint32(i)
		oldKey := s.bucketKey(&l.cur, b)
		for field, code := range r.Val() {
			if code != tombstone {
				k, err := l.cur.keyOf(b, field)
				if err != nil {
					return err
				}
				nk, nf := s.locate(l.next, &k)
				copyP.HSetNX(ctx, nk, nf, code)
			}
			delP.HDel(ctx, oldKey, field)
		}
	}
	if copyP.Len() > 0 {
		if _, err := copyP.Exec(ctx); err != nil {
			return err
		}
	}
	if delP.Len() > 0 {
		if _, err := delP.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// finishRehash switches the layout and purges the tombstones.
func (s *Store) finishRehash(ctx context.Context, l *layout, target string) error {
	if err := switchScript.Run(ctx, s.c, []string{s.meta}, target, layoutCurrent).Err(); err != nil {
		return fmt.Errorf("redisstore: rehash: switch: %w", err)
	}
	if err := s.loadMeta(ctx); err != nil {
		return err
	}
	g := l.next
	cmds := make([]*redis.Cmd, 0, s.batch)
	err := s.forBuckets(ctx, 1<<g.bits, s.batch, func(p redis.Pipeliner, b uint32) {
		cmds = append(cmds, purgeScript.Eval(ctx, p, []string{s.bucketKey(g, b)}, tombstone))
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
		return fmt.Errorf("redisstore: rehash: purge tombstones: %w", err)
	}
	return nil
}

// Resize is the operator's step (`hub table-rehash`): it reads the layout
// and, when the table's bucket count differs from the one the options ask
// for (hub.expected_users), rehashes to it, printing progress to w. It is
// safe to interrupt and to run again: it resumes where it stopped, and it
// does nothing when the table already has the wanted size.
func (s *Store) Resize(ctx context.Context, w io.Writer) error {
	l, err := s.Layout(ctx)
	if err != nil {
		return err
	}
	target := l.WantBits
	if l.RehashBits != 0 {
		target = l.RehashBits // finish the rehash in progress first
	}
	if target == l.BucketBits {
		fmt.Fprintf(w, "table has %d bucket bits (%d buckets), as configured; nothing to do\n", l.BucketBits, 1<<l.BucketBits)
		return nil
	}
	fmt.Fprintf(w, "rehashing from %d to %d bucket bits\n", l.BucketBits, target)
	last := ""
	err = s.Rehash(ctx, target, 0, func(p RehashProgress) {
		if pct := fmt.Sprintf("%s %d%%", p.Phase, uint64(p.Done)*100/uint64(p.Total)); pct != last && (p.Done == p.Total || p.Done%(p.Total/10+1) < scanBatch) {
			fmt.Fprintf(w, "  %s (%d of %d old buckets)\n", pct, p.Done, p.Total)
			last = pct
		}
	})
	if err != nil {
		return err
	}
	st, err := s.Stats(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "done: %d bucket bits, %d entries, largest bucket %d, %d over %d entries\n", target, st.Entries, st.MaxBucket, st.Overfull, ListpackEntries)
	return nil
}
