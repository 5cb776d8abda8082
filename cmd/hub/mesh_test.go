package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// meshSetup is a mesh-topology config on the test Redis database (never
// db 0) and a key prefix of the test's own, whose partitions are dropped
// when the test ends.
type meshSetup struct {
	*setup
	c      *redis.Client
	prefix string
}

func newMeshSetup(t *testing.T) *meshSetup {
	t.Helper()
	o := testenv.RedisOptions(t)
	s := newSetup(t, fmt.Sprintf("redis://%s/%d", o.Addr, o.DB))
	body, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.config, []byte(strings.Replace(string(body), "topology: hub", "topology: mesh", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	var id [6]byte
	_, _ = rand.Read(id[:])
	m := &meshSetup{setup: s, c: testenv.RedisClient(t), prefix: "meridian-meshtest:" + hex.EncodeToString(id[:]) + ":"}
	t.Cleanup(func() {
		for _, r := range []string{"eu", "us", "ap"} {
			if st, err := redisstore.New(context.Background(), m.c, redisstore.Options{Prefix: m.prefix + "lookup:" + r + ":", ReadOnly: true}); err == nil {
				_ = st.Drop(context.Background())
			}
		}
		_ = m.c.Close()
	})
	return m
}

// aclUser creates a Redis ACL user with rules (removed when the test ends)
// and returns a config for the hub binary connecting as that user.
func (m *meshSetup) aclUser(t *testing.T, name string, rules ...any) string {
	t.Helper()
	ctx := context.Background()
	var pw [12]byte
	_, _ = rand.Read(pw[:])
	user := "meshtest-" + name + "-" + m.prefix[len(m.prefix)-13:len(m.prefix)-1]
	args := append([]any{"ACL", "SETUSER", user, "reset", "on", ">" + hex.EncodeToString(pw[:])}, rules...)
	if err := m.c.Do(ctx, args...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { m.c.Do(context.Background(), "ACL", "DELUSER", user) })
	o := m.c.Options()
	body, err := os.ReadFile(m.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(m.config, ".yaml", "-"+name+".yaml", 1)
	url := fmt.Sprintf("redis://%s:%s@%s/%d", user, hex.EncodeToString(pw[:]), o.Addr, o.DB)
	if err := os.WriteFile(cfg, []byte(strings.Replace(string(body), fmt.Sprintf("redis: %q", fmt.Sprintf("redis://%s/%d", o.Addr, o.DB)), fmt.Sprintf("redis: %q", url), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// part opens region's partition read-write, as that region's nodes do.
func (m *meshSetup) part(t *testing.T, region string) *redisstore.Store {
	t.Helper()
	st, err := redisstore.New(context.Background(), m.c, redisstore.Options{Prefix: m.prefix + "lookup:" + region + ":"})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// reader is a region's lookup.Partitioned view of the mesh table, the
// store sign-ins resolve users with.
func (m *meshSetup) reader(t *testing.T, self string) *lookup.Partitioned {
	t.Helper()
	open := func(ctx context.Context, r string) (lookup.Store, error) {
		return redisstore.New(ctx, m.c, redisstore.Options{Prefix: m.prefix + "lookup:" + r + ":", ReadOnly: true})
	}
	p, err := lookup.NewPartitioned(self, m.part(t, self), []string{"eu", "us", "ap"}, open, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestMeshConflictsCommand: in mesh topology `hub conflicts` lists the keys
// two partitions claim (not a single claim, not a shadow entry naming
// another region) and resolves one by deleting the losing region's entry,
// after which the user resolves to the kept region again.
func TestMeshConflictsCommand(t *testing.T) {
	m := newMeshSetup(t)
	ctx := context.Background()
	var double, single, shadow lookup.Key
	double[0], single[0], shadow[0] = 0xab, 0xcd, 0xef
	eu, us := m.part(t, "eu"), m.part(t, "us")
	for _, w := range []struct {
		st     *redisstore.Store
		k      lookup.Key
		region string
	}{{us, double, "us"}, {eu, double, "eu"}, {us, single, "us"}, {eu, shadow, "us"}, {us, shadow, "us"}} {
		if err := w.st.Put(ctx, w.k, w.region); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.reader(t, "ap").Get(ctx, double); err == nil {
		t.Fatal("a double claim resolved to a region before the operator chose")
	}
	args := []string{"--config", m.config, "--prefix", m.prefix}
	code, out, errOut := runHub(t, "", append([]string{"conflicts"}, args...)...)
	if code != 0 || !strings.Contains(out, double.String()+"  eu,us") || strings.Contains(out, single.String()) || strings.Contains(out, shadow.String()) {
		t.Fatalf("list: %d\n%s\n%s", code, out, errOut)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
	}{
		{"region claiming nothing", []string{"--resolve", double.String(), "--region", "ap"}, 1},
		{"not a conflict", []string{"--resolve", single.String(), "--region", "us"}, 1},
		{"bad key", []string{"--resolve", "zz", "--region", "eu"}, 2},
		{"region without resolve", []string{"--region", "eu"}, 2},
	} {
		if code, out, errOut := runHub(t, "", append(append([]string{"conflicts"}, args...), c.args...)...); code != c.code {
			t.Fatalf("%s: %d, want %d\n%s\n%s", c.name, code, c.code, out, errOut)
		}
	}
	// A region's own Redis user (the ACL of docs/operations.md) cannot
	// resolve: us, claiming the key, cannot delete eu's claim.
	lk := m.prefix + "lookup:"
	usCfg := m.aclUser(t, "us", "~"+lk+"us:*", "%R~"+lk+"*", "resetchannels", "+@all", "-@dangerous", "-@admin")
	if code, out, errOut := runHub(t, "", "conflicts", "--config", usCfg, "--prefix", m.prefix, "--resolve", double.String(), "--region", "us"); code == 0 || !strings.Contains(errOut, "NOPERM") {
		t.Fatalf("us's own Redis user resolved the conflict in its favour: %s %s", out, errOut)
	}
	if r, err := eu.Get(ctx, double); r != "eu" || err != nil {
		t.Fatalf("eu's claim after us's attempt: %q %v", r, err)
	}
	// The operator user of docs/operations.md does.
	opCfg := m.aclUser(t, "operator", "~"+lk+"*", "resetchannels", "+@all", "-@dangerous", "-@admin")
	code, out, errOut = runHub(t, "", "conflicts", "--config", opCfg, "--prefix", m.prefix, "--resolve", double.String(), "--region", "us")
	if code != 0 || !strings.Contains(out, "now lives in us") || !strings.Contains(errOut, `"event":"lookup.conflict_resolved"`) || !strings.Contains(errOut, `"removed":["eu"]`) {
		t.Fatalf("resolve: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ := runHub(t, "", append([]string{"conflicts"}, args...)...); code != 0 || strings.Contains(out, double.String()) {
		t.Fatalf("after resolve: %d %s", code, out)
	}
	for _, self := range []string{"eu", "ap"} {
		if r, err := m.reader(t, self).Get(ctx, double); r != "us" || err != nil {
			t.Fatalf("%s resolves the resolved key to %q %v, want us", self, r, err)
		}
	}
	if r, err := us.Get(ctx, single); r != "us" || err != nil {
		t.Fatalf("us's single claim touched: %q %v", r, err)
	}
}

// TestMeshTableCommands: in mesh topology import, rotate-key,
// finish-rotation and table-rehash work on the --region's partition only
// (the users resolve to that region through every region's partitioned
// reader, the other partitions stay empty), they refuse to run without
// --region, and reconcile refuses naming the topology.
func TestMeshTableCommands(t *testing.T) {
	m := newMeshSetup(t)
	ctx := context.Background()
	// As the operator Redis user of docs/operations.md.
	m.config = m.aclUser(t, "operator", "~"+m.prefix+"lookup:*", "resetchannels", "+@all", "-@dangerous", "-@admin")
	oldKey, _ := os.ReadFile(m.keyFile)
	args := func(cmd string, more ...string) []string {
		return append([]string{cmd, "--config", m.config, "--prefix", m.prefix}, more...)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"import without region", args("import", "--file", "-"), 2, "--region"},
		{"rehash without region", args("table-rehash"), 2, "mesh topology"},
		{"finish without region", args("finish-rotation", "--file", "-", "--previous-key-file", m.keyFile), 2, "mesh topology"},
		{"reconcile", args("reconcile"), 1, "mesh topology"},
	} {
		if code, out, errOut := runHub(t, "", c.args...); code != c.code || !strings.Contains(errOut, c.want) {
			t.Fatalf("%s: %d, want %d with %q\n%s\n%s", c.name, code, c.code, c.want, out, errOut)
		}
	}
	if code, out, errOut := runHub(t, usernames(300), args("import", "--region", "us", "--file", "-")...); code != 0 || !strings.Contains(out, "imported 300 users into region us") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	resolve := func(key []byte, want string) {
		t.Helper()
		for _, self := range []string{"eu", "us", "ap"} {
			for _, name := range []string{"user.00000@example.org", "USER.00299@example.org"} {
				if r, err := table(t, m.reader(t, self), key).Resolve(ctx, name); r != want || err != nil {
					t.Fatalf("%s resolves %s to %q %v, want %q", self, name, r, err, want)
				}
			}
		}
	}
	for _, r := range []string{"eu", "ap"} {
		if _, err := redisstore.New(ctx, m.c, redisstore.Options{Prefix: m.prefix + "lookup:" + r + ":", ReadOnly: true}); err == nil {
			t.Fatalf("import into us created %s's partition", r)
		}
	}
	resolve(oldKey, "us")

	// A k_hub rotation, per partition: the config now names the new key.
	prevFile := m.keyFile + ".old"
	if err := os.WriteFile(prevFile, oldKey, 0o600); err != nil {
		t.Fatal(err)
	}
	newKey := writeKey(t, m.keyFile)
	if code, out, errOut := runHub(t, usernames(300), args("rotate-key", "--region", "us", "--previous-key-file", prevFile, "--file", "-")...); code != 0 || !strings.Contains(out, "migrated 300") {
		t.Fatalf("rotate-key: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runHub(t, usernames(300), args("finish-rotation", "--region", "us", "--previous-key-file", prevFile, "--file", "-")...); code != 0 || !strings.Contains(out, "dropped 300") {
		t.Fatalf("finish-rotation: %d %s %s", code, out, errOut)
	}
	resolve(newKey, "us")
	if _, err := table(t, m.reader(t, "eu"), oldKey).Resolve(ctx, "user.00000@example.org"); err == nil {
		t.Fatal("the previous key's entry survived finish-rotation")
	}

	body, err := os.ReadFile(m.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.config, []byte(strings.Replace(string(body), "hub:\n", "hub:\n  expected_users: 5000000\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := runHub(t, "", args("table-rehash", "--region", "us")...); code != 0 || !strings.Contains(out, "done:") {
		t.Fatalf("table-rehash: %d %s %s", code, out, errOut)
	}
	resolve(newKey, "us")
	hub := newSetup(t, "")
	for _, cmd := range [][]string{{"table-rehash"}, {"finish-rotation", "--file", "-", "--previous-key-file", hub.keyFile}} {
		if code, _, errOut := runHub(t, "", append(cmd, "--config", hub.config, "--region", "us")...); code != 2 || !strings.Contains(errOut, "mesh partition") {
			t.Fatalf("%s --region in hub topology: %d %s", cmd[0], code, errOut)
		}
	}
}
