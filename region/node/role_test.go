package node

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
)

func openReplica(t *testing.T) store.Replication {
	t.Helper()
	ctx := context.Background()
	s, err := postgres.Open(ctx, testenv.PostgresSchema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestPeerGenerationFencing: a primary fences itself only on an
// authenticated answer of a primary peer holding a higher generation; a
// forged answer (wrong key), a replayed one (another nonce) or a standby
// peer leaves it serving.
func TestPeerGenerationFencing(t *testing.T) {
	ctx := context.Background()
	key := fencingKey([]byte("0123456789abcdef0123456789abcdef"))
	tests := []struct {
		name       string
		peerKey    []byte
		peerRole   region.Role
		replay     bool
		wantFenced bool
	}{
		{"genuine newer primary", key, region.RolePrimary, false, true},
		{"forged answer", fencingKey([]byte("another key, not the federation's")), region.RolePrimary, false, false},
		{"replayed answer", key, region.RolePrimary, true, false},
		{"newer standby", key, region.RoleStandby, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mine, theirs := openReplica(t), openReplica(t)
			if _, err := mine.ClaimGeneration(ctx, "eu.id.localhost"); err != nil {
				t.Fatal(err)
			}
			_, _ = theirs.ClaimGeneration(ctx, "eu.id.localhost")
			if g, err := theirs.ClaimGeneration(ctx, "eu-dr.id.localhost"); err != nil || g.Number != 2 {
				t.Fatalf("peer generation %+v %v", g, err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			r := &config.Region{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Database: "postgres://mine"},
				DR: &config.Site{Host: "eu-dr.id.localhost", Listen: ln.Addr().String(), Addresses: []string{"127.0.0.1"}, Database: "postgres://theirs"}}
			cfg := &config.Config{Federation: config.Federation{Scheme: "http", Port: 80, ConnectTimeout: time.Second, RequestTimeout: 2 * time.Second},
				Regions: []config.Region{*r}}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			peer := &Node{cfg: cfg, region: r, dr: true, repl: theirs, fenceKey: tc.peerKey, log: log}
			peer.role.Store(int32(tc.peerRole))
			handler := http.HandlerFunc(peer.serveGeneration)
			if tc.replay {
				// An attacker replays an answer captured for another nonce.
				rec := httptest.NewRecorder()
				peer.serveGeneration(rec, httptest.NewRequest("GET", generationPath+"?nonce=00000000000000000000000000000000", nil))
				captured := rec.Body.Bytes()
				handler = func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Content-Type", "application/json")
					_, _ = w.Write(captured)
				}
			}
			srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: handler}}
			srv.Start()
			t.Cleanup(srv.Close)

			n := &Node{cfg: cfg, region: r, repl: mine, fenceKey: key, log: log}
			n.role.Store(int32(region.RolePrimary))
			n.settleRole(ctx)
			g, err := mine.Generation(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if fenced := n.Role() == region.RoleFenced; fenced != tc.wantFenced || g.Fenced() != tc.wantFenced {
				t.Fatalf("role %s, record %+v; want fenced=%v", n.Role(), g, tc.wantFenced)
			}
			if tc.wantFenced && (g.FencedBy != 2 || g.FencedHolder != "eu-dr.id.localhost") {
				t.Fatalf("fence record %+v", g)
			}
		})
	}
}
