package hub

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/seal"
)

// ErrStateNotFound is returned by a StateStore for an absent or expired key.
var ErrStateNotFound = errors.New("hub: state not found")

// StateStore keeps the hub's short-lived protocol state: authorization
// requests, codes, access tokens and logins in flight, each with a TTL of
// minutes. Keys are hashes of the protocol values and values are sealed
// (AES-256-GCM) by the Broker, so a store never holds a usable code or
// token, nor a user's claims, in the clear.
type StateStore interface {
	Put(ctx context.Context, key string, val []byte, ttl time.Duration) error
	// Get returns ErrStateNotFound for an absent or expired key.
	Get(ctx context.Context, key string) ([]byte, error)
	// Take atomically gets and deletes a key (single-use values).
	Take(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	Ping(ctx context.Context) error
}

// MemoryState is an in-process StateStore. It is right for a single hub
// node (and for tests): with several hub nodes behind one name, a login
// begun on one node must finish on it, so use RedisState there.
type MemoryState struct {
	mu   sync.Mutex
	m    map[string]memEntry
	puts int
}

type memEntry struct {
	v   []byte
	exp time.Time
}

// NewMemoryState returns an empty in-process store.
func NewMemoryState() *MemoryState { return &MemoryState{m: map[string]memEntry{}} }

// Put implements StateStore.
func (s *MemoryState) Put(_ context.Context, key string, val []byte, ttl time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.m[key] = memEntry{v: append([]byte(nil), val...), exp: now.Add(ttl)}
	if s.puts++; s.puts%1024 == 0 {
		for k, e := range s.m {
			if now.After(e.exp) {
				delete(s.m, k)
			}
		}
	}
	return nil
}

func (s *MemoryState) get(key string, del bool) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.m[key]
	if ok && (del || time.Now().After(e.exp)) {
		delete(s.m, key)
	}
	if !ok || time.Now().After(e.exp) {
		return nil, ErrStateNotFound
	}
	return e.v, nil
}

// Get implements StateStore.
func (s *MemoryState) Get(_ context.Context, key string) ([]byte, error) { return s.get(key, false) }

// Take implements StateStore.
func (s *MemoryState) Take(_ context.Context, key string) ([]byte, error) { return s.get(key, true) }

// Delete implements StateStore.
func (s *MemoryState) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	delete(s.m, key)
	s.mu.Unlock()
	return nil
}

// Ping implements StateStore.
func (s *MemoryState) Ping(ctx context.Context) error { return ctx.Err() }

// RedisState is a StateStore on Redis, shared by every hub node.
type RedisState struct {
	c      redis.UniversalClient
	prefix string
}

// NewRedisState returns a store keeping its keys under prefix (for example
// "meridian:hub:"). It does not own the client.
func NewRedisState(c redis.UniversalClient, prefix string) *RedisState {
	return &RedisState{c: c, prefix: prefix}
}

// Put implements StateStore.
func (s *RedisState) Put(ctx context.Context, key string, val []byte, ttl time.Duration) error {
	return s.c.Set(ctx, s.prefix+key, val, ttl).Err()
}

func redisResult(b []byte, err error) ([]byte, error) {
	if errors.Is(err, redis.Nil) {
		return nil, ErrStateNotFound
	}
	return b, err
}

// Get implements StateStore.
func (s *RedisState) Get(ctx context.Context, key string) ([]byte, error) {
	return redisResult(s.c.Get(ctx, s.prefix+key).Bytes())
}

// Take implements StateStore (GETDEL, Redis >= 6.2).
func (s *RedisState) Take(ctx context.Context, key string) ([]byte, error) {
	return redisResult(s.c.GetDel(ctx, s.prefix+key).Bytes())
}

// Delete implements StateStore.
func (s *RedisState) Delete(ctx context.Context, key string) error {
	return s.c.Del(ctx, s.prefix+key).Err()
}

// Ping implements StateStore.
func (s *RedisState) Ping(ctx context.Context) error { return s.c.Ping(ctx).Err() }

// sealedState seals JSON values into a StateStore under hashed keys.
type sealedState struct {
	s   StateStore
	box *seal.Box
}

// key names a record by kind and the SHA-256 of its protocol value (the
// values are >= 128-bit random, so a hash is as good as an HMAC).
func stateKey(kind, id string) string {
	sum := sha256.Sum256([]byte(id))
	return kind + ":" + base64.RawURLEncoding.EncodeToString(sum[:])
}

func (s *sealedState) put(ctx context.Context, kind, id string, v any, ttl time.Duration) error {
	plain, err := json.Marshal(v)
	if err != nil {
		return err
	}
	key := stateKey(kind, id)
	sealed, err := s.box.Seal(plain, key, time.Now().Add(ttl))
	if err != nil {
		return err
	}
	return s.s.Put(ctx, key, sealed, ttl)
}

func (s *sealedState) open(key string, raw []byte, v any) error {
	plain, err := s.box.Open(raw, key, time.Now())
	if err != nil {
		return ErrStateNotFound
	}
	return json.Unmarshal(plain, v)
}

func (s *sealedState) get(ctx context.Context, kind, id string, v any) error {
	key := stateKey(kind, id)
	raw, err := s.s.Get(ctx, key)
	if err != nil {
		return err
	}
	return s.open(key, raw, v)
}

func (s *sealedState) take(ctx context.Context, kind, id string, v any) error {
	key := stateKey(kind, id)
	raw, err := s.s.Take(ctx, key)
	if err != nil {
		return err
	}
	return s.open(key, raw, v)
}

func (s *sealedState) del(ctx context.Context, kind, id string) error {
	return s.s.Delete(ctx, stateKey(kind, id))
}
