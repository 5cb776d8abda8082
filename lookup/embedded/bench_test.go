package embedded_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/meridian-id/meridian/lookup"
)

func benchEntries(b *testing.B, n int) []lookup.Entry {
	b.Helper()
	entries := make([]lookup.Entry, n)
	for i := range entries {
		if _, err := rand.Read(entries[i].Key[:]); err != nil {
			b.Fatal(err)
		}
		entries[i].Region = "eu"
	}
	return entries
}

// BenchmarkEmbeddedPutMany: one 1000-entry transaction (synchronous=FULL,
// so one fsync of the WAL) per op.
func BenchmarkEmbeddedPutMany(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := context.Background()
	n := 0
	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		e := benchEntries(b, 1000)
		b.StartTimer()
		start := time.Now()
		if err := s.PutMany(ctx, e); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(start)
		n += len(e)
	}
	b.ReportMetric(float64(n)/elapsed.Seconds(), "entries/s")
}

// BenchmarkEmbeddedGet: point lookups in a 100,000-entry file.
func BenchmarkEmbeddedGet(b *testing.B) {
	s := open(b, filepath.Join(b.TempDir(), "bench.db"))
	ctx := context.Background()
	e := benchEntries(b, 100_000)
	if err := s.PutMany(ctx, e); err != nil {
		b.Fatal(err)
	}
	i := 0
	start := time.Now()
	for b.Loop() {
		if _, err := s.Get(ctx, e[i%len(e)].Key); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/time.Since(start).Seconds(), "lookups/s")
}
