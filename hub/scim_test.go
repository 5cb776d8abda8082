package hub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/lookup"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/scim"
)

// TestSCIMUsersReachHubTable: users created, renamed and deleted over SCIM
// at a region appear in and leave the hub's lookup table through the
// region's outbox and the real pusher and hub, on SQLite and PostgreSQL;
// every write is one scim.write audit record (without the password) and
// is counted in the SCIM and audit metrics.
func TestSCIMUsersReachHubTable(t *testing.T) {
	for _, pg := range []bool{false, true} {
		name := "sqlite"
		if pg {
			name = "postgres"
		}
		t.Run(name, func(t *testing.T) {
			f := newFed(t, options{topology: federation.TopologyHub, postgres: pg})
			eu := f.Nodes["eu"]
			logs := &fedtest.LogBuffer{}
			log := slog.New(slog.NewJSONHandler(logs, nil))
			reader := sdkmetric.NewManualReader()
			meter := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)).Meter("test")
			h, err := scim.New(scim.Config{Region: "eu", Issuer: f.regionIssuer("eu"), Store: eu.Store, Tokens: eu.Provider, Codec: f.codec,
				Users: scim.Users{Normalize: region.NormalizeUsername, HashPassword: region.HashPassword},
				Audit: region.NewAuditor(log, "eu", meter), AuditEvent: region.AuditSCIMWrite, Log: log, Meter: meter})
			if err != nil {
				t.Fatal(err)
			}
			_, addr := serve(t, h)

			c, err := region.CreateClient(f.ctx, eu.Store, f.codec, "eu", region.ClientSpec{Name: "hr",
				GrantTypes: []string{region.GrantClientCredentials}, Scopes: []string{"scim"}})
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest(http.MethodPost, f.regionIssuer("eu")+"/oauth/token",
				strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "scope": {"scim"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var tok struct {
				AccessToken string `json:"access_token"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&tok)
			resp.Body.Close()
			if tok.AccessToken == "" {
				t.Fatalf("no token: %d", resp.StatusCode)
			}
			call := func(method, path string, body any) (int, map[string]any) {
				t.Helper()
				var rd io.Reader
				if body != nil {
					b, _ := json.Marshal(body)
					rd = bytes.NewReader(b)
				}
				req, _ := http.NewRequest(method, "http://"+addr+path, rd)
				req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
				req.Header.Set("Content-Type", "application/scim+json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				var m map[string]any
				_ = json.NewDecoder(resp.Body).Decode(&m)
				return resp.StatusCode, m
			}
			gone := func(name string) {
				t.Helper()
				fedtest.Eventually(t, name+" leaving the lookup table", func() bool {
					_, err := f.table.Resolve(f.ctx, name)
					return errors.Is(err, lookup.ErrNotFound)
				})
			}

			s, u := call(http.MethodPost, "/scim/v2/Users", map[string]any{
				"schemas": []string{scim.UserSchema}, "userName": "dora", "password": "dora-secret-password"})
			if s != http.StatusCreated {
				t.Fatalf("create: %d %v", s, u)
			}
			id, _ := u["id"].(string)
			f.waitResolves("dora", "eu")

			s, _ = call(http.MethodPatch, "/scim/v2/Users/"+id, map[string]any{"schemas": []string{"urn:ietf:params:scim:api:messages:2.0:PatchOp"},
				"Operations": []any{map[string]any{"op": "replace", "value": map[string]any{"userName": "dora.renamed"}}}})
			if s != http.StatusOK {
				t.Fatalf("rename: %d", s)
			}
			f.waitResolves("dora.renamed", "eu")
			gone("dora")

			if s, _ = call(http.MethodDelete, "/scim/v2/Users/"+id, nil); s != http.StatusNoContent {
				t.Fatalf("delete: %d", s)
			}
			gone("dora.renamed")

			// Audit: one record per write, naming the client, never the password.
			out := logs.String()
			for _, action := range []string{"create", "patch", "delete"} {
				if n := strings.Count(out, `"event":"scim.write","region":"eu","action":"`+action+`","resource_type":"User","id":"`+id+`","client_id":"`+c.ID+`"`); n != 1 {
					t.Errorf("%d audit records of %s, want 1:\n%s", n, action, out)
				}
			}
			if strings.Contains(out, "dora-secret-password") {
				t.Fatal("the password reached the log")
			}
			// Metrics: the writes by operation and status, and the audit counter.
			var rm metricdata.ResourceMetrics
			if err := reader.Collect(context.Background(), &rm); err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					sum, ok := m.Data.(metricdata.Sum[int64])
					if !ok {
						continue
					}
					for _, dp := range sum.DataPoints {
						switch m.Name {
						case "meridian.scim.requests":
							op, _ := dp.Attributes.Value("op")
							st, _ := dp.Attributes.Value("status")
							got[op.AsString()+" "+st.String()] += dp.Value
						case "meridian_audit_events":
							ev, _ := dp.Attributes.Value("event")
							got[ev.AsString()] += dp.Value
						}
					}
				}
			}
			for k, want := range map[string]int64{"create 201": 1, "patch 200": 1, "delete 204": 1, region.AuditSCIMWrite: 3} {
				if got[k] != want {
					t.Errorf("metric %q = %d, want %d (all: %v)", k, got[k], want, got)
				}
			}
		})
	}
}
