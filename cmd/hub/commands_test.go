package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/embedded"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

type setup struct {
	dir, config, keyFile   string
	hubListen, adminListen string
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func writeKey(t *testing.T, path string) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, k, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// newSetup writes a three-region config whose hub uses redisURL (or the
// embedded store) and the k_hub in keyFile.
func newSetup(t *testing.T, redisURL string) *setup {
	t.Helper()
	s := &setup{dir: t.TempDir(), hubListen: freePort(t), adminListen: freePort(t)}
	s.keyFile = filepath.Join(s.dir, "khub.key")
	writeKey(t, s.keyFile)
	s.config = s.writeConfig(t, s.keyFile, redisURL)
	return s
}

func (s *setup) writeConfig(t *testing.T, keyFile, redisURL string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %s\nfederation:\n  global_host: id.localhost\n  scheme: http\n  port: 8080\n  topology: hub\n", filepath.Join(s.dir, "data"))
	b.WriteString("regions:\n")
	for i, id := range []string{"eu", "us", "ap"} {
		fmt.Fprintf(&b, "  - id: %s\n    host: %s.id.localhost\n    listen: 127.0.0.1:%d\n    addresses: [127.0.0.1]\n", id, id, 1+i)
	}
	fmt.Fprintf(&b, "hub:\n  host: hub.id.localhost\n  listen: %s\n  admin_listen: %s\n  addresses: [127.0.0.1]\n  key_file: %s\n  redis: %q\n",
		s.hubListen, s.adminListen, keyFile, redisURL)
	path := filepath.Join(s.dir, "regions-"+hex.EncodeToString([]byte(keyFile))[:8]+".yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func runHub(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

func usernames(n int) string {
	var b strings.Builder
	b.WriteString("# exported from us\n\n")
	for i := range n {
		fmt.Fprintf(&b, "User.%05d@Example.ORG\n", i)
	}
	return b.String()
}

func TestUsage(t *testing.T) {
	if code, out, _ := runHub(t, ""); code != 0 || !strings.Contains(out, "reconcile") {
		t.Fatalf("help: %d %s", code, out)
	}
	if code, _, _ := runHub(t, "", "frobnicate"); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	s := newSetup(t, "")
	if code, _, errOut := runHub(t, "", "import", "--config", s.config, "--file", "-"); code != 2 || !strings.Contains(errOut, "--region") {
		t.Fatalf("import without --region: %d %s", code, errOut)
	}
	if code, _, errOut := runHub(t, "", "import", "--config", s.config, "--region", "mars", "--file", "-"); code != 2 || !strings.Contains(errOut, "not configured") {
		t.Fatalf("import into an unknown region: %d %s", code, errOut)
	}
	if code, _, errOut := runHub(t, "", "rotate-key", "--config", s.config, "--region", "us", "--file", "-"); code != 2 || !strings.Contains(errOut, "previous-key-file") {
		t.Fatalf("rotate-key without the previous key: %d %s", code, errOut)
	}
}

func table(t *testing.T, st lookup.Store, key []byte) *lookup.Table {
	t.Helper()
	h, err := lookup.NewHasher(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lookup.NewTable(h, st)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// TestImportEmbedded imports a file into the embedded store with progress
// on stderr, then rotates k_hub with rotate-key and finish-rotation.
func TestImportEmbedded(t *testing.T) {
	s := newSetup(t, "")
	file := filepath.Join(s.dir, "users.txt")
	if err := os.WriteFile(file, []byte(usernames(2500)), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runHub(t, "", "import", "--config", s.config, "--region", "us", "--file", file)
	if code != 0 || !strings.Contains(out, "imported 2500 users into region us") || !strings.Contains(errOut, "imported 2000 users") {
		t.Fatalf("import: %d\n%s\n%s", code, out, errOut)
	}
	// A bad line stops the import and names its position, not the name.
	code, _, errOut = runHub(t, "ok.user\nbad user\n", "import", "--config", s.config, "--region", "eu", "--file", "-")
	if code != 1 || !strings.Contains(errOut, "entry 1") || strings.Contains(errOut, "bad user") {
		t.Fatalf("bad username: %d %s", code, errOut)
	}

	// Rotation from the first key to a new one.
	oldKey, _ := os.ReadFile(s.keyFile)
	newKeyFile := filepath.Join(s.dir, "khub-new.key")
	newKey := writeKey(t, newKeyFile)
	cfg2 := s.writeConfig(t, newKeyFile, "")
	code, out, errOut = runHub(t, "", "rotate-key", "--config", cfg2, "--previous-key-file", s.keyFile, "--region", "us", "--file", file)
	if code != 0 || !strings.Contains(out, "migrated 2500") {
		t.Fatalf("rotate-key: %d %s %s", code, out, errOut)
	}
	code, out, errOut = runHub(t, "", "finish-rotation", "--config", cfg2, "--previous-key-file", s.keyFile, "--file", file)
	if code != 0 || !strings.Contains(out, "dropped 2500") {
		t.Fatalf("finish-rotation: %d %s %s", code, out, errOut)
	}
	st, err := embedded.Open(context.Background(), filepath.Join(s.dir, "data", "hub", "lookup.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if r, err := table(t, st, newKey).Resolve(context.Background(), "user.01234@example.org"); r != "us" || err != nil {
		t.Fatalf("after rotation: %q %v", r, err)
	}
	if _, err := table(t, st, oldKey).Resolve(context.Background(), "user.01234@example.org"); err == nil {
		t.Fatal("the old key still resolves")
	}
}

// TestImportRedisPrivacy imports into the real Redis and dumps every key,
// field and value under the prefix: no username appears in any form.
func TestImportRedisPrivacy(t *testing.T) {
	addr := testenv.RedisAddr(t)
	s := newSetup(t, "redis://"+addr+"/0")
	prefix := "meridian-cmdtest:" + hex.EncodeToString([]byte(s.dir))[len(hex.EncodeToString([]byte(s.dir)))-12:] + ":"
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	t.Cleanup(func() {
		st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:"})
		if err == nil {
			_ = st.Drop(ctx)
		}
	})
	code, out, errOut := runHub(t, usernames(3000), "import", "--config", s.config, "--prefix", prefix, "--region", "ap", "--file", "-")
	if code != 0 || !strings.Contains(out, "imported 3000") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	keys, err := c.Keys(ctx, prefix+"*").Result()
	if err != nil || len(keys) == 0 {
		t.Fatalf("keys: %v %v", keys, err)
	}
	var dump strings.Builder
	for _, k := range keys {
		m, err := c.HGetAll(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		dump.WriteString(k)
		for f, v := range m {
			dump.WriteString(f + v)
		}
	}
	all := strings.ToLower(dump.String())
	for _, s := range []string{"user.", "example.org", "00042"} {
		if strings.Contains(all, s) {
			t.Fatalf("%q found in the Redis dump", s)
		}
	}
	key, _ := os.ReadFile(s.keyFile)
	st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := table(t, st, key).Resolve(ctx, "USER.00042@example.org"); r != "ap" || err != nil {
		t.Fatalf("resolve: %q %v", r, err)
	}
}

// TestServe starts the hub from the config, waits until it answers and
// stops it with the context.
func TestServe(t *testing.T) {
	s := newSetup(t, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var errOut bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", s.config}, strings.NewReader(""), &bytes.Buffer{}, &errOut)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get("http://" + s.adminListen + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("hub did not become ready: %v\n%s", err, errOut.String())
		}
		select {
		case code := <-done:
			t.Fatalf("serve exited with %d: %s", code, errOut.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+s.hubListen+"/.well-known/openid-configuration", nil)
	req.Host = "hub.id.localhost:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("discovery: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("serve: exit %d: %s", code, errOut.String())
	}
}

// TestTableRehash follows the sizing procedure of docs/operations.md with
// the CLI: a table imported at the default size is resized online to the
// bucket count hub.expected_users asks for, every user still resolves, and
// a second run has nothing to do. The embedded store has no buckets.
func TestTableRehash(t *testing.T) {
	addr := testenv.RedisAddr(t)
	s := newSetup(t, "redis://"+addr+"/0")
	prefix := "meridian-cmdtest:" + hex.EncodeToString([]byte(s.dir))[len(hex.EncodeToString([]byte(s.dir)))-12:] + ":"
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	t.Cleanup(func() {
		st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:"})
		if err == nil {
			_ = st.Drop(ctx)
		}
	})
	if code, out, errOut := runHub(t, usernames(2000), "import", "--config", s.config, "--prefix", prefix, "--region", "us", "--file", "-"); code != 0 {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	body, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	sized := strings.Replace(string(body), "hub:\n", "hub:\n  expected_users: 5000000\n", 1)
	if err := os.WriteFile(s.config, []byte(sized), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runHub(t, "", "table-rehash", "--config", s.config, "--prefix", prefix)
	if code != 0 || !strings.Contains(out, "rehashing from") || !strings.Contains(out, "done:") {
		t.Fatalf("table-rehash: %d %s %s", code, out, errOut)
	}
	if code, out, errOut := runHub(t, "", "table-rehash", "--config", s.config, "--prefix", prefix); code != 0 || !strings.Contains(out, "nothing to do") {
		t.Fatalf("second table-rehash: %d %s %s", code, out, errOut)
	}
	key, _ := os.ReadFile(s.keyFile)
	st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + "lookup:"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"USER.00000@example.org", "user.01999@example.org"} {
		if r, err := table(t, st, key).Resolve(ctx, name); r != "us" || err != nil {
			t.Fatalf("resolve %s after the rehash: %q %v", name, r, err)
		}
	}
	emb := newSetup(t, "")
	if code, _, errOut := runHub(t, "", "table-rehash", "--config", emb.config); code != 1 || !strings.Contains(errOut, "hub.redis is not set") {
		t.Fatalf("table-rehash on the embedded store: %d %s", code, errOut)
	}
}

// TestDNSFailbackUsage: dns-failback names its missing flag, and without a
// running hub it reports the failed call instead of pretending success.
func TestDNSFailbackUsage(t *testing.T) {
	s := newSetup(t, "")
	if code, _, errOut := runHub(t, "", "dns-failback", "--config", s.config); code != 2 || !strings.Contains(errOut, "--region") {
		t.Fatalf("dns-failback without --region: %d %s", code, errOut)
	}
	if code, _, errOut := runHub(t, "", "dns-failback", "--config", s.config, "--region", "eu"); code != 1 || errOut == "" {
		t.Fatalf("dns-failback with no hub running: %d %s", code, errOut)
	}
}

// TestConflictsCommand lists a held double claim and resolves it.
func TestConflictsCommand(t *testing.T) {
	s := newSetup(t, "")
	ctx := context.Background()
	dir := filepath.Join(s.dir, "data", "hub")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var k lookup.Key
	k[0] = 0xab
	put := func(file, region string) {
		st, err := embedded.Open(ctx, filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if err := st.Put(ctx, k, region); err != nil {
			t.Fatal(err)
		}
	}
	put("lookup.db", "us")
	put("conflicts.db", "eu")
	code, out, errOut := runHub(t, "", "conflicts", "--config", s.config)
	if code != 0 || !strings.Contains(out, k.String()+"  us      eu") {
		t.Fatalf("list: %d\n%s\n%s", code, out, errOut)
	}
	if code, _, errOut := runHub(t, "", "conflicts", "--config", s.config, "--resolve", k.String(), "--region", "ap"); code == 0 {
		t.Fatalf("resolved to a region that claims nothing: %s", errOut)
	}
	if code, _, errOut := runHub(t, "", "conflicts", "--config", s.config, "--resolve", "zz", "--region", "eu"); code != 2 {
		t.Fatalf("bad key: %d %s", code, errOut)
	}
	if code, out, errOut := runHub(t, "", "conflicts", "--config", s.config, "--resolve", k.String(), "--region", "eu"); code != 0 || !strings.Contains(out, "now lives in eu") {
		t.Fatalf("resolve: %d %s %s", code, out, errOut)
	}
	if code, out, _ := runHub(t, "", "conflicts", "--config", s.config); code != 0 || strings.Contains(out, k.String()) {
		t.Fatalf("after resolve: %d %s", code, out)
	}
	st, err := embedded.Open(ctx, filepath.Join(dir, "lookup.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if r, err := st.Get(ctx, k); r != "eu" || err != nil {
		t.Fatalf("table entry %q %v, want eu", r, err)
	}
}
