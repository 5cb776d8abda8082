package node_test

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/testenv"
)

// TestAdminListenerTLS: with tls.admin the admin listener (metrics,
// /readyz) serves the site's certificate, verified against the site's host
// name with the private CA; plain HTTP gets no answer from it.
func TestAdminListenerTLS(t *testing.T) {
	ca := testenv.NewTestCA(t)
	certFile, keyFile := ca.Issue(t, "eu.id.localhost")
	cfg := &config.Config{
		DataDir: t.TempDir(),
		Federation: config.Federation{GlobalHost: "id.localhost", Scheme: "https", Port: 443, CookieDomain: "id.localhost",
			Topology: "hub", ConnectTimeout: 500 * time.Millisecond, RequestTimeout: 2 * time.Second},
		Hub:       config.Hub{Site: config.Site{Host: "hub.id.localhost", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
		Telemetry: config.Telemetry{LogLevel: "error"},
		Regions: []config.Region{{ID: "eu", Site: config.Site{Host: "eu.id.localhost", Listen: "127.0.0.1:0", Addresses: []string{"127.0.0.1"},
			TLS: config.TLS{CertFile: certFile, KeyFile: keyFile, Admin: true}}}},
	}
	_, adm, _, _ := startNode(t, cfg)

	pem, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "eu.id.localhost"}}}
	resp, err := c.Get("https://" + adm.Addr().String() + "/metrics")
	if err != nil {
		t.Fatalf("admin /metrics over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("admin /metrics over TLS: %d", resp.StatusCode)
	}
	plain := &http.Client{Timeout: 2 * time.Second}
	if resp, err := plain.Get("http://" + adm.Addr().String() + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("the admin listener answered plain HTTP with metrics")
		}
	}
}
