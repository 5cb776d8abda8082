package lookup_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/memstore"
)

// In production k_hub comes from the hub's secret store, never from Redis or
// the code; these constants only keep the examples deterministic.
var (
	exampleKey    = []byte("example hub key, 32+ bytes, never use it")
	exampleOldKey = []byte("example OLD hub key, 32+ bytes, never use")
)

func ExampleNormalize() {
	for _, u := range []string{"Ünïcode", "ÜNÏCODE", "ＡＬＩＣＥ", "Juliet@Example.COM", "straße", "ﬁne", "alice smith"} {
		n, err := lookup.Normalize(u)
		fmt.Printf("%q -> %q %v\n", u, n, err)
	}
	// Output:
	// "Ünïcode" -> "ünïcode" <nil>
	// "ÜNÏCODE" -> "ünïcode" <nil>
	// "ＡＬＩＣＥ" -> "alice" <nil>
	// "Juliet@Example.COM" -> "juliet@example.com" <nil>
	// "straße" -> "straße" <nil>
	// "ﬁne" -> "" lookup: invalid username: rejected by PRECIS UsernameCaseMapped: precis: disallowed rune encountered
	// "alice smith" -> "" lookup: invalid username: rejected by PRECIS UsernameCaseMapped: precis: disallowed rune encountered
}

func ExampleHasher_Keys() {
	h, err := lookup.NewHasher(exampleKey, exampleOldKey)
	if err != nil {
		panic(err)
	}
	cur, prev, err := h.Keys("Alice")
	if err != nil {
		panic(err)
	}
	same, _, _ := h.Keys("ＡＬＩＣＥ")
	fmt.Println(len(cur), cur == same, prev != nil && *prev != cur)
	// Output: 16 true true
}

func ExampleTable_Resolve() {
	ctx := context.Background()
	h, err := lookup.NewHasher(exampleKey, nil)
	if err != nil {
		panic(err)
	}
	t, err := lookup.NewTable(h, memstore.New()) // redisstore or embedded in production
	if err != nil {
		panic(err)
	}
	if err := t.Assign(ctx, "Ünïcode", "eu"); err != nil {
		panic(err)
	}
	region, err := t.Resolve(ctx, "ÜNÏCODE")
	fmt.Println(region, err)
	_, err = t.Resolve(ctx, "someone-else")
	fmt.Println(errors.Is(err, lookup.ErrNotFound))
	// Output:
	// eu <nil>
	// true
}

func ExampleTable_Import() {
	ctx := context.Background()
	h, _ := lookup.NewHasher(exampleKey, nil)
	t, _ := lookup.NewTable(h, memstore.New())
	users := map[string]string{}
	for i := range 2500 {
		users[fmt.Sprintf("user%d@example.org", i)] = "us"
	}
	n, err := t.Import(ctx, maps.All(users), func(done int) { fmt.Println("imported", done) })
	fmt.Println(n, err)
	// Output:
	// imported 1000
	// imported 2000
	// imported 2500
	// 2500 <nil>
}

// ExampleTable_Rehash shows a key rotation from the old hub key to the new
// one: the hubs run with both keys, the regions re-announce their users, and
// FinishRotation drops the old-key entries.
func ExampleTable_Rehash() {
	ctx := context.Background()
	store := memstore.New()

	oldH, _ := lookup.NewHasher(exampleOldKey, nil)
	before, _ := lookup.NewTable(oldH, store)
	_ = before.Assign(ctx, "alice", "eu")
	_ = before.Assign(ctx, "bob", "us")

	// Step 1: every hub now runs with (new, old).
	rotH, _ := lookup.NewHasher(exampleKey, exampleOldKey)
	during, _ := lookup.NewTable(rotH, store)
	r, _ := during.Resolve(ctx, "alice") // found under the old key
	fmt.Println("alice:", r)

	// Step 2: each region re-announces its users.
	rep, _ := during.Rehash(ctx, "eu", slices.Values([]string{"alice", "carol"}))
	fmt.Printf("eu: %+v\n", rep)
	rep, _ = during.Rehash(ctx, "us", slices.Values([]string{"bob"}))
	fmt.Printf("us: %+v\n", rep)

	// Step 3: drop the old-key entries, then roll out (new, nil).
	rep, _ = during.FinishRotation(ctx, slices.Values([]string{"alice", "bob"}))
	fmt.Printf("finish: %+v\n", rep)
	newH, _ := lookup.NewHasher(exampleKey, nil)
	after, _ := lookup.NewTable(newH, store)
	r, _ = after.Resolve(ctx, "bob")
	fmt.Println("bob:", r)
	// Output:
	// alice: eu
	// eu: {Announced:2 Invalid:0 Migrated:1 Current:0 Missing:1 Foreign:0 Dropped:0}
	// us: {Announced:1 Invalid:0 Migrated:1 Current:0 Missing:0 Foreign:0 Dropped:0}
	// finish: {Announced:2 Invalid:0 Migrated:0 Current:2 Missing:0 Foreign:0 Dropped:2}
	// bob: us
}
