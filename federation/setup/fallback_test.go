package setup_test

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/federation/setup"
)

// TestBackChannelFallsBackToDRSite: the back-channel client the hub (and
// every region) uses for a region's discovery, token, JWKS and userinfo
// calls reaches the region's DR site when its primary refuses connections,
// with the region's host kept (Host header, TLS name); while the primary
// is up, the DR site gets nothing.
func TestBackChannelFallsBackToDRSite(t *testing.T) {
	var drHits atomic.Int32
	dr := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		drHits.Add(1)
		_, _ = io.WriteString(w, "dr "+r.Host+r.URL.Path)
	}))
	t.Cleanup(dr.Close)
	primary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "primary "+r.Host+r.URL.Path)
	}))
	primaryAddr := primary.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(primaryAddr)
	cfg := &config.Config{
		Federation: config.Federation{Scheme: "http", Port: 80, ConnectTimeout: time.Second, RequestTimeout: 5 * time.Second},
		Regions: []config.Region{{ID: "eu",
			Site: config.Site{Host: "eu.id.test", Listen: primaryAddr, Addresses: []string{"127.0.0.1"}},
			DR:   &config.Site{Host: "eu-dr.id.test", Listen: dr.Listener.Addr().String(), Addresses: []string{"127.0.0.1"}}}},
		Hub: config.Hub{Site: config.Site{Host: "hub.id.test", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
	}
	client := setup.HTTPClient(cfg, nil)
	get := func() (int, string, error) {
		resp, err := client.Get("http://eu.id.test:" + port + "/.well-known/openid-configuration")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	if code, body, err := get(); err != nil || code != http.StatusOK || body != "primary eu.id.test:"+port+"/.well-known/openid-configuration" {
		t.Fatalf("primary up: %d %q %v", code, body, err)
	}
	if drHits.Load() != 0 {
		t.Fatal("the DR site was called while the primary is up")
	}
	// Stop the primary: its port refuses connections.
	primary.Close()
	client.CloseIdleConnections()
	code, body, err := get()
	if err != nil || code != http.StatusOK || body != "dr eu.id.test:"+port+"/.well-known/openid-configuration" {
		t.Fatalf("primary stopped: %d %q %v, want the DR site's answer for eu.id.test", code, body, err)
	}
	// With the DR site gone too, the error names both.
	dr.Close()
	client.CloseIdleConnections()
	if _, _, err := get(); err == nil {
		t.Fatal("a call succeeded with both sites stopped")
	}
}

// TestBackChannelEveryAddress: the back-channel client dials each address
// of a region's site on its own: with the first node stopped a call goes to
// the second (127.0.0.2, same port) and never to the DR site; only with
// every primary address stopped does the DR site answer.
func TestBackChannelEveryAddress(t *testing.T) {
	serve := func(ln net.Listener, name string, hits *atomic.Int32) *http.Server {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			_, _ = io.WriteString(w, name+" "+r.Host)
		}), ReadHeaderTimeout: time.Second}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
		return srv
	}
	var n1Hits, n2Hits, drHits atomic.Int32
	ln1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln1.Addr().String())
	ln2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", port))
	if err != nil {
		ln1.Close()
		t.Skipf("port %s not free on 127.0.0.2: %v", port, err)
	}
	lnDR, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := serve(ln1, "node1", &n1Hits), serve(ln2, "node2", &n2Hits)
	serve(lnDR, "dr", &drHits)
	cfg := &config.Config{
		Federation: config.Federation{Scheme: "http", Port: 80, ConnectTimeout: time.Second, RequestTimeout: 5 * time.Second},
		Regions: []config.Region{{ID: "eu",
			Site: config.Site{Host: "eu.id.test", Listen: ln1.Addr().String(), Addresses: []string{"127.0.0.1", "127.0.0.2"}},
			DR:   &config.Site{Host: "eu-dr.id.test", Listen: lnDR.Addr().String(), Addresses: []string{"127.0.0.1"}}}},
		Hub: config.Hub{Site: config.Site{Host: "hub.id.test", Listen: "127.0.0.1:1", Addresses: []string{"127.0.0.1"}}},
	}
	client := setup.HTTPClient(cfg, nil)
	get := func() string {
		client.CloseIdleConnections()
		resp, err := client.Get("http://eu.id.test:" + port + "/keys")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	want := "eu.id.test:" + port
	if got := get(); got != "node1 "+want {
		t.Fatalf("every node up: %q", got)
	}
	_ = n1.Close()
	for i := range 3 {
		if got := get(); got != "node2 "+want {
			t.Fatalf("node 1 stopped, call %d: %q, want node 2's answer", i, got)
		}
	}
	if drHits.Load() != 0 {
		t.Fatalf("the DR site got %d calls while node 2 was up", drHits.Load())
	}
	_ = n2.Close()
	if got := get(); got != "dr "+want {
		t.Fatalf("both nodes stopped: %q, want the DR site's answer for eu.id.test", got)
	}
}
