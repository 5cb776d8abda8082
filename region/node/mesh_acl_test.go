package node_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// meshACL is the Redis ACL rule docs/operations.md gives region r's nodes
// in mesh topology: write its own partition, read every partition, no
// dangerous or administrative command.
func meshACL(prefix, r, password string) []any {
	return []any{"reset", "on", ">" + password, "~" + prefix + r + ":*", "%R~" + prefix + "*", "resetchannels", "+@all", "-@dangerous", "-@admin"}
}

// TestMeshTableWritesRegionRestricted plays a compromised eu in mesh
// topology, holding every secret eu has, its Redis credentials included
// (a Redis user per region with the ACL of docs/operations.md, on the real
// Redis): it cannot delete, rewrite or shadow us's entry for a us user by
// any Redis command, and its one possible move, claiming the user in its
// own partition, makes the user resolve to no region (a conflict, never
// eu) until the operator removes the false claim. Cross-region sign-ins of
// that user, over HTTP through real mesh nodes, work before and after.
func TestMeshTableWritesRegionRestricted(t *testing.T) {
	admin := testenv.RedisClient(t)
	ctx := context.Background()
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	rnd := make([]byte, 6)
	_, _ = rand.Read(rnd)
	tag := hex.EncodeToString(rnd)
	prefix := "meridian-test:" + tag + ":lookup:"
	opts := testenv.RedisOptions(t)
	t.Cleanup(func() {
		keys, _ := admin.Keys(context.Background(), "meridian-test:"+tag+":*").Result()
		if len(keys) > 0 {
			admin.Del(context.Background(), keys...)
		}
	})
	urls := map[string]string{}
	for _, r := range []string{"eu", "us", "ap"} {
		user, pw := "meridian-test-"+tag+"-"+r, hex.EncodeToString(append(rnd, r...))
		if err := admin.Do(ctx, append([]any{"ACL", "SETUSER", user}, meshACL(prefix, r, pw)...)...).Err(); err != nil {
			t.Fatalf("ACL SETUSER: %v", err)
		}
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
		urls[r] = fmt.Sprintf("redis://%s:%s@%s/%d", user, pw, opts.Addr, opts.DB)
	}

	// Three mesh nodes, each with its own copy of the config naming its own
	// Redis user (MERIDIAN_HUB_REDIS per region in production).
	f := fedtest.Start(t, fedtest.Options{Topology: federation.TopologyMesh, LookupPrefix: prefix, Deferred: fedtest.Regions,
		Configure: func(c *config.Config) { c.Hub.Redis = urls["eu"] }})
	cfg := f.Cfg
	for _, id := range fedtest.Regions {
		own := *cfg
		own.Hub.Redis = urls[id]
		f.ConfigOf[id] = &own
		f.Start(id)
	}
	euApp := f.Client("eu")
	f.User("us", "user-us")

	// The operator's view of the table (Redis default user).
	hubKey, err := config.LoadSecret("hub.key_file", "", cfg.DataDir+"/secrets/hub.key", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	h, err := lookup.NewHasher(hubKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	k, err := h.Key("user-us")
	if err != nil {
		t.Fatal(err)
	}
	part := func(r string) *redisstore.Store {
		s, err := redisstore.New(ctx, admin, redisstore.Options{Prefix: prefix + r + ":", ReadOnly: true})
		if err != nil {
			t.Fatalf("partition %s: %v", r, err)
		}
		return s
	}
	view := func(c *redis.Client, self string) *lookup.Partitioned {
		own, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + self + ":"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := lookup.NewPartitioned(self, own, cfg.RegionIDs(), func(ctx context.Context, r string) (lookup.Store, error) {
			return redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + r + ":", ReadOnly: true})
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// us's pusher announces its user to us's partition.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if s, err := redisstore.New(ctx, admin, redisstore.Options{Prefix: prefix + "us:", ReadOnly: true}); err == nil {
			if r, err := s.Get(ctx, k); err == nil && r == "us" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("us never announced user-us")
		}
		time.Sleep(50 * time.Millisecond)
	}
	signIn := func(step string) {
		t.Helper()
		if m := signIn(t, f, "eu", euApp, "user-us"); m == nil || m["name"] != "user-us" {
			t.Fatalf("%s: cross-region sign-in of user-us at an eu app: %v", step, m)
		}
	}
	signIn("before")

	// The attacker: eu's own Redis credentials.
	eo, err := redis.ParseURL(urls["eu"])
	if err != nil {
		t.Fatal(err)
	}
	eu := redis.NewClient(eo)
	t.Cleanup(func() { eu.Close() })
	usKeys, err := admin.Keys(ctx, prefix+"us:*").Result()
	if err != nil || len(usKeys) < 2 {
		t.Fatalf("us's partition keys: %v %v", usKeys, err)
	}
	snapshot := func() map[string]map[string]string {
		m := map[string]map[string]string{}
		for _, key := range usKeys {
			if m[key], err = admin.HGetAll(ctx, key).Result(); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	before := snapshot()
	refused := func(err error) bool {
		return err != nil && (strings.Contains(err.Error(), "NOPERM") || strings.Contains(err.Error(), "can't access"))
	}
	euKey := prefix + "eu:stolen"
	if err := eu.Set(ctx, euKey, "x", time.Minute).Err(); err != nil {
		t.Fatalf("control: eu cannot write its own partition: %v", err)
	}
	for _, key := range usKeys {
		for name, cmd := range map[string][]any{
			"DEL":              {"DEL", key},
			"UNLINK":           {"UNLINK", key},
			"HDEL":             {"HDEL", key, k.String()},
			"HSET":             {"HSET", key, k.String(), "1"},
			"EXPIRE":           {"EXPIRE", key, 1},
			"RENAME away":      {"RENAME", key, euKey + "2"},
			"RENAME over":      {"RENAME", euKey, key},
			"COPY over":        {"COPY", euKey, key, "REPLACE"},
			"EVAL, declared":   {"EVAL", "return redis.call('DEL', KEYS[1])", 1, key},
			"EVAL, undeclared": {"EVAL", "return redis.call('DEL', ARGV[1])", 0, key},
			"MOVE":             {"MOVE", key, (opts.DB + 1) % 16},
		} {
			if err := eu.Do(ctx, cmd...).Err(); !refused(err) {
				t.Errorf("eu %s on %s: %v, want a permission error", name, key, err)
			}
		}
	}
	for name, cmd := range map[string][]any{
		"FLUSHDB":  {"FLUSHDB"},
		"FLUSHALL": {"FLUSHALL"},
		"ACL":      {"ACL", "SETUSER", "x", "on", "~*", "+@all"},
		"CONFIG":   {"CONFIG", "SET", "appendonly", "no"},
		"SWAPDB":   {"SWAPDB", opts.DB, (opts.DB + 1) % 16},
	} {
		if err := eu.Do(ctx, cmd...).Err(); !refused(err) {
			t.Errorf("eu %s: %v, want a permission error", name, err)
		}
	}
	// Through the table's own code: eu's view refuses foreign entries, and
	// a store eu opens on us's partition cannot even record its layout.
	euView := view(eu, "eu")
	if err := euView.Put(ctx, k, "us"); err == nil {
		t.Error("eu wrote an entry pointing to us")
	}
	if err := euView.Delete(ctx, k); err == nil {
		t.Error("eu deleted us's entry through its view")
	}
	if _, err := redisstore.New(ctx, eu, redisstore.Options{Prefix: prefix + "us:"}); err == nil {
		t.Error("eu opened us's partition for writing")
	}
	if t.Failed() {
		t.FailNow()
	}
	if after := snapshot(); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("us's partition changed: %v -> %v", before, after)
	}
	if r, err := part("us").Get(ctx, k); err != nil || r != "us" {
		t.Fatalf("us's entry after the attempts: %q %v", r, err)
	}
	signIn("after eu's attempts")

	// In its own partition eu can write an entry naming us (ignored by
	// every reader: it counts only in us's partition) ...
	euOwn, err := redisstore.New(ctx, eu, redisstore.Options{Prefix: prefix + "eu:"})
	if err != nil {
		t.Fatal(err)
	}
	if err := euOwn.Put(ctx, k, "us"); err != nil {
		t.Fatal(err)
	}
	if r, err := view(admin, "ap").Get(ctx, k); err != nil || r != "us" {
		t.Fatalf("with eu's shadow entry naming us: %q %v", r, err)
	}
	signIn("with eu's shadow entry")
	// ... or claim the user for itself: a conflict, which resolves to no
	// region, never to eu; us's entry stays.
	if err := euOwn.Put(ctx, k, "eu"); err != nil {
		t.Fatal(err)
	}
	r, err := view(admin, "ap").Get(ctx, k)
	if !errors.Is(err, lookup.ErrConflict) || r == "eu" {
		t.Fatalf("with eu's claim: %q %v, want a conflict", r, err)
	}
	if r, err := part("us").Get(ctx, k); err != nil || r != "us" {
		t.Fatalf("us's entry with eu's claim: %q %v", r, err)
	}
	// The operator removes the false claim (default user); sign-ins resume.
	if err := view(admin, "eu").Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	signIn("after the operator removed eu's claim")
}
