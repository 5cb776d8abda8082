// Package memstore is an in-memory lookup.Store for tests, examples and
// single-process tools. It keeps nothing across restarts.
package memstore

import (
	"context"
	"fmt"
	"sync"

	"github.com/meridian-id/meridian/lookup"
)

// Store is a map-backed lookup.Store, safe for concurrent use.
type Store struct {
	mu sync.RWMutex
	m  map[lookup.Key]string
}

var _ lookup.Store = (*Store)(nil)

// New returns an empty Store.
func New() *Store { return &Store{m: make(map[lookup.Key]string)} }

// Get implements lookup.Store.
func (s *Store) Get(ctx context.Context, k lookup.Key) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	s.mu.RLock()
	r, ok := s.m[k]
	s.mu.RUnlock()
	if !ok {
		return "", fmt.Errorf("memstore: get %s: %w", k, lookup.ErrNotFound)
	}
	return r, nil
}

// GetMany implements lookup.Store.
func (s *Store) GetMany(ctx context.Context, keys []lookup.Key) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := make([]string, len(keys))
	s.mu.RLock()
	for i, k := range keys {
		out[i] = s.m[k]
	}
	s.mu.RUnlock()
	return out, nil
}

// Put implements lookup.Store.
func (s *Store) Put(ctx context.Context, k lookup.Key, region string) error {
	return s.PutMany(ctx, []lookup.Entry{{Key: k, Region: region}})
}

// PutMany implements lookup.Store.
func (s *Store) PutMany(ctx context.Context, entries []lookup.Entry) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, e := range entries {
		if err := lookup.ValidateRegion(e.Region); err != nil {
			return fmt.Errorf("memstore: put: %w", err)
		}
	}
	s.mu.Lock()
	for _, e := range entries {
		s.m[e.Key] = e.Region
	}
	s.mu.Unlock()
	return nil
}

// Delete implements lookup.Store.
func (s *Store) Delete(ctx context.Context, k lookup.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	_, ok := s.m[k]
	delete(s.m, k)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("memstore: delete %s: %w", k, lookup.ErrNotFound)
	}
	return nil
}

// DeleteMany implements lookup.Store.
func (s *Store) DeleteMany(ctx context.Context, keys []lookup.Key) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	for _, k := range keys {
		delete(s.m, k)
	}
	s.mu.Unlock()
	return nil
}

// Scan implements lookup.Store. It iterates over a snapshot, so fn may call
// the Store.
func (s *Store) Scan(ctx context.Context, fn func(lookup.Entry) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	snap := make([]lookup.Entry, 0, len(s.m))
	for k, r := range s.m {
		snap = append(snap, lookup.Entry{Key: k, Region: r})
	}
	s.mu.RUnlock()
	for _, e := range snap {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := fn(e); err != nil {
			return fmt.Errorf("memstore: scan: %w", err)
		}
	}
	return nil
}

// Ping implements lookup.Store.
func (s *Store) Ping(ctx context.Context) error { return ctx.Err() }
