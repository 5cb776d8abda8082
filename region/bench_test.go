package region_test

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
)

// benchNode is a node on a real loopback listener with a client_credentials
// client and one token to introspect.
func benchNode(b *testing.B, st store.Store) (*testProvider, region.RegisteredClient, string) {
	n := startProviderTB(b, "eu", st)
	c, err := region.CreateClient(b.Context(), st, n.Codec, "eu", region.ClientSpec{GrantTypes: []string{region.GrantClientCredentials}})
	if err != nil {
		b.Fatal(err)
	}
	s, _, m := postFormTB(b, n.URL+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, c.ID, c.Secret)
	if s != 200 {
		b.Fatalf("token: %d", s)
	}
	return n, c, m["access_token"].(string)
}

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256}}
}

func post(b *testing.B, c *http.Client, u, body, id, secret string) {
	req, _ := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := c.Do(req)
	if err != nil {
		b.Error(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		b.Errorf("status %d", resp.StatusCode)
	}
}

func benchIssue(b *testing.B, st store.Store) {
	n, c, _ := benchNode(b, st)
	hc := httpClient()
	body := url.Values{"grant_type": {"client_credentials"}}.Encode()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post(b, hc, n.URL+"/oauth/token", body, c.ID, c.Secret)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func benchIntrospect(b *testing.B, st store.Store) {
	n, c, tok := benchNode(b, st)
	hc := httpClient()
	body := url.Values{"token": {tok}}.Encode()
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			post(b, hc, n.URL+"/oauth/introspect", body, c.ID, c.Secret)
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

// BenchmarkClientCredentials measures token issuance (one committed insert
// per token) against a running node; client secrets are SHA-256-hashed,
// so the store's commit rate is the limit, not a KDF.
func BenchmarkClientCredentials(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchIssue(b, openSQLite(b)) })
	b.Run("postgres", func(b *testing.B) { benchIssue(b, openPostgres(b)) })
	b.Run("mysql", func(b *testing.B) { benchIssue(b, openMySQL(b)) })
}

// BenchmarkIntrospect measures introspection of an opaque token (the read path).
func BenchmarkIntrospect(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) { benchIntrospect(b, openSQLite(b)) })
	b.Run("postgres", func(b *testing.B) { benchIntrospect(b, openPostgres(b)) })
	b.Run("mysql", func(b *testing.B) { benchIntrospect(b, openMySQL(b)) })
}

// openMySQL opens a migrated MySQL/MariaDB store in a database of its own.
func openMySQL(t testing.TB) store.Store {
	st, _ := fedtest.OpenStore(t, fedtest.MySQL)
	return st
}
