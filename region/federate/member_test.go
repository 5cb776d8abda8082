package federate_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/lookup/memstore"
	"github.com/meridian-id/meridian/region/federate"
	"github.com/meridian-id/meridian/routing"
)

func loadExample(t *testing.T) (*config.Config, *routing.Codec) {
	t.Helper()
	cfg, err := config.Load("../../configs/regions.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := routing.NewCodec(cfg.RegionIDs(), bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, c
}

// TestNewMemberFromExampleConfig wires a node of the example federation in
// both topologies: the right federation clients are registered and the
// user-keys listing is mounted in front of the provider.
func TestNewMemberFromExampleConfig(t *testing.T) {
	ctx := context.Background()
	for _, topo := range []string{federation.TopologyHub, federation.TopologyMesh} {
		t.Run(topo, func(t *testing.T) {
			t.Setenv("MERIDIAN_FEDERATION_TOPOLOGY", topo)
			cfg, c := loadExample(t)
			st, _ := fedtest.OpenStore(t, fedtest.SQLite)
			n, err := federate.NewMember(ctx, federate.MemberConfig{Config: cfg, Region: "eu", Store: st, Codec: c, Keys: keyring(partyKeys(t), "eu"),
				CookieKey: bytes.Repeat([]byte{1}, 32), HubKey: bytes.Repeat([]byte{2}, 32), Lookup: memstore.New()})
			if err != nil {
				t.Fatal(err)
			}
			defer n.Close()
			clients, err := st.ListClients(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, cl := range clients {
				ids = append(ids, cl.ID)
			}
			hubID, _ := federation.HubClientID(c, "eu")
			peerID, _ := federation.PeerClientID(c, "us", "eu")
			want := map[string]bool{hubID: topo == federation.TopologyHub, peerID: topo == federation.TopologyMesh}
			for id, present := range want {
				if slices.Contains(ids, id) != present {
					t.Errorf("client %s registered: %v, want %v", id, !present, present)
				}
			}
			rec := httptest.NewRecorder()
			n.Handler(http.NotFoundHandler()).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, federation.UserKeysPath, nil))
			if rec.Code != http.StatusUnauthorized {
				t.Fatalf("user keys without credentials: %d", rec.Code)
			}
		})
	}
}
