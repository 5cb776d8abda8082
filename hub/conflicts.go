package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
)

// Audit events of the hub table (a JSON log record with msg "audit").
const (
	// AuditTableConflict: a region claimed a user the table places in
	// another region; the claim is held as a conflict.
	AuditTableConflict = "hub.table.conflict"
	// AuditTableRefused: a region tried to delete an entry that does not
	// point to it.
	AuditTableRefused = "hub.table.refused"
	// AuditConflictResolved: an operator resolved a conflict.
	AuditConflictResolved = "hub.table.conflict_resolved"
)

// Conflict is a user (by lookup key) two regions claim: the table keeps
// Holder's entry, Claimant's claim waits for an operator.
type Conflict struct {
	Key      lookup.Key
	Holder   string // "" when the holder has since removed its entry
	Claimant string
}

// ErrNoConflict is returned by ResolveConflict for a key with no conflict.
var ErrNoConflict = errors.New("hub: no conflict held for this key")

// applyChanges applies a region's changes to the table. Only entries that
// point to region are ever written or removed (federation.ApplyChanges);
// the hub serializes the writes of its node so that a check and its write
// are not interleaved with another region's. A put of a key another region
// holds is refused and held as a conflict (metric, audit record), never
// last-writer-wins; a delete of another region's entry is refused and
// audited.
func (b *Broker) applyChanges(ctx context.Context, region string, changes []federation.KeyChange) (federation.ChangesResult, error) {
	b.tableMu.Lock()
	defer b.tableMu.Unlock()
	var held []lookup.Entry
	refusedDeletes := 0
	res, err := federation.ApplyChangesFunc(ctx, b.cfg.Lookup, region, changes, func(r federation.Refusal) {
		switch r.Op {
		case federation.OpPut:
			held = append(held, lookup.Entry{Key: r.Key, Region: region})
			b.audit(ctx, AuditTableConflict, slog.String("region", region), slog.String("holder", r.Holder), slog.String("key", r.Key.String()))
			if b.conflicts != nil {
				b.conflicts.Add(ctx, 1, metric.WithAttributes(attribute.String("region", region), attribute.String("holder", r.Holder)))
			}
		case federation.OpDelete:
			if r.Holder != "" {
				refusedDeletes++
				b.audit(ctx, AuditTableRefused, slog.String("region", region), slog.String("op", r.Op),
					slog.String("holder", r.Holder), slog.String("key", r.Key.String()))
			}
		}
	})
	if len(held) > 0 {
		if perr := b.cfg.Conflicts.PutMany(ctx, held); perr != nil {
			err = errors.Join(err, fmt.Errorf("hub: holding conflicts: %w", perr))
		}
	}
	return res, err
}

// audit writes one audit record and counts it.
func (b *Broker) audit(ctx context.Context, event string, attrs ...slog.Attr) {
	if b.auditEvents != nil {
		b.auditEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("event", event)))
	}
	b.log.LogAttrs(ctx, slog.LevelWarn, "audit", append([]slog.Attr{slog.String("event", event)}, attrs...)...)
}

// Conflicts lists the conflicts held, with each key's current holder.
func (b *Broker) Conflicts(ctx context.Context) ([]Conflict, error) {
	var out []Conflict
	err := b.cfg.Conflicts.Scan(ctx, func(e lookup.Entry) error {
		out = append(out, Conflict{Key: e.Key, Claimant: e.Region})
		return nil
	})
	if err != nil {
		return nil, err
	}
	keys := make([]lookup.Key, len(out))
	for i := range out {
		keys[i] = out[i].Key
	}
	for start := 0; start < len(keys); start += lookup.BatchSize {
		have, err := b.cfg.Lookup.GetMany(ctx, keys[start:min(start+lookup.BatchSize, len(keys))])
		if err != nil {
			return nil, err
		}
		for i, h := range have {
			out[start+i].Holder = h
		}
	}
	slices.SortFunc(out, func(a, c Conflict) int { return slices.Compare(a.Key[:], c.Key[:]) })
	return out, nil
}

// ResolveConflict ends the conflict held for k: the table's entry for k
// is set to region (which must be the holder or the claimant), and the
// conflict is dropped. The decision is audited.
func (b *Broker) ResolveConflict(ctx context.Context, k lookup.Key, region string) error {
	b.tableMu.Lock()
	defer b.tableMu.Unlock()
	claimant, err := b.cfg.Conflicts.Get(ctx, k)
	if errors.Is(err, lookup.ErrNotFound) {
		return ErrNoConflict
	}
	if err != nil {
		return err
	}
	holder, err := b.cfg.Lookup.Get(ctx, k)
	if err != nil && !errors.Is(err, lookup.ErrNotFound) {
		return err
	}
	if region != claimant && region != holder {
		return fmt.Errorf("hub: %q is neither the holder (%q) nor the claimant (%q)", region, holder, claimant)
	}
	if err := b.cfg.Lookup.Put(ctx, k, region); err != nil {
		return err
	}
	if err := b.cfg.Conflicts.Delete(ctx, k); err != nil && !errors.Is(err, lookup.ErrNotFound) {
		return err
	}
	b.audit(ctx, AuditConflictResolved, slog.String("key", k.String()), slog.String("region", region),
		slog.String("holder", holder), slog.String("claimant", claimant))
	return nil
}
