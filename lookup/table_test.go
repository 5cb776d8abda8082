package lookup_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/memstore"
)

var (
	keyA = []byte("hub key A: 32+ bytes of secret randomness")
	keyB = []byte("hub key B: 32+ bytes of other secret random")
)

// stores lists the Store implementations that need no external service; the
// Redis Table tests live in package redisstore.
func stores(t *testing.T) map[string]func(t *testing.T) lookup.Store {
	return map[string]func(t *testing.T) lookup.Store{
		"memstore": func(t *testing.T) lookup.Store { return memstore.New() },
		"embedded": func(t *testing.T) lookup.Store {
			s, err := embedded.Open(context.Background(), filepath.Join(t.TempDir(), "l.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = s.Close() })
			return s
		},
	}
}

func table(t *testing.T, s lookup.Store, cur, prev []byte) *lookup.Table {
	t.Helper()
	h, err := lookup.NewHasher(cur, prev)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lookup.NewTable(h, s)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func resolve(t *testing.T, tb *lookup.Table, user, want string) {
	t.Helper()
	got, err := tb.Resolve(context.Background(), user)
	if want == "" {
		if !errors.Is(err, lookup.ErrNotFound) {
			t.Fatalf("Resolve(%q) = %q, %v; want ErrNotFound", user, got, err)
		}
		return
	}
	if err != nil || got != want {
		t.Fatalf("Resolve(%q) = %q, %v; want %q", user, got, err, want)
	}
}

func count(t *testing.T, s lookup.Store) int {
	t.Helper()
	n := 0
	if err := s.Scan(context.Background(), func(lookup.Entry) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestNewTable(t *testing.T) {
	h, _ := lookup.NewHasher(keyA, nil)
	if _, err := lookup.NewTable(nil, memstore.New()); err == nil {
		t.Error("NewTable(nil hasher) succeeded")
	}
	if _, err := lookup.NewTable(h, nil); err == nil {
		t.Error("NewTable(nil store) succeeded")
	}
}

func TestTableBasics(t *testing.T) {
	for name, newStore := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			tb := table(t, s, keyA, nil)
			steps := []struct {
				op, user, region string
				err              error
			}{
				{"resolve", "alice", "", lookup.ErrNotFound},
				{"assign", "Alice", "eu", nil},
				{"resolve", "alice", "eu", nil},
				{"resolve", "ＡＬＩＣＥ", "eu", nil},
				{"assign", "ÜNÏCODE", "us", nil},
				{"resolve", "ünïcode", "us", nil},
				{"resolve", "U\u0308nïcode", "us", nil},
				{"resolve", "unicode", "", lookup.ErrNotFound},
				{"assign", "alice", "ap", nil},
				{"resolve", "ALICE", "ap", nil},
				{"assign", "bad name", "eu", lookup.ErrInvalidUsername},
				{"resolve", "bad name", "", lookup.ErrInvalidUsername},
				{"remove", "bad name", "", lookup.ErrInvalidUsername},
				{"assign", "bob", "EU", lookup.ErrInvalidRegion},
				{"resolve", "bob", "", lookup.ErrNotFound},
				{"remove", "aLiCe", "", nil},
				{"resolve", "alice", "", lookup.ErrNotFound},
				{"remove", "alice", "", lookup.ErrNotFound},
			}
			for i, st := range steps {
				var got string
				var err error
				switch st.op {
				case "assign":
					err = tb.Assign(ctx, st.user, st.region)
				case "resolve":
					got, err = tb.Resolve(ctx, st.user)
				case "remove":
					err = tb.Remove(ctx, st.user)
				}
				if st.err != nil {
					if !errors.Is(err, st.err) {
						t.Fatalf("step %d %s(%q) = %v, want %v", i, st.op, st.user, err, st.err)
					}
					continue
				}
				if err != nil || (st.op == "resolve" && got != st.region) {
					t.Fatalf("step %d %s(%q) = %q, %v; want %q", i, st.op, st.user, got, err, st.region)
				}
			}
			if n := count(t, s); n != 1 {
				t.Fatalf("store holds %d entries, want 1 (ünïcode)", n)
			}
		})
	}
}

// TestRotation walks a whole key rotation A -> B.
func TestRotation(t *testing.T) {
	for name, newStore := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			s := newStore(t)
			old := table(t, s, keyA, nil)
			for u, r := range map[string]string{"u1": "eu", "u2": "eu", "u3": "us", "u4": "eu", "gone": "eu"} {
				if err := old.Assign(ctx, u, r); err != nil {
					t.Fatal(err)
				}
			}
			rot := table(t, s, keyB, keyA)
			if _, err := old.Rehash(ctx, "eu", slices.Values([]string{"u1"})); !errors.Is(err, lookup.ErrNotRotating) {
				t.Fatalf("Rehash without rotation = %v", err)
			}

			// Phase 1: new hubs fall back to the old-key entry.
			resolve(t, rot, "U1", "eu")
			resolve(t, rot, "u3", "us")
			resolve(t, rot, "nobody", "")

			// New-key entry wins over the old-key one.
			hb, _ := lookup.NewHasher(keyB, nil)
			k2, _ := hb.Key("u2")
			if err := s.Put(ctx, k2, "ap"); err != nil {
				t.Fatal(err)
			}
			resolve(t, rot, "u2", "ap")
			resolve(t, old, "u2", "eu")

			// Writes by new hubs stay visible to old hubs.
			if err := rot.Assign(ctx, "u5", "us"); err != nil {
				t.Fatal(err)
			}
			resolve(t, old, "u5", "us")
			if err := rot.Assign(ctx, "u4", "us"); err != nil { // u4 moves
				t.Fatal(err)
			}
			resolve(t, old, "u4", "us")
			resolve(t, rot, "u4", "us")
			if err := rot.Remove(ctx, "gone"); err != nil {
				t.Fatal(err)
			}
			resolve(t, old, "gone", "")
			resolve(t, rot, "gone", "")

			// Phase 2: eu re-announces its users (u4 moved to us meanwhile,
			// "ghost" is unknown, one name is invalid).
			rep, err := rot.Rehash(ctx, "eu", slices.Values([]string{"u1", "U2", "u4", "ghost", "not valid"}))
			if err != nil {
				t.Fatal(err)
			}
			want := lookup.RehashReport{Announced: 5, Invalid: 1, Migrated: 2, Current: 1, Missing: 1, Foreign: 1}
			if rep != want {
				t.Fatalf("Rehash report %+v, want %+v", rep, want)
			}
			// u2's stale new-key entry was corrected from the old key.
			resolve(t, rot, "u2", "eu")
			rep, err = rot.Rehash(ctx, "us", slices.Values([]string{"u3", "u5"}))
			if err != nil {
				t.Fatal(err)
			}
			if want := (lookup.RehashReport{Announced: 2, Migrated: 1, Current: 1}); rep != want {
				t.Fatalf("Rehash(us) report %+v, want %+v", rep, want)
			}
			// Idempotent.
			rep, _ = rot.Rehash(ctx, "us", slices.Values([]string{"u3", "u5"}))
			if want := (lookup.RehashReport{Announced: 2, Current: 2}); rep != want {
				t.Fatalf("second Rehash report %+v, want %+v", rep, want)
			}

			// Phase 3: drop the old-key entries.
			rep, err = rot.FinishRotation(ctx, slices.Values([]string{"u1", "u2", "u3", "u4", "u5"}))
			if err != nil {
				t.Fatal(err)
			}
			if want := (lookup.RehashReport{Announced: 5, Current: 5, Dropped: 5}); rep != want {
				t.Fatalf("FinishRotation report %+v, want %+v", rep, want)
			}
			if n := count(t, s); n != 5 {
				t.Fatalf("%d entries after FinishRotation, want 5", n)
			}
			done := table(t, s, keyB, nil)
			for u, r := range map[string]string{"u1": "eu", "u2": "eu", "u3": "us", "u4": "us", "u5": "us", "gone": ""} {
				resolve(t, done, u, r)
				resolve(t, old, u, "")
			}
		})
	}
}

