package redisstore_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
)

// cancelWriter cancels a context on the first progress line it receives,
// like an operator pressing Ctrl-C half-way through.
type cancelWriter struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("move ")) {
		w.cancel()
	}
	return w.Buffer.Write(p)
}

// TestSizingProcedure follows docs/operations.md, "Sizing and rehashing the
// hub table", step by step on the real Redis.
func TestSizingProcedure(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	p := prefix(t)
	// A table created with too few buckets for its users (here 1,024 buckets, sized for 80,000 users,
	// where 300,000 are expected).
	old := newStore(t, c, redisstore.Options{Prefix: p, BucketBits: 10})
	entries := randomEntriesT(t, 20_000)
	if err := old.PutMany(ctx, entries); err != nil {
		t.Fatal(err)
	}
	want := map[lookup.Key]string{}
	for _, e := range entries {
		want[e.Key] = e.Region
	}

	// Step 1: set hub.expected_users to the expected peak.
	example, err := os.ReadFile("../../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "regions.yaml")
	body := strings.Replace(string(example), `redis: ""`, "redis: \"\"\n  expected_users: 300000", 1)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}

	// Step 2: hubs restarted with it keep serving on the stored size and
	// report the size they want.
	hub, err := redisstore.New(ctx, c, redisstore.Options{Prefix: p, ExpectedUsers: cfg.Hub.ExpectedUsers})
	if err != nil {
		t.Fatal(err)
	}
	if l, err := hub.Layout(ctx); err != nil || l.BucketBits != 10 || l.WantBits != 12 || l.RehashBits != 0 {
		t.Fatalf("Layout = %+v, %v; want 10 stored, 12 wanted", l, err)
	}
	checkAll(t, "before the rehash", hub, want)

	// Step 3: run the rehash; interrupted, it is simply run again.
	ictx, cancel := context.WithCancel(ctx)
	w := &cancelWriter{cancel: cancel}
	if err := hub.Resize(ictx, w); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Resize = %v; output:\n%s", err, w.String())
	}
	if l, err := hub.Layout(ctx); err != nil || l.RehashBits != 12 {
		t.Fatalf("Layout after interruption = %+v, %v", l, err)
	}
	checkAll(t, "interrupted", old, want)
	var out bytes.Buffer
	if err := hub.Resize(ctx, &out); err != nil {
		t.Fatalf("Resize: %v\n%s", err, out.String())
	}
	// Step 4: check the result.
	if !strings.Contains(out.String(), "done: 12 bucket bits, 20000 entries") || !strings.Contains(out.String(), " 0 over 128 entries") {
		t.Fatalf("Resize output:\n%s", out.String())
	}
	checkAll(t, "after the rehash", old, want)
	t.Logf("interrupted run:\n%s\nsecond run:\n%s", w.String(), out.String())
	out.Reset()
	if err := hub.Resize(ctx, &out); err != nil || !strings.Contains(out.String(), "nothing to do") {
		t.Fatalf("second Resize = %v:\n%s", err, out.String())
	}
}
