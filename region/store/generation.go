package store

import (
	"context"
	"errors"
	"time"
)

// Generation is the fencing record of a region's database: which site
// (by host name) holds the region's write authority, in which epoch, and —
// once another site has taken over — that this database is fenced.
//
// Every site of a region has its own database (the primary's, the DR
// site's streaming standby). A promotion advances the promoted database's
// number; the returning old primary learns the higher number from its peer
// site and records FencedBy in its own database, so it stays fenced across
// restarts until it is rebuilt from the promoted site (a rebuilt database is
// a copy of the promoted one and carries no fence).
type Generation struct {
	Number       int64     // 0 until a site first claims the database
	Holder       string    // host name of the site that claimed Number; "" before
	FencedBy     int64     // the higher generation that fenced this database; 0 when not fenced
	FencedHolder string    // the site that holds FencedBy
	UpdatedAt    time.Time // when the record last changed
}

// Fenced reports whether the database has been superseded by another site.
func (g Generation) Fenced() bool { return g.FencedBy > 0 }

// ErrSchemaNotCurrent is returned by CheckSchema when a read-only database
// lacks migrations this binary needs (an empty, never-replicated standby, or
// a primary that has not been upgraded yet).
var ErrSchemaNotCurrent = errors.New("store: database schema is not current")

// Replication is implemented by backends that can run on a read-only
// streaming standby and take part in fencing (PostgreSQL; SQLite implements
// it trivially: it is never in recovery). It is separate from Store so a
// backend without a replica story still satisfies Store.
type Replication interface {
	// InRecovery reports whether the database is a read-only standby
	// (PostgreSQL: pg_is_in_recovery()).
	InRecovery(ctx context.Context) (bool, error)
	// Promote asks a standby to leave recovery and waits (up to 60 s)
	// until it accepts writes (PostgreSQL: pg_promote). On a writable
	// database it does nothing.
	Promote(ctx context.Context) error
	// CheckSchema returns ErrSchemaNotCurrent (wrapped, naming the first
	// missing migration) unless every embedded migration has been applied.
	// It only reads, so it works on a standby where Migrate cannot.
	CheckSchema(ctx context.Context) error
	// Generation reads the fencing record.
	Generation(ctx context.Context) (Generation, error)
	// ClaimGeneration makes holder the holder: when another site (or
	// nobody) holds the database it advances Number by one and records
	// holder, atomically; when holder already holds it, it changes
	// nothing. It returns the record after the call. It fails on a
	// standby (read-only) and does not clear a fence.
	ClaimGeneration(ctx context.Context, holder string) (Generation, error)
	// Fence records that generation by (held by byHolder) supersedes this
	// database. It keeps the highest fence seen and is idempotent.
	Fence(ctx context.Context, by int64, byHolder string) (Generation, error)
}
