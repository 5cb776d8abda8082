package routing

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/testenv"
)

// syncBuf is a log sink safe for the router's goroutines.
type syncBuf struct {
	mu  chan struct{}
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu <- struct{}{}
	defer func() { <-b.mu }()
	return b.buf.String()
}

// TestRoutedCallOverTLSWithPrivateCA: the upstream's certificate, from a
// private CA, names only the region's host name while the router dials its
// IP address. With federation.tls.ca_file the routed call succeeds (the
// name is verified against the host, not the address); without it the
// call fails and the router's log names the TLS cause.
func TestRoutedCallOverTLSWithPrivateCA(t *testing.T) {
	ca := testenv.NewTestCA(t)
	certFile, keyFile := ca.Issue(t, "eu.id.test")
	eu := &seen{}
	srv := httptest.NewUnstartedServer(eu.handler("eu"))
	cert, err := tlsKeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv.TLS = cert
	srv.StartTLS()
	t.Cleanup(srv.Close)
	codec := testCodec(t)
	euAT, err := codec.New(KindAccess, "eu")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		caFile string
		want   int
	}{
		{"with the CA bundle", ca.CAFile, http.StatusOK},
		{"without it", "", http.StatusServiceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// As config.Federation.ClientTLS builds it (config imports routing).
			var tlsConf *tls.Config
			if tc.caFile != "" {
				pem, err := os.ReadFile(tc.caFile)
				if err != nil {
					t.Fatal(err)
				}
				pool := x509.NewCertPool()
				pool.AppendCertsFromPEM(pem)
				tlsConf = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
			}
			logs := &syncBuf{mu: make(chan struct{}, 1)}
			rt, err := NewRouter(keyed(RouterConfig{Local: "us",
				Peers:          []Peer{{Region: "eu", URL: "https://eu.id.test", Addr: srv.Listener.Addr().String(), TLS: true}},
				ConnectTimeout: time.Second, RequestTimeout: 5 * time.Second, TLSConfig: tlsConf}),
				codec, http.NotFoundHandler(), slog.New(slog.NewTextHandler(logs, nil)), nil)
			if err != nil {
				t.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "https://eu.id.test/userinfo", nil)
			req.Header.Set("Authorization", "Bearer "+euAT)
			rec := httptest.NewRecorder()
			rt.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != tc.want {
				t.Fatalf("routed call: %d %s, want %d; log: %s", rec.Code, body, tc.want, logs.String())
			}
			if tc.want == http.StatusOK {
				if string(body) != "eu" {
					t.Fatalf("answered by %q", body)
				}
				return
			}
			if l := logs.String(); !strings.Contains(l, "tls handshake") || !strings.Contains(l, "certificate signed by unknown authority") {
				t.Fatalf("the router's log does not name the TLS cause: %s", l)
			}
		})
	}
}

func tlsKeyPair(certFile, keyFile string) (*tls.Config, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{c}}, nil
}
