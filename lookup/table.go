package lookup

import (
	"context"
	"errors"
	"fmt"
	"iter"
)

// BatchSize is the number of users a Table hashes and sends to the Store per
// PutMany/GetMany call in Import, Rehash and FinishRotation.
const BatchSize = 1000

// ErrNotRotating is returned by Rehash and FinishRotation when the Table's
// Hasher has no previous key.
var ErrNotRotating = errors.New("lookup: no key rotation in progress")

// Table is the hub's user→region table: a Hasher in front of a Store. A Table
// is safe for concurrent use.
//
// # Key rotation
//
// Keys are one-way, so entries cannot be re-keyed from the Store alone: the
// usernames are needed, and only the regions have them. A rotation from key
// A to key B therefore runs as:
//
//  1. Roll out every hub with NewHasher(B, A). Such a Table reads the B entry
//     first and falls back to the A entry (Resolve), writes both (Assign,
//     Import) and deletes both (Remove), so hubs still on NewHasher(A, nil)
//     keep reading correct A entries during the rollout.
//  2. Once the rollout is complete, every region re-announces its users:
//     the hub feeds each region's username list to Rehash, which copies the
//     A entry to the B key (the A entry is authoritative: it is written by
//     every hub, old or new) and reports users the region claims but the
//     table places elsewhere or does not know. Rehash is idempotent and may
//     be re-run at any time during the rotation.
//  3. FinishRotation with the same lists does what Rehash does and then
//     deletes the A entries. Afterwards roll out NewHasher(B, nil) and
//     destroy key A. A entries of users no region announced stay behind as
//     unreachable 16-byte garbage that nobody can link to a username once A
//     is destroyed.
type Table struct {
	h *Hasher
	s Store
}

// NewTable returns a Table hashing usernames with h and storing entries in s.
func NewTable(h *Hasher, s Store) (*Table, error) {
	if h == nil || !h.valid {
		return nil, fmt.Errorf("lookup: NewTable: %w", errZeroHasher)
	}
	if s == nil {
		return nil, errors.New("lookup: NewTable: nil Store")
	}
	return &Table{h: h, s: s}, nil
}

// Resolve returns the home region of username, or an error matching
// ErrNotFound if the table has none (or ErrInvalidUsername). During a
// rotation the current-key entry wins over the previous-key entry; both are
// fetched in one GetMany round trip.
func (t *Table) Resolve(ctx context.Context, username string) (string, error) {
	n, err := Normalize(username)
	if err != nil {
		return "", err
	}
	cur, prev, rotating := t.h.keysNormalized(n)
	if !rotating {
		r, err := t.s.Get(ctx, cur)
		if err != nil {
			return "", fmt.Errorf("lookup: resolve: %w", err)
		}
		return r, nil
	}
	rs, err := t.s.GetMany(ctx, []Key{cur, prev})
	if err != nil {
		return "", fmt.Errorf("lookup: resolve: %w", err)
	}
	for _, r := range rs {
		if r != "" {
			return r, nil
		}
	}
	return "", fmt.Errorf("lookup: resolve: %w", ErrNotFound)
}

// Assign sets the home region of username, under the current key and, during
// a rotation, under the previous key too.
func (t *Table) Assign(ctx context.Context, username, region string) error {
	if err := ValidateRegion(region); err != nil {
		return err
	}
	n, err := Normalize(username)
	if err != nil {
		return err
	}
	cur, prev, rotating := t.h.keysNormalized(n)
	if !rotating {
		err = t.s.Put(ctx, cur, region)
	} else {
		err = t.s.PutMany(ctx, []Entry{{Key: cur, Region: region}, {Key: prev, Region: region}})
	}
	if err != nil {
		return fmt.Errorf("lookup: assign: %w", err)
	}
	return nil
}

// Remove deletes the entry of username under every key the Hasher knows. It
// returns an error matching ErrNotFound if there was none.
func (t *Table) Remove(ctx context.Context, username string) error {
	n, err := Normalize(username)
	if err != nil {
		return err
	}
	cur, prev, rotating := t.h.keysNormalized(n)
	found := false
	for i, k := range []Key{cur, prev} {
		if i == 1 && !rotating {
			break
		}
		switch err := t.s.Delete(ctx, k); {
		case err == nil:
			found = true
		case !errors.Is(err, ErrNotFound):
			return fmt.Errorf("lookup: remove: %w", err)
		}
	}
	if !found {
		return fmt.Errorf("lookup: remove: %w", ErrNotFound)
	}
	return nil
}

