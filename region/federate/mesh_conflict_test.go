package federate_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/lookup/redisstore"
	"github.com/meridian-id/meridian/region/federate"
)

// TestMeshConflictMetric: a mesh member on the real Redis partitions
// counts, in meridian.lookup.conflicts, every lookup that meets a username
// two other regions' partitions both claim (the name resolves to no
// region), and does not count a name one region claims.
func TestMeshConflictMetric(t *testing.T) {
	ctx := context.Background()
	o := testenv.RedisOptions(t)
	c := testenv.RedisClient(t)
	var id [6]byte
	_, _ = rand.Read(id[:])
	prefix := "meridian-conflictmetric:" + hex.EncodeToString(id[:]) + ":"
	parts := map[string]*redisstore.Store{}
	for _, r := range []string{"eu", "us", "ap"} {
		st, err := redisstore.New(ctx, c, redisstore.Options{Prefix: prefix + r + ":"})
		if err != nil {
			t.Fatal(err)
		}
		parts[r] = st
		t.Cleanup(func() { _ = st.Drop(context.Background()) })
	}
	t.Setenv("MERIDIAN_FEDERATION_TOPOLOGY", federation.TopologyMesh)
	t.Setenv("MERIDIAN_HUB_REDIS", fmt.Sprintf("redis://%s/%d", o.Addr, o.DB))
	cfg, codec := loadExample(t)
	hubKey := bytes.Repeat([]byte{2}, 32)
	h, err := lookup.NewHasher(hubKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Names whose decoy region is eu, so eu's AnswersUnknown resolves them.
	var names []string
	for i := 0; len(names) < 2; i++ {
		n := fmt.Sprintf("user%d@example.org", i)
		if d, err := federation.DecoyRegion(h, n, cfg.RegionIDs()); err == nil && d == "eu" {
			names = append(names, n)
		}
	}
	conflicted, single := names[0], names[1]
	ck, _ := h.Key(conflicted)
	sk, _ := h.Key(single)
	for _, w := range []struct {
		region string
		k      lookup.Key
	}{{"us", ck}, {"ap", ck}, {"us", sk}} {
		if err := parts[w.region].Put(ctx, w.k, w.region); err != nil {
			t.Fatal(err)
		}
	}
	reader := sdkmetric.NewManualReader()
	st, _ := fedtest.OpenStore(t, fedtest.SQLite)
	n, err := federate.NewMember(ctx, federate.MemberConfig{Config: cfg, Region: "eu", Store: st, Codec: codec, Keys: keyring(partyKeys(t), "eu"),
		CookieKey: bytes.Repeat([]byte{1}, 32), HubKey: hubKey, LookupPrefix: prefix,
		Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	count := func() (total int64, regions string) {
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok && m.Name == "meridian.lookup.conflicts" {
					for _, dp := range sum.DataPoints {
						total += dp.Value
						v, _ := dp.Attributes.Value("regions")
						regions = v.AsString()
					}
				}
			}
		}
		return total, regions
	}
	if unknown, err := n.Login.AnswersUnknown(ctx, single); unknown || err != nil {
		t.Fatalf("a name us claims answered as unknown: %v %v", unknown, err)
	}
	if got, _ := count(); got != 0 {
		t.Fatalf("conflicts after a single claim: %d", got)
	}
	for range 2 {
		if unknown, err := n.Login.AnswersUnknown(ctx, conflicted); !unknown || err != nil {
			t.Fatalf("a double claim resolved to a region: %v %v", unknown, err)
		}
	}
	if got, regions := count(); got != 2 || regions != "us,ap" && regions != "ap,us" {
		t.Fatalf("conflicts %d (%q), want 2 for us,ap", got, regions)
	}
}
