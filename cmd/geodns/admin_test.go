package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/cli"
	"github.com/meridian-id/meridian/internal/testenv"
)

// freeAddr is a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// geodnsConfig writes a one-region federation whose sites all serve TLS
// (so that federation.production accepts everything but the dns block)
// with dns as given, and returns its path.
func geodnsConfig(t *testing.T, production bool, certFile, keyFile, dns string) string {
	t.Helper()
	tlsBlock := fmt.Sprintf("{cert_file: %q, key_file: %q}", certFile, keyFile)
	y := fmt.Sprintf(`data_dir: %q
federation:
  global_host: id.localhost
  scheme: https
  port: 443
  production: %v
regions:
  - id: eu
    host: eu.id.localhost
    listen: 127.0.0.11:8443
    addresses: [127.0.0.11]
    tls: %s
hub:
  host: hub.id.localhost
  listen: 127.0.0.10:8443
  addresses: [127.0.0.10]
  tls: %s
dns:
  listen: %s
  default_region: eu
  nameservers:
    - name: ns1.id.localhost
      addresses: [127.0.0.1]
%s`, t.TempDir(), production, tlsBlock, tlsBlock, freeAddr(t), dns)
	p := filepath.Join(t.TempDir(), "regions.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestAdminListener: the geodns admin listener is the config key
// dns.admin_listen (overridden by --admin), served over TLS when
// dns.tls.admin is set, and federation.production refuses it in plain
// HTTP whichever way it was set. The state command reaches a TLS listener
// through an https:// --admin and --ca-file.
func TestAdminListener(t *testing.T) {
	ca := testenv.NewTestCA(t)
	cert, key := ca.Issue(t, "localhost")
	tests := []struct {
		name       string
		production bool
		dns        string   // extra dns keys; ADMIN is replaced by a free address
		flags      []string // extra serve flags; ADMIN as above
		scheme     string   // "" = refused at start
		wantErr    string
	}{
		{"config key, plain", false, "  admin_listen: ADMIN\n", nil, "http", ""},
		{"flag overrides the key", false, "  admin_listen: 127.0.0.1:1\n", []string{"--admin", "ADMIN"}, "http", ""},
		{"config key, TLS", false, fmt.Sprintf("  admin_listen: ADMIN\n  tls: {cert_file: %q, key_file: %q, admin: true}\n", cert, key), nil, "https", ""},
		{"production, TLS", true, fmt.Sprintf("  admin_listen: ADMIN\n  tls: {cert_file: %q, key_file: %q, admin: true}\n", cert, key), nil, "https", ""},
		{"production refuses plain key", true, "  admin_listen: ADMIN\n", nil, "", "dns.tls.admin: invalid configuration: must be true (federation.production"},
		{"production refuses plain flag", true, "", []string{"--admin", "ADMIN"}, "", "--admin: dns.tls.admin: invalid configuration: must be true"},
		{"production refuses loopback plain too", true, "  admin_listen: 127.0.0.1:9053\n", nil, "", "dns.tls.admin"},
		{"tls.admin without a certificate", false, "  admin_listen: ADMIN\n  tls: {admin: true}\n", nil, "", "dns.tls.admin: invalid configuration: serves dns.admin_listen"},
		{"bad admin_listen", false, "  admin_listen: nowhere\n", nil, "", "dns.admin_listen: invalid configuration"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			admin := freeAddr(t)
			cfg := geodnsConfig(t, tc.production, cert, key, strings.ReplaceAll(tc.dns, "ADMIN", admin))
			args := []string{"serve", "--config", cfg}
			for _, f := range tc.flags {
				args = append(args, strings.ReplaceAll(f, "ADMIN", admin))
			}
			ctx, cancel := context.WithCancel(context.Background())
			var errs bytes.Buffer
			var wg sync.WaitGroup
			code := make(chan int, 1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				code <- program.Run(ctx, args, cli.Stdio{In: strings.NewReader(""), Out: io.Discard, Err: &syncWriter{w: &errs}})
			}()
			defer func() { cancel(); wg.Wait() }()
			if tc.scheme == "" {
				if c := <-code; c != 1 || !strings.Contains(errs.String(), tc.wantErr) {
					t.Fatalf("exit %d, stderr %q, want 1 and %q", c, errs.String(), tc.wantErr)
				}
				return
			}
			base := tc.scheme + "://" + admin
			if tc.scheme == "https" {
				base = "https://localhost:" + admin[strings.LastIndex(admin, ":")+1:]
			}
			var out bytes.Buffer
			stateArgs := []string{"state", "--admin", base}
			if tc.scheme == "https" {
				stateArgs = append(stateArgs, "--ca-file", ca.CAFile)
			}
			// Wait for the listener (it is up once serve got that far).
			if !waitUp(ctx, admin, code) {
				t.Fatalf("geodns exited early: %s", errs.String())
			}
			if c := program.Run(ctx, stateArgs, cli.Stdio{In: strings.NewReader(""), Out: &out, Err: io.Discard}); c != 0 || !strings.Contains(out.String(), `"eu"`) {
				t.Fatalf("state exit %d: %s", c, out.String())
			}
			if tc.scheme == "https" {
				// Plain HTTP to the TLS listener gets no state.
				resp, err := http.Get("http://" + admin + "/dns/state")
				if err == nil {
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						t.Fatalf("plain HTTP answered by the TLS admin listener: %s", body)
					}
				}
				// Without the CA the certificate is not trusted.
				if c := program.Run(ctx, []string{"state", "--admin", base}, cli.Stdio{In: strings.NewReader(""), Out: io.Discard, Err: io.Discard}); c == 0 {
					t.Fatal("state trusted an unknown CA")
				}
				// And the listener speaks TLS 1.2+ only.
				_, err = tls.Dial("tcp", admin, &tls.Config{MaxVersion: tls.VersionTLS11, InsecureSkipVerify: true}) //nolint:gosec // the attacker's client
				if err == nil {
					t.Fatal("TLS 1.1 accepted")
				}
			}
		})
	}
}

// waitUp dials addr until it accepts, or geodns exits (false).
func waitUp(ctx context.Context, addr string, exited <-chan int) bool {
	for {
		select {
		case <-exited:
			return false
		default:
		}
		var d net.Dialer
		if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
			c.Close()
			return true
		}
		time.Sleep(10 * time.Millisecond) // polling only, not an assertion
	}
}

// syncWriter serialises writes from the serving goroutine.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