// Import assigns regions in bulk: entries yields (username, region) pairs,
// which are hashed and written with Store.PutMany in batches of BatchSize
// (under both keys during a rotation). After every batch progress, if not
// nil, is called with the number of users written so far. Import stops at the
// first invalid username or region (the error names its 0-based position,
// never the username) or store error, and returns the number of users
// written before it; since writes are idempotent the import can be repeated.
func (t *Table) Import(ctx context.Context, entries iter.Seq2[string, string], progress func(done int)) (int, error) {
	done, pos, users := 0, 0, 0
	batch := make([]Entry, 0, 2*BatchSize)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := t.s.PutMany(ctx, batch); err != nil {
			return fmt.Errorf("lookup: import: %w", err)
		}
		done += users
		batch, users = batch[:0], 0
		if progress != nil {
			progress(done)
		}
		return nil
	}
	for username, region := range entries {
		if err := ctx.Err(); err != nil {
			return done, fmt.Errorf("lookup: import: %w", err)
		}
		if err := ValidateRegion(region); err != nil {
			return done, fmt.Errorf("lookup: import: entry %d: %w", pos, err)
		}
		n, err := Normalize(username)
		if err != nil {
			return done, fmt.Errorf("lookup: import: entry %d: %w", pos, err)
		}
		pos++
		cur, prev, rotating := t.h.keysNormalized(n)
		batch = append(batch, Entry{Key: cur, Region: region})
		if rotating {
			batch = append(batch, Entry{Key: prev, Region: region})
		}
		users++
		if users == BatchSize {
			if err := flush(); err != nil {
				return done, err
			}
		}
	}
	if err := flush(); err != nil {
		return done, err
	}
	return done, nil
}

// RehashReport counts what Rehash or FinishRotation found for the usernames
// a region announced.
type RehashReport struct {
	// Announced is the number of usernames received.
	Announced int
	// Invalid counts usernames rejected by Normalize (they cannot be in the
	// table).
	Invalid int
	// Migrated counts users whose current-key entry was created or corrected
	// from the previous-key entry.
	Migrated int
	// Current counts users whose current-key entry was already right.
	Current int
	// Missing counts users with no entry under either key. They are left
	// alone: only Assign or Import add users.
	Missing int
	// Foreign counts users the table places in a region other than the
	// announcing one. The table is left as it is; the report lets an
	// operator investigate. Always 0 for FinishRotation.
	Foreign int
	// Dropped counts previous-key entries deleted (FinishRotation only).
	Dropped int
}

// Rehash is step 2 of a key rotation (see Table): region re-announces its
// users, and for each one that has a previous-key entry the current-key entry
// is created or corrected to match it. Rehash works in batches of BatchSize
// with two GetMany and at most one PutMany per batch. It returns
// ErrNotRotating if the Hasher has no previous key.
func (t *Table) Rehash(ctx context.Context, region string, usernames iter.Seq[string]) (RehashReport, error) {
	if err := ValidateRegion(region); err != nil {
		return RehashReport{}, err
	}
	return t.migrate(ctx, region, usernames, false)
}

// FinishRotation is step 3 of a key rotation (see Table): for the announced
// usernames it does what Rehash does and then deletes their previous-key
// entries. Call it only once every hub runs the rotating Hasher; afterwards
// switch every hub to a Hasher without the previous key. It returns
// ErrNotRotating if the Hasher has no previous key.
func (t *Table) FinishRotation(ctx context.Context, usernames iter.Seq[string]) (RehashReport, error) {
	return t.migrate(ctx, "", usernames, true)
}

func (t *Table) migrate(ctx context.Context, region string, usernames iter.Seq[string], drop bool) (RehashReport, error) {
	var rep RehashReport
	if !t.h.Rotating() {
		return rep, ErrNotRotating
	}
	curs := make([]Key, 0, BatchSize)
	prevs := make([]Key, 0, BatchSize)
	fix := make([]Entry, 0, BatchSize)
	flush := func() error {
		if len(curs) == 0 {
			return nil
		}
		cr, err := t.s.GetMany(ctx, curs)
		if err != nil {
			return err
		}
		pr, err := t.s.GetMany(ctx, prevs)
		if err != nil {
			return err
		}
		fix = fix[:0]
		for i := range curs {
			switch {
			case pr[i] != "" && cr[i] != pr[i]:
				fix = append(fix, Entry{Key: curs[i], Region: pr[i]})
				rep.Migrated++
			case pr[i] != "" || cr[i] != "":
				rep.Current++
			default:
				rep.Missing++
				continue
			}
			placed := pr[i] // the previous-key entry is authoritative
			if placed == "" {
				placed = cr[i]
			}
			if region != "" && placed != region {
				rep.Foreign++
			}
		}
		if err := t.s.PutMany(ctx, fix); err != nil {
			return err
		}
		if drop {
			var dropped int
			for i := range prevs {
				if pr[i] != "" {
					prevs[dropped] = prevs[i]
					dropped++
				}
			}
			if err := t.s.DeleteMany(ctx, prevs[:dropped]); err != nil {
				return err
			}
			rep.Dropped += dropped
		}
		curs, prevs = curs[:0], prevs[:0]
		return nil
	}
	for u := range usernames {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("lookup: rehash: %w", err)
		}
		rep.Announced++
		n, err := Normalize(u)
		if err != nil {
			rep.Invalid++
			continue
		}
		c, p, _ := t.h.keysNormalized(n)
		curs = append(curs, c)
		prevs = append(prevs, p)
		if len(curs) == BatchSize {
			if err := flush(); err != nil {
				return rep, fmt.Errorf("lookup: rehash: %w", err)
			}
		}
	}
	if err := flush(); err != nil {
		return rep, fmt.Errorf("lookup: rehash: %w", err)
	}
	return rep, nil
}
