package lookup

import (
	"context"
	"errors"
	"fmt"

	"github.com/meridian-id/meridian/routing"
)

// MaxRegionLen is the maximum length of a region id.
const MaxRegionLen = 16

// ErrNotFound is returned (possibly wrapped) when a key has no entry.
var ErrNotFound = errors.New("lookup: not found")

// ErrUnavailable is matched by errors of a store that could not be reached
// or did not answer (a Redis node down, a timeout): the user may well exist,
// so callers answer "try again later", never "unknown user".
var ErrUnavailable = errors.New("lookup: store unavailable")

// ErrInvalidRegion is matched by errors reporting a malformed region id.
var ErrInvalidRegion = errors.New("lookup: invalid region id")

// ValidateRegion checks that id is a region id as configured for the
// federation, by the one rule [routing.ValidRegionID]: 1 to MaxRegionLen
// characters from [a-z0-9-], not starting with '-' (for example "eu", "us",
// "ap-south"). The error matches ErrInvalidRegion.
func ValidateRegion(id string) error {
	if !routing.ValidRegionID(id) {
		return fmt.Errorf("%w: %q is not 1..%d of [a-z0-9-] not starting with '-'", ErrInvalidRegion, id, MaxRegionLen)
	}
	return nil
}

// Entry is one row of the table: a user's Key and the id of its home region.
type Entry struct {
	// Key is the user's keyed hash.
	Key Key
	// Region is the id of the user's home region (see ValidateRegion).
	Region string
}

// Store is the persistence the Table needs, in the style of Dex's storage
// interface: a flat map from Key to region id. Implementations must be safe
// for concurrent use, must reject region ids that fail ValidateRegion with an
// error matching ErrInvalidRegion, and must pass the conformance suite in
// package conformance.
type Store interface {
	// Get returns the region of k, or an error matching ErrNotFound.
	Get(ctx context.Context, k Key) (string, error)
	// GetMany returns the regions of keys in order, with "" for keys that have
	// no entry. Remote stores answer it in pipelined round trips.
	GetMany(ctx context.Context, keys []Key) ([]string, error)
	// Put creates or overwrites the entry of k.
	Put(ctx context.Context, k Key, region string) error
	// PutMany creates or overwrites all entries, in pipelined batches for
	// remote stores. It is not atomic: on error a prefix of the batches may
	// have been written, and the call can simply be repeated.
	PutMany(ctx context.Context, entries []Entry) error
	// Delete removes the entry of k, or returns an error matching ErrNotFound
	// if there is none.
	Delete(ctx context.Context, k Key) error
	// DeleteMany removes the entries of keys, ignoring keys without an entry.
	DeleteMany(ctx context.Context, keys []Key) error
	// Scan calls fn for every entry, in no particular order, stopping at and
	// returning (wrapped) the first error fn returns. Entries written or
	// deleted while Scan runs may or may not be visited; every entry present
	// for the whole scan is visited exactly once.
	Scan(ctx context.Context, fn func(Entry) error) error
	// Ping checks that the store is reachable.
	Ping(ctx context.Context) error
}
