package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrConflict is returned (wrapped) by Partitioned.Get for a key that more
// than one region claims. It matches ErrNotFound: a conflicted user
// resolves to no region, so no region can take another's user by
// claiming it too.
var ErrConflict = fmt.Errorf("%w: claimed by more than one region", ErrNotFound)

// ErrForeignEntry is returned by Partitioned's writes for an entry naming
// a region other than the writer's.
var ErrForeignEntry = errors.New("lookup: a region writes only entries that point to itself")

// ErrNoPartition is returned by a PartitionOpener for a region whose
// partition does not exist yet: it holds no entries for now.
var ErrNoPartition = errors.New("lookup: no partition yet")

// PartitionOpener opens region's partition for reading.
type PartitionOpener func(ctx context.Context, region string) (Store, error)

// Partitioned is the lookup store of mesh topology, where the regions
// write the shared table themselves. Each region has its own partition,
// which only it can write (the store enforces that: Redis ACL users whose
// write permission covers their own partition's key prefix only, see
// docs/operations.md); every region reads all of them. A region's writes
// go to its own partition and must point to itself; a read believes an
// entry of region r's partition only when it names r, and a key claimed in
// more than one partition resolves to nothing (ErrConflict), so a region
// holding its own store credentials can neither remove nor rewrite another
// region's entry, nor take its user by claiming it.
type Partitioned struct {
	self     string
	own      Store
	regions  []string
	open     PartitionOpener
	conflict func(Key, []string)

	mu    sync.Mutex
	parts map[string]Store
}

// NewPartitioned returns region self's view of the partitioned table of
// regions: own is self's partition (read and written), open opens another
// region's partition for reading (lazily, again after ErrNoPartition).
// onConflict, when not nil, is told of every conflicted key a read meets.
func NewPartitioned(self string, own Store, regions []string, open PartitionOpener, onConflict func(Key, []string)) (*Partitioned, error) {
	if err := ValidateRegion(self); err != nil {
		return nil, err
	}
	if own == nil || open == nil || !slices.Contains(regions, self) {
		return nil, errors.New("lookup: partitioned store needs its own partition, an opener and its region among the regions")
	}
	for _, r := range regions {
		if err := ValidateRegion(r); err != nil {
			return nil, err
		}
	}
	return &Partitioned{self: self, own: own, regions: slices.Clone(regions), open: open, conflict: onConflict,
		parts: map[string]Store{self: own}}, nil
}

var _ Store = (*Partitioned)(nil)

// partition returns region's partition, nil when it does not exist yet.
func (p *Partitioned) partition(ctx context.Context, region string) (Store, error) {
	p.mu.Lock()
	s, ok := p.parts[region]
	p.mu.Unlock()
	if ok {
		return s, nil
	}
	s, err := p.open(ctx, region)
	if errors.Is(err, ErrNoPartition) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: partition of %s: %v", ErrUnavailable, region, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if prev, ok := p.parts[region]; ok {
		return prev, nil
	}
	p.parts[region] = s
	return s, nil
}

// claims returns, for each key, the regions whose partition claims it.
func (p *Partitioned) claims(ctx context.Context, keys []Key) ([][]string, error) {
	out := make([][]string, len(keys))
	for _, r := range p.regions {
		s, err := p.partition(ctx, r)
		if err != nil {
			return nil, err
		}
		if s == nil {
			continue
		}
		got, err := s.GetMany(ctx, keys)
		if err != nil {
			return nil, err
		}
		for i, g := range got {
			if g == r { // an entry counts only in the partition of the region it names
				out[i] = append(out[i], r)
			}
		}
	}
	return out, nil
}

// Get returns the one region claiming k; ErrNotFound when none does,
// ErrConflict when several do.
func (p *Partitioned) Get(ctx context.Context, k Key) (string, error) {
	c, err := p.claims(ctx, []Key{k})
	if err != nil {
		return "", err
	}
	switch len(c[0]) {
	case 0:
		return "", fmt.Errorf("lookup: get %s: %w", k, ErrNotFound)
	case 1:
		return c[0][0], nil
	}
	if p.conflict != nil {
		p.conflict(k, c[0])
	}
	return "", fmt.Errorf("lookup: get %s: %w (%v)", k, ErrConflict, c[0])
}

// GetMany returns the region claiming each key, "" for a key no region
// claims. For a conflicted key it returns this region when it is among
// the claimers, else one of them (so this region's put of it is refused as
// a double claim); Get is what resolves users and answers ErrConflict.
func (p *Partitioned) GetMany(ctx context.Context, keys []Key) ([]string, error) {
	c, err := p.claims(ctx, keys)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	for i, rs := range c {
		switch {
		case len(rs) == 1:
			out[i] = rs[0]
		case slices.Contains(rs, p.self):
			out[i] = p.self
		case len(rs) > 1:
			out[i] = rs[0]
		}
		if len(rs) > 1 && p.conflict != nil {
			p.conflict(keys[i], rs)
		}
	}
	return out, nil
}

// Put writes k to this region's partition; region must be this region.
func (p *Partitioned) Put(ctx context.Context, k Key, region string) error {
	if region != p.self {
		return fmt.Errorf("%w: %s writing an entry for %q", ErrForeignEntry, p.self, region)
	}
	return p.own.Put(ctx, k, region)
}

// PutMany writes entries to this region's partition; every entry must
// point to this region.
func (p *Partitioned) PutMany(ctx context.Context, entries []Entry) error {
	for _, e := range entries {
		if e.Region != p.self {
			return fmt.Errorf("%w: %s writing an entry for %q", ErrForeignEntry, p.self, e.Region)
		}
	}
	return p.own.PutMany(ctx, entries)
}

// Delete removes k from this region's partition (ErrNotFound when this
// region does not claim it).
func (p *Partitioned) Delete(ctx context.Context, k Key) error { return p.own.Delete(ctx, k) }

// DeleteMany removes keys from this region's partition.
func (p *Partitioned) DeleteMany(ctx context.Context, keys []Key) error {
	return p.own.DeleteMany(ctx, keys)
}

// Scan visits every partition's entries that name the partition's region
// (a conflicted key is visited once per claiming region).
func (p *Partitioned) Scan(ctx context.Context, fn func(Entry) error) error {
	for _, r := range p.regions {
		s, err := p.partition(ctx, r)
		if err != nil {
			return err
		}
		if s == nil {
			continue
		}
		if err := s.Scan(ctx, func(e Entry) error {
			if e.Region != r {
				return nil
			}
			return fn(e)
		}); err != nil {
			return err
		}
	}
	return nil
}

// Ping checks this region's partition.
func (p *Partitioned) Ping(ctx context.Context) error { return p.own.Ping(ctx) }
