package geodns

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/internal/testenv"
)

// TestHealthCheckOverTLSWithPrivateCA: a site whose certificate, from a
// private CA, names only its host name is checked at its IP address. With
// federation.tls.ca_file (as FromConfig passes it) it is up; without, it is
// down and the log names the TLS cause.
func TestHealthCheckOverTLSWithPrivateCA(t *testing.T) {
	ca := testenv.NewTestCA(t)
	certFile, keyFile := ca.Issue(t, "eu.id.test")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" || r.Host != r.TLS.ServerName+":"+portOf(t, r.Host) {
			http.Error(w, "unexpected", http.StatusBadRequest)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	for _, tc := range []struct {
		name   string
		caFile string
		up     bool
	}{
		{"with the CA bundle", ca.CAFile, true},
		{"without it", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := config.Federation{TLS: config.FederationTLS{CAFile: tc.caFile}}
			tlsConf, err := f.ClientTLS()
			if err != nil {
				t.Fatal(err)
			}
			cfg := healthConfig(srv.URL+"/readyz", "", 1, 1)
			cfg.Regions[0].HealthURL = "https://eu.id.test:" + port + "/readyz"
			cfg.Health.TLSClientConfig = tlsConf
			var logs syncBuffer
			c, err := NewChecker(cfg, slog.New(slog.NewTextHandler(&logs, nil)), newRecMeter())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = c.Close() })
			if up := c.CheckOnce(context.Background()).Up(euUp); up != tc.up {
				t.Fatalf("eu up = %v, want %v; log: %s", up, tc.up, logs.String())
			}
			if !tc.up && !strings.Contains(logs.String(), "certificate signed by unknown authority") {
				t.Fatalf("the down log does not name the TLS cause: %s", logs.String())
			}
		})
	}
}

func portOf(t *testing.T, hostport string) string {
	_, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Error(err)
	}
	return p
}
