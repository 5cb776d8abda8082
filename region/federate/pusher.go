package federate

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region/store"
)

// Outbox is the part of the region store the Pusher drains.
type Outbox interface {
	PendingOutbox(ctx context.Context, limit int) ([]store.OutboxEntry, error)
	AckOutbox(ctx context.Context, seq int64) error
}

// KeySink receives a region's lookup-table changes. Apply must be
// idempotent: a batch is sent again when its acknowledgement was lost.
type KeySink interface {
	Apply(ctx context.Context, changes []federation.KeyChange) (federation.ChangesResult, error)
}

// PusherConfig configures a Pusher.
type PusherConfig struct {
	Region string
	Outbox Outbox
	// Hasher computes lookup keys with k_hub; during a rotation both keys
	// of a user are announced.
	Hasher *lookup.Hasher
	Sink   KeySink
	// Batch is the number of outbox entries per delivery (default 500).
	Batch int
	// Poll is how often an empty outbox is looked at again (default 2s);
	// Notify wakes the loop earlier.
	Poll time.Duration
	// MinBackoff and MaxBackoff bound the exponential, jittered retry
	// delay after a failed delivery (defaults 500ms and 1m).
	MinBackoff, MaxBackoff time.Duration
	Log                    *slog.Logger
}

// Pusher drains a region's user outbox to the lookup table: it turns each
// entry into keyed hashes, delivers them, and acknowledges entries only
// after the sink accepted them, so nothing is lost while the hub is down;
// the outbox simply grows and is delivered in order when it returns.
type Pusher struct {
	cfg    PusherConfig
	notify chan struct{}
}

// NewPusher returns a Pusher; run it with Run.
func NewPusher(cfg PusherConfig) (*Pusher, error) {
	if cfg.Outbox == nil || cfg.Hasher == nil || cfg.Sink == nil {
		return nil, errors.New("federation: pusher needs an outbox, a hasher and a sink")
	}
	if err := lookup.ValidateRegion(cfg.Region); err != nil {
		return nil, err
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 500
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(time.Minute, cfg.MinBackoff)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Pusher{cfg: cfg, notify: make(chan struct{}, 1)}, nil
}

// Notify wakes the loop (after a user change) without waiting for Poll.
func (p *Pusher) Notify() {
	select {
	case p.notify <- struct{}{}:
	default:
	}
}

// Run delivers until ctx is cancelled, backing off after failures.
func (p *Pusher) Run(ctx context.Context) error {
	var backoff time.Duration
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		case <-p.notify:
		}
		n, err := p.Flush(ctx)
		wait := p.cfg.Poll
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			backoff = min(max(2*backoff, p.cfg.MinBackoff), p.cfg.MaxBackoff)
			// Full jitter in [backoff/2, backoff): many regions retrying a
			// hub that just came back do not arrive in lockstep.
			wait = backoff/2 + rand.N(backoff/2+1)
			p.cfg.Log.WarnContext(ctx, "delivering user changes to the hub failed; will retry",
				"region", p.cfg.Region, "delivered", n, "retry_in", wait, "err", err)
		default:
			backoff = 0
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// Flush delivers every pending outbox entry now, batch by batch, and
// returns how many were acknowledged. It stops at the first failure;
// undelivered entries stay in the outbox.
func (p *Pusher) Flush(ctx context.Context) (int, error) {
	done := 0
	for {
		entries, err := p.cfg.Outbox.PendingOutbox(ctx, p.cfg.Batch)
		if err != nil {
			return done, fmt.Errorf("reading the outbox: %w", err)
		}
		if len(entries) == 0 {
			return done, nil
		}
		changes := make([]federation.KeyChange, 0, 2*len(entries))
		for _, e := range entries {
			op := e.Op
			if op != federation.OpPut && op != federation.OpDelete {
				p.cfg.Log.ErrorContext(ctx, "outbox entry with unknown op dropped", "seq", e.Seq, "op", op)
				continue
			}
			cur, prev, err := p.cfg.Hasher.Keys(e.Username)
			if err != nil {
				// Cannot be in the table; the error never names the user.
				p.cfg.Log.ErrorContext(ctx, "outbox entry with invalid username dropped", "seq", e.Seq, "err", err)
				continue
			}
			changes = append(changes, federation.KeyChange{Op: op, Key: cur.String()})
			if prev != nil {
				changes = append(changes, federation.KeyChange{Op: op, Key: prev.String()})
			}
		}
		if len(changes) > 0 {
			res, err := p.cfg.Sink.Apply(ctx, changes)
			if err != nil {
				return done, err
			}
			if res.Conflicts > 0 {
				p.cfg.Log.WarnContext(ctx, "the lookup table places some of this region's users in another region; run hub reconcile",
					"region", p.cfg.Region, "conflicts", res.Conflicts)
			}
		}
		for _, e := range entries {
			if err := p.cfg.Outbox.AckOutbox(ctx, e.Seq); err != nil && !errors.Is(err, store.ErrNotFound) {
				return done, fmt.Errorf("acknowledging outbox entry %d: %w", e.Seq, err)
			}
			done++
		}
		if len(entries) < p.cfg.Batch {
			return done, nil
		}
	}
}

// HubSink delivers changes to the hub's ChangesPath with the region's hub
// client credentials (HTTP Basic).
type HubSink struct {
	hubURL string
	creds  federation.Credentials
	client *http.Client
}

// NewHubSink returns the sink of region towards the hub at hubURL; key is
// the region's federation private key, which signs its client assertions.
func NewHubSink(hubURL string, key *ecdsa.PrivateKey, region string, client *http.Client) (*HubSink, error) {
	if client == nil || key == nil {
		return nil, errors.New("federation: hub sink needs the region's key and an HTTP client")
	}
	if _, err := url.Parse(hubURL); err != nil {
		return nil, err
	}
	return &HubSink{hubURL: hubURL, creds: federation.RegionCredentials(region, key), client: client}, nil
}

// Apply implements KeySink.
func (s *HubSink) Apply(ctx context.Context, changes []federation.KeyChange) (federation.ChangesResult, error) {
	var total federation.ChangesResult
	for len(changes) > 0 {
		n := min(len(changes), federation.MaxChanges)
		res, err := federation.PostChanges(ctx, s.client, s.hubURL, s.creds, changes[:n])
		if err != nil {
			return total, err
		}
		total.Applied += res.Applied
		total.Conflicts += res.Conflicts
		total.Ignored += res.Ignored
		changes = changes[n:]
	}
	return total, nil
}

// StoreSink applies a region's changes straight to the lookup store (mesh
// topology, where every region holds k_hub and reaches the store).
type StoreSink struct {
	Store  lookup.Store
	Region string
}

// Apply implements KeySink.
func (s StoreSink) Apply(ctx context.Context, changes []federation.KeyChange) (federation.ChangesResult, error) {
	return federation.ApplyChanges(ctx, s.Store, s.Region, changes)
}
