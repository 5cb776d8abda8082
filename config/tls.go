package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// ClientTLS is the TLS client configuration of calls between nodes: TLS
// 1.2+, the system roots plus federation.tls.ca_file. Server names are
// verified against the site's host name by each client (the dial goes to
// an address). Nil config, nil error when no CA file is set.
func (f *Federation) ClientTLS() (*tls.Config, error) {
	if f.TLS.CAFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(f.TLS.CAFile)
	if err != nil {
		return nil, fmt.Errorf("federation.tls.ca_file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("federation.tls.ca_file: %s holds no PEM certificate", f.TLS.CAFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}