func users(n int) map[string]string {
	m := make(map[string]string, n)
	regions := []string{"eu", "us", "ap"}
	for i := range n {
		m[fmt.Sprintf("user-%06d@example.org", i)] = regions[i%3]
	}
	return m
}

func TestImport(t *testing.T) {
	for name, newStore := range stores(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			for _, rotating := range []bool{false, true} {
				s := newStore(t)
				var prev []byte
				if rotating {
					prev = keyA
				}
				tb := table(t, s, keyB, prev)
				all := users(2500)
				var progress []int
				n, err := tb.Import(ctx, maps.All(all), func(done int) { progress = append(progress, done) })
				if err != nil || n != 2500 {
					t.Fatalf("Import = %d, %v", n, err)
				}
				if !slices.Equal(progress, []int{1000, 2000, 2500}) {
					t.Fatalf("progress %v", progress)
				}
				want := 2500
				if rotating {
					want = 5000
				}
				if got := count(t, s); got != want {
					t.Fatalf("rotating=%v: %d entries, want %d", rotating, got, want)
				}
				for _, u := range []string{"user-000000@example.org", "USER-001234@EXAMPLE.ORG", "user-002499@example.org"} {
					resolve(t, tb, u, all[strings.ToLower(u)])
				}
				if rotating {
					resolve(t, table(t, s, keyA, nil), "user-000007@example.org", all["user-000007@example.org"])
				}
			}
		})
	}
}

func TestImportErrors(t *testing.T) {
	ctx := context.Background()
	tb := table(t, memstore.New(), keyA, nil)
	bad := func(yield func(string, string) bool) {
		for i := range 1500 {
			u := fmt.Sprintf("user%d", i)
			if i == 1200 {
				u = "secret name with spaces"
			}
			if !yield(u, "eu") {
				return
			}
		}
	}
	n, err := tb.Import(ctx, bad, nil)
	if !errors.Is(err, lookup.ErrInvalidUsername) || n != 1000 {
		t.Fatalf("Import = %d, %v; want 1000 and ErrInvalidUsername", n, err)
	}
	if !strings.Contains(err.Error(), "entry 1200") || strings.Contains(err.Error(), "secret name") {
		t.Fatalf("error %q should name the position, not the username", err)
	}
	_, err = tb.Import(ctx, maps.All(map[string]string{"bob": "Europe"}), nil)
	if !errors.Is(err, lookup.ErrInvalidRegion) {
		t.Fatalf("Import with bad region = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := tb.Import(cctx, maps.All(users(10)), nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Import with canceled context = %v", err)
	}
}
