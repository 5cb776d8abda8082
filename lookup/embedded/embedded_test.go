package embedded_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/conformance"
	"github.com/meridian-id/meridian/lookup/embedded"
)

func open(t testing.TB, path string) *embedded.Store {
	t.Helper()
	s, err := embedded.Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) lookup.Store {
		return open(t, filepath.Join(t.TempDir(), "lookup.db"))
	})
}

func TestPragmasAndReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "odd name?#%.db")
	s, err := embedded.Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	k := lookup.Key{1, 2, 3}
	if err := s.Put(ctx, k, "eu"); err != nil {
		t.Fatalf("Put: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s2 := open(t, path)
	if got, err := s2.Get(ctx, k); err != nil || got != "eu" {
		t.Fatalf("after reopen Get = %q, %v", got, err)
	}
	matches, err := filepath.Glob(filepath.Join(filepath.Dir(path), "odd name*"))
	if err != nil || len(matches) == 0 {
		t.Fatalf("database file not created at the literal path: %v %v", matches, err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := embedded.Open(context.Background(), ""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}
