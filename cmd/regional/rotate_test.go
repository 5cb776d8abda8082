package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// TestClientsRotateSecret: the command gives a client a new secret through
// the same service as the admin API; the old secret's digest is kept for
// the overlap asked for (or the region's default) and dropped with
// --overlap 0; a public client has no secret to rotate (usage error), an
// unknown client is an error.
func TestClientsRotateSecret(t *testing.T) {
	c := newCLI(t)
	if code, _, errs := c.run("", "migrate", "--region", "eu"); code != 0 {
		t.Fatalf("migrate: %s", errs)
	}
	code, out, errs := c.run("", "clients", "add", "--region", "eu", "--redirect-uri", "https://app.example/cb", "--json")
	if code != 0 {
		t.Fatalf("clients add: %s", errs)
	}
	var added map[string]any
	if err := json.Unmarshal([]byte(out), &added); err != nil {
		t.Fatal(err)
	}
	id, first := added["client_id"].(string), added["client_secret"].(string)
	stored := func() (cur, prev []byte, until time.Time) {
		st, err := sqlite.Open(context.Background(), filepath.Join(filepath.Dir(c.cfg), "data", "eu", "meridian.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		cl, err := st.GetClient(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return cl.SecretHash, cl.PreviousSecretHash, cl.PreviousSecretExpiresAt
	}

	before := time.Now()
	code, out, errs = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", id, "--overlap", "2h", "--json")
	if code != 0 {
		t.Fatalf("rotate-secret: %d %s", code, errs)
	}
	var rotated map[string]any
	if err := json.Unmarshal([]byte(out), &rotated); err != nil {
		t.Fatal(err)
	}
	second, _ := rotated["client_secret"].(string)
	if second == "" || second == first {
		t.Fatalf("rotate-secret gave secret %q (first %q)", second, first)
	}
	cur, prev, until := stored()
	if string(cur) != string(region.HashClientSecret(second)) || string(prev) != string(region.HashClientSecret(first)) {
		t.Fatal("stored digests are not (new, old)")
	}
	if until.Before(before.Add(2*time.Hour)) || until.After(time.Now().Add(2*time.Hour)) {
		t.Fatalf("previous secret works until %v, want two hours from the rotation", until)
	}
	if !strings.Contains(errs, `"action":"client.secret_rotated"`) {
		t.Fatalf("no audit event on stderr: %s", errs)
	}

	// The default overlap is the region's client_secret_overlap (24h when unset).
	if code, out, errs = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", id); code != 0 || !strings.Contains(out, "works until") {
		t.Fatalf("rotate-secret with the default overlap: %d %s %s", code, out, errs)
	}
	if _, _, until = stored(); until.Before(before.Add(23 * time.Hour)) {
		t.Fatalf("default overlap ends %v", until)
	}
	if code, out, _ = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", id, "--overlap", "0"); code != 0 || !strings.Contains(out, "no longer works") {
		t.Fatalf("rotate-secret --overlap 0: %d %s", code, out)
	}
	if _, prev, _ = stored(); prev != nil {
		t.Fatalf("--overlap 0 kept a previous secret")
	}
	if code, _, errs = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", id, "--overlap", "10000h"); code != 2 || !strings.Contains(errs, "overlap") {
		t.Fatalf("overlap above the maximum: %d %s", code, errs)
	}

	code, out, _ = c.run("", "clients", "add", "--region", "eu", "--redirect-uri", "https://app.example/cb", "--public", "--json")
	var pub map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &pub) != nil {
		t.Fatalf("clients add --public: %d %s", code, out)
	}
	if code, _, errs = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", pub["client_id"].(string)); code != 2 || !strings.Contains(errs, "no secret") {
		t.Fatalf("rotate a public client: %d %s", code, errs)
	}
	if code, _, errs = c.run("", "clients", "rotate-secret", "--region", "eu", "--client-id", "nope"); code != 1 || !strings.Contains(errs, "no client") {
		t.Fatalf("rotate an unknown client: %d %s", code, errs)
	}
}
