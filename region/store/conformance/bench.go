package conformance

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/region/store"
)

// BenchmarkCreateAccessToken measures committed access-token inserts per
// second (client_credentials tokens and tokens of a grant) on the store
// open returns; every backend's benchmark calls it.
func BenchmarkCreateAccessToken(b *testing.B, open func(testing.TB) store.Store) {
	for _, withGrant := range []bool{false, true} {
		name := "client_credentials"
		if withGrant {
			name = "grant"
		}
		b.Run(name, func(b *testing.B) {
			s := open(b)
			ctx := context.Background()
			var seq atomic.Int64
			exp := time.Now().Add(time.Hour)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					at := store.AccessToken{Hash: store.Digest(fmt.Sprint("bench-", i)), ClientID: "cli-bench", Subject: "usr-bench",
						Scopes: []string{"openid", "email"}, Audience: []string{"cli-bench"}, Format: "opaque", ExpiresAt: exp}
					if withGrant {
						at.GrantID = fmt.Sprint("grant-", i)
					}
					if err := s.CreateAccessToken(ctx, at); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commits/s")
		})
	}
}

// BenchmarkGetAccessToken measures reads of an access token by digest.
func BenchmarkGetAccessToken(b *testing.B, open func(testing.TB) store.Store) {
	s := open(b)
	ctx := context.Background()
	const tokens = 1000
	exp := time.Now().Add(time.Hour)
	hashes := make([]store.Hash, tokens)
	for i := range hashes {
		hashes[i] = store.Digest(fmt.Sprint("bench-", i))
		at := store.AccessToken{Hash: hashes[i], ClientID: "cli-bench", Subject: "usr-bench",
			Scopes: []string{"openid", "email"}, Audience: []string{"cli-bench"}, Format: "opaque", ExpiresAt: exp}
		if err := s.CreateAccessToken(ctx, at); err != nil {
			b.Fatal(err)
		}
	}
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h := hashes[seq.Add(1)%tokens]
			if _, err := s.GetAccessToken(ctx, h); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "reads/s")
}
