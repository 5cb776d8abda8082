package hub

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
)

// RegionReconcile is what Reconcile found for one region.
type RegionReconcile struct {
	Region string
	// Users is the number of users the region listed.
	Users int
	// Missing counts users the table did not know; Moved counts users it
	// placed in a region that does not claim them. Both are fixed with fix.
	Missing, Moved int
	// Conflicts counts users two regions claim; they are never fixed
	// automatically (one username, two accounts: an operator decides).
	Conflicts int
	// Unverified counts users the table places in a region that could
	// not be listed: left alone, since that region may still have them.
	Unverified int
	// Err is why the region could not be listed.
	Err error
}

// ReconcileReport is the result of Reconcile.
type ReconcileReport struct {
	Regions []RegionReconcile
	// Stale counts table entries no region claims. They are removed with
	// fix only when every region was listed (Complete): a region that
	// could not be asked must not lose its users.
	Stale, StaleRemoved int
	// Fixed counts entries written.
	Fixed int
	// Complete reports that every region was listed.
	Complete bool
}

// PageSize is the number of keys Reconcile asks a region for per page.
const PageSize = federation.DefaultPageSize

// claim is who lists a key: region, and others when several regions do.
type claim struct {
	region string
	others []string
}

// Reconcile pages through every region's user keys (the regions' user
// tables are the source of truth), compares them with the lookup table and,
// when fix is set, writes what is missing or wrong and removes what no
// region claims. The hub never sees a username: regions list keyed hashes.
// Memory is one map entry per user (about 60 bytes), so a 10M-user
// federation needs well under a gigabyte.
func (b *Broker) Reconcile(ctx context.Context, fix bool) (ReconcileReport, error) {
	rep := ReconcileReport{Complete: true}
	claims := map[lookup.Key]*claim{}
	prevOf := map[lookup.Key]lookup.Key{}
	idx := map[string]int{}
	listed := map[string]bool{}
	for _, id := range b.ids {
		rr := RegionReconcile{Region: id}
		err := b.listRegion(ctx, id, func(cur lookup.Key, prev *lookup.Key) {
			rr.Users++
			if prev != nil {
				prevOf[cur] = *prev
			}
			if c, ok := claims[cur]; ok {
				if c.region != id && !slices.Contains(c.others, id) {
					c.others = append(c.others, id)
				}
				return
			}
			claims[cur] = &claim{region: id}
		})
		if err != nil {
			if ctx.Err() != nil {
				return rep, ctx.Err()
			}
			rr.Err = err
			rep.Complete = false
		} else {
			listed[id] = true
		}
		idx[id] = len(rep.Regions)
		rep.Regions = append(rep.Regions, rr)
	}

	// Compare claimed keys with the table, in batches.
	keys := make([]lookup.Key, 0, len(claims))
	for k := range claims {
		keys = append(keys, k)
	}
	for start := 0; start < len(keys); start += lookup.BatchSize {
		batch := keys[start:min(start+lookup.BatchSize, len(keys))]
		have, err := b.cfg.Lookup.GetMany(ctx, batch)
		if err != nil {
			return rep, fmt.Errorf("hub: reconcile: %w", err)
		}
		var prevKeys []lookup.Key
		for _, k := range batch {
			if p, ok := prevOf[k]; ok {
				prevKeys = append(prevKeys, p)
			}
		}
		prevHave := map[lookup.Key]string{}
		if len(prevKeys) > 0 {
			ph, err := b.cfg.Lookup.GetMany(ctx, prevKeys)
			if err != nil {
				return rep, fmt.Errorf("hub: reconcile: %w", err)
			}
			for i, p := range prevKeys {
				prevHave[p] = ph[i]
			}
		}
		var put []lookup.Entry
		for i, k := range batch {
			c := claims[k]
			rr := &rep.Regions[idx[c.region]]
			if len(c.others) > 0 {
				rr.Conflicts++
				for _, o := range c.others {
					rep.Regions[idx[o]].Conflicts++
				}
				continue
			}
			got := have[i]
			if got == "" {
				if p, ok := prevOf[k]; ok {
					got = prevHave[p]
				}
			}
			switch {
			case got == c.region:
				continue
			case got == "":
				rr.Missing++
			case !listed[got]:
				rr.Unverified++
				continue
			default:
				rr.Moved++
			}
			put = append(put, lookup.Entry{Key: k, Region: c.region})
			if p, ok := prevOf[k]; ok {
				put = append(put, lookup.Entry{Key: p, Region: c.region})
			}
		}
		if fix && len(put) > 0 {
			if err := b.cfg.Lookup.PutMany(ctx, put); err != nil {
				return rep, fmt.Errorf("hub: reconcile: %w", err)
			}
			rep.Fixed += len(put)
		}
	}

	// Entries nobody claims.
	known := make(map[lookup.Key]struct{}, len(prevOf))
	for _, p := range prevOf {
		known[p] = struct{}{}
	}
	var stale []lookup.Key
	err := b.cfg.Lookup.Scan(ctx, func(e lookup.Entry) error {
		if _, ok := claims[e.Key]; ok {
			return nil
		}
		if _, ok := known[e.Key]; ok {
			return nil
		}
		stale = append(stale, e.Key)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("hub: reconcile: scanning the table: %w", err)
	}
	rep.Stale = len(stale)
	if fix && rep.Complete {
		for start := 0; start < len(stale); start += lookup.BatchSize {
			batch := stale[start:min(start+lookup.BatchSize, len(stale))]
			if err := b.cfg.Lookup.DeleteMany(ctx, batch); err != nil {
				return rep, fmt.Errorf("hub: reconcile: %w", err)
			}
			rep.StaleRemoved += len(batch)
		}
	}
	return rep, nil
}

// listRegion calls fn for every user key region lists.
func (b *Broker) listRegion(ctx context.Context, id string, fn func(cur lookup.Key, prev *lookup.Key)) error {
	r := b.regions[id]
	creds, err := federation.HubCredentials(b.cfg.Codec, id, b.cfg.Issuer, b.cfg.Keys.Key)
	if err != nil {
		return err
	}
	after := ""
	for {
		page, err := federation.ListUserKeys(ctx, b.cfg.HTTPClient, r.Issuer, creds, after, PageSize)
		if err != nil {
			return err
		}
		if page.Region != id {
			return errors.New("hub: reconcile: region answered for another region")
		}
		for i, s := range page.Keys {
			k, err := federation.ParseKey(s)
			if err != nil {
				return err
			}
			var prev *lookup.Key
			if len(page.PrevKeys) > 0 {
				p, err := federation.ParseKey(page.PrevKeys[i])
				if err != nil {
					return err
				}
				prev = &p
			}
			fn(k, prev)
		}
		if page.Next == "" {
			return nil
		}
		after = page.Next
	}
}
