package redisstore_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// TestPrivacy imports users into the real Redis, dumps every key, field and
// value under the test's prefix and checks that nothing in it reveals a
// username: no username (in any casing or its normalized form) appears as a
// substring, the hub keys do not appear, and a dictionary attack without the
// hub key (HMAC under a wrong key, plain SHA-256) matches no entry. A
// positive control checks that the attack does match with the right key.
func TestPrivacy(t *testing.T) {
	const n = 3000
	c := client(t)
	ctx := context.Background()
	const bits = 12
	s := newStore(t, c, redisstore.Options{BucketBits: bits})
	p := strings.TrimSuffix(s.MetaKey(), "meta")

	cur := []byte("privacy test hub key: current, 32+ bytes long")
	prev := []byte("privacy test hub key: previous, 32+ bytes long")
	h, err := lookup.NewHasher(cur, prev) // rotating: both key sets are stored
	if err != nil {
		t.Fatal(err)
	}
	tb, err := lookup.NewTable(h, s)
	if err != nil {
		t.Fatal(err)
	}
	users := make(map[string]string, n)
	regions := []string{"eu", "us", "ap"}
	for i := range n {
		u := fmt.Sprintf("Privacy.User-%05d@Example.ORG", i)
		if i%3 == 0 {
			u = fmt.Sprintf("Ünïcode-Ñame-%05d", i)
		}
		users[u] = regions[i%3]
	}
	if got, err := tb.Import(ctx, maps.All(users), nil); err != nil || got != n {
		t.Fatalf("Import = %d, %v", got, err)
	}

	// Dump everything under the prefix.
	keys, err := scanKeys(ctx, c, p)
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	fields := map[string]bool{}
	entries := 0
	for _, k := range keys {
		dump.WriteString(k)
		dump.WriteByte(0)
		typ, err := c.Type(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if typ != "hash" {
			t.Fatalf("key %q has type %s, want hash", k, typ)
		}
		m, err := c.HGetAll(ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		for f, v := range m {
			dump.WriteString(f)
			dump.WriteByte(0)
			dump.WriteString(v)
			dump.WriteByte(0)
			if k != s.MetaKey() {
				fields[f] = true
				entries++
			}
		}
	}
	if entries != 2*n {
		t.Fatalf("dumped %d entries, want %d (two keys per user while rotating)", entries, 2*n)
	}
	all := dump.String()
	for u := range users {
		norm, err := lookup.Normalize(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, form := range []string{u, strings.ToLower(u), strings.ToUpper(u), norm, strings.SplitN(norm, "@", 2)[0]} {
			if strings.Contains(all, form) {
				t.Fatalf("username form %q found in Redis dump", form)
			}
		}
	}
	for _, secret := range [][]byte{cur, prev} {
		for _, form := range []string{string(secret), hex.EncodeToString(secret), string(secret[:16])} {
			if strings.Contains(all, form) {
				t.Fatal("a hub key is stored in Redis")
			}
		}
	}

	// Dictionary attack. A candidate 16-byte key is present iff its bytes
	// after the bucket prefix are a stored field (and they carry the bucket's
	// partial byte, so a field match is an entry match).
	skip := bits / 8
	present := func(k []byte) bool { return fields[string(k[skip:lookup.KeySize])] }
	var wrong [32]byte
	if _, err := rand.Read(wrong[:]); err != nil {
		t.Fatal(err)
	}
	mac := func(key []byte, msg string) []byte {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(msg))
		return m.Sum(nil)
	}
	sha := func(msg string) []byte { s := sha256.Sum256([]byte(msg)); return s[:] }
	hits := 0
	for u := range users {
		norm, _ := lookup.Normalize(u)
		for _, form := range []string{u, strings.ToLower(u), norm} {
			for name, cand := range map[string][]byte{
				"HMAC with a wrong key": mac(wrong[:], form),
				"SHA-256":               sha(form),
				"SHA-256 of key+name":   sha(string(cur) + form),
			} {
				if present(cand) {
					t.Fatalf("%s of a username matches a stored entry", name)
				}
			}
		}
		if present(mac(cur, norm)) && present(mac(prev, norm)) {
			hits++
		}
	}
	if hits != n {
		t.Fatalf("positive control: the real hub keys match %d of %d users", hits, n)
	}
}
