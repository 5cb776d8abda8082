package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// TestUsersAnnounce is the upgrade of a mesh federation from the shared
// table (docs/operations.md, Mesh topology): users in eu's database with
// an empty eu partition resolve to no region from any region, and after
// `regional users announce --region eu` every region's partitioned reader
// resolves them to eu; running it again changes nothing. In hub topology
// it refuses.
func TestUsersAnnounce(t *testing.T) {
	o := testenv.RedisOptions(t)
	c := testenv.RedisClient(t)
	ctx := context.Background()
	var id [6]byte
	_, _ = rand.Read(id[:])
	prefix := "meridian-announcetest:" + hex.EncodeToString(id[:]) + ":"
	t.Cleanup(func() {
		for _, r := range []string{"eu", "us", "ap"} {
			if st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:" + r + ":", ReadOnly: true}); err == nil {
				_ = st.Drop(ctx)
			}
		}
	})
	cli := newCLI(t)
	if code, out, errs := cli.run("", "users", "announce", "--region", "eu", "--prefix", prefix); code != 1 || !strings.Contains(errs, "only in mesh topology") {
		t.Fatalf("announce in hub topology: %d %s %s", code, out, errs)
	}
	body, err := os.ReadFile(cli.cfg)
	if err != nil {
		t.Fatal(err)
	}
	mesh := strings.Replace(string(body), "topology: hub", "topology: mesh", 1)
	// eu's own Redis user, with the ACL docs/operations.md gives a region.
	user := "announcetest-eu-" + hex.EncodeToString(id[:])
	pw := hex.EncodeToString(id[:]) + "-pw"
	lk := prefix + "lookup:"
	if err := c.Do(ctx, "ACL", "SETUSER", user, "reset", "on", ">"+pw, "~"+lk+"eu:*", "%R~"+lk+"*", "resetchannels", "+@all", "-@dangerous", "-@admin").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", user) })
	mesh = strings.Replace(mesh, `redis: ""`, fmt.Sprintf("redis: redis://%s:%s@%s/%d", user, pw, o.Addr, o.DB), 1)
	if err := os.WriteFile(cli.cfg, []byte(mesh), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := cli.run("", "migrate", "--region", "eu"); code != 0 {
		t.Fatalf("migrate: %d %s %s", code, out, errs)
	}
	secrets := filepath.Join(filepath.Dir(cli.cfg), "data", "secrets")
	if err := os.MkdirAll(secrets, 0o700); err != nil {
		t.Fatal(err)
	}
	hubKey := make([]byte, 32)
	_, _ = rand.Read(hubKey)
	if err := os.WriteFile(filepath.Join(secrets, "hub.key"), hubKey, 0o600); err != nil {
		t.Fatal(err)
	}
	names := []string{"Ada", "grace@example.org", "Émile"}
	for _, n := range names {
		if code, _, errs := cli.run("a-long-enough-password\n", "users", "add", "--region", "eu", "--username", n, "--password-stdin"); code != 0 {
			t.Fatalf("users add %s: %d %s", n, code, errs)
		}
	}
	// The mesh readers' view: each region's lookup.Partitioned over the
	// partitions, as the nodes open it.
	open := func(ctx context.Context, r string) (lookup.Store, error) {
		return redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:" + r + ":", ReadOnly: true})
	}
	resolve := func(self, name string) (string, error) {
		t.Helper()
		own, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:" + self + ":"})
		if err != nil {
			t.Fatal(err)
		}
		p, err := lookup.NewPartitioned(self, own, []string{"eu", "us", "ap"}, open, nil)
		if err != nil {
			t.Fatal(err)
		}
		h, err := lookup.NewHasher(hubKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		tb, err := lookup.NewTable(h, p)
		if err != nil {
			t.Fatal(err)
		}
		return tb.Resolve(ctx, name)
	}
	for _, self := range []string{"eu", "us"} {
		if r, err := resolve(self, "ada"); !errors.Is(err, lookup.ErrNotFound) {
			t.Fatalf("before the announce %s resolves ada to %q %v, want not found", self, r, err)
		}
	}
	for i := range 2 {
		code, out, errs := cli.run("", "users", "announce", "--region", "eu", "--prefix", prefix)
		if code != 0 || !strings.Contains(out, "announced 3 users into region eu's partition") || !strings.Contains(errs, `"action":"users.announce"`) {
			t.Fatalf("announce #%d: %d %s %s", i+1, code, out, errs)
		}
	}
	for _, self := range []string{"eu", "us", "ap"} {
		for _, n := range []string{"ada", "GRACE@example.org", "Émile"} {
			if r, err := resolve(self, n); r != "eu" || err != nil {
				t.Fatalf("%s resolves %s to %q %v, want eu", self, n, r, err)
			}
		}
		if r, err := resolve(self, "nobody"); err == nil {
			t.Fatalf("%s resolves an unknown name to %q", self, r)
		}
	}
}
