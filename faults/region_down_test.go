package faults

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
	"go.opentelemetry.io/otel/metric/noop"

	"github.com/meridian-id/meridian/geodns"
	"github.com/meridian-id/meridian/internal/fedtest"
)

// dnsListeners opens a UDP and a TCP listener on one free loopback port.
// The system picks a UDP port that is free for UDP only: a connection of
// another test may hold the same TCP port, so it tries again (a CI run
// failed once on "address already in use").
func dnsListeners(t *testing.T) (net.PacketConn, net.Listener) {
	t.Helper()
	var last error
	for range 20 {
		udp, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tcp, err := net.Listen("tcp", udp.LocalAddr().String())
		if err == nil {
			return udp, tcp
		}
		udp.Close()
		last = err
	}
	t.Fatalf("no loopback port free for both UDP and TCP: %v", last)
	return nil, nil
}

// startGeoDNS serves the federation's GeoDNS on a free loopback UDP port.
// Its health interval is an hour: the test drives rounds with CheckOnce.
func startGeoDNS(t *testing.T, f *fedtest.Federation) (*geodns.Server, string) {
	gc, err := geodns.FromConfig(f.Cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := geodns.New(gc, slog.New(slog.NewTextHandler(io.Discard, nil)), noop.NewMeterProvider().Meter("t"))
	if err != nil {
		t.Fatal(err)
	}
	udp, tcp := dnsListeners(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, udp, tcp); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv, udp.LocalAddr().String()
}

// lookupA asks the GeoDNS at addr for name's A records.
func lookupA(t *testing.T, addr, name string) []string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("DNS %s: %v", name, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out
}

// TestFaultRegionDown stops eu's primary, then its DR site. GeoDNS moves
// eu's region host to the DR site after Fall failed rounds (never before),
// and the global host to the next region by proximity once both are down;
// routed calls for eu artifacts are answered by the DR site while it lives
// and then fail closed with 503 temporarily_unavailable (never active:true);
// us's artifacts are served without a single error throughout.
func TestFaultRegionDown(t *testing.T) {
	f := startFederation(t, fedtest.Options{DR: true, DNS: true})
	dnsSrv, dnsAddr := startGeoDNS(t, f)
	euApp, usApp := f.Client("eu"), f.Client("us")
	f.User("eu", "eve")
	f.User("us", "sam")
	euTok := f.Tokens("eu", euApp, "eve")
	usTok := f.Tokens("us", usApp, "sam")
	ctx := context.Background()
	health := dnsSrv.Health()
	fall := f.Cfg.DNS.Health.Fall

	expect := func(step, name string, want ...string) {
		t.Helper()
		if got := lookupA(t, dnsAddr, name); !slices.Equal(got, want) {
			t.Fatalf("%s: %s answered %v, want %v", step, name, got, want)
		}
	}
	health.CheckOnce(ctx)
	expect("all healthy", "eu.id.localhost", "127.0.0.11")
	expect("all healthy", "id.localhost", "127.0.0.11")

	// us's traffic is checked at every step below.
	usCalls := 0
	usOK := func(step string) {
		t.Helper()
		for _, entry := range []string{"us", "ap"} {
			if s, m := f.Introspect(entry, usApp, usTok["access_token"].(string)); s != 200 || m["active"] != true {
				t.Fatalf("%s: us token via %s: %d %v", step, entry, s, m)
			}
			usCalls++
		}
		s, oe, tok := f.Token("ap", usApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {usTok["refresh_token"].(string)}})
		if s != 200 {
			t.Fatalf("%s: us refresh via ap: %d %+v", step, s, oe)
		}
		usTok["refresh_token"] = tok["refresh_token"]
		usCalls++
	}
	usOK("all healthy")

	// eu's primary stops.
	f.Halt("eu")
	for round := 1; round < fall; round++ {
		health.CheckOnce(ctx)
		expect("primary down, within the health window", "eu.id.localhost", "127.0.0.11")
	}
	health.CheckOnce(ctx)
	expect("primary down for Fall rounds", "eu.id.localhost", "127.0.0.21")
	// Routed calls for eu artifacts reach the DR site (connection refused at
	// the primary: nothing was sent, so even a refresh may fail over).
	if s, m := f.Introspect("us", usApp, euTok["access_token"].(string)); s != 200 || m["active"] != true {
		t.Fatalf("eu token via us with eu's DR site up: %d %v", s, m)
	}
	s, oe, tok := f.Token("ap", euApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {euTok["refresh_token"].(string)}})
	if s != 200 {
		t.Fatalf("eu refresh via ap with eu's DR site up: %d %+v", s, oe)
	}
	euTok = tok
	usOK("eu primary down")

	// The DR site stops too: the whole region is gone.
	f.Halt("eu/dr")
	for range fall {
		health.CheckOnce(ctx)
	}
	expect("eu and its DR site down", "id.localhost", "127.0.0.12") // eu's proximity list: us first
	for _, entry := range []string{"us", "ap"} {
		start := time.Now()
		s, m := f.Introspect(entry, usApp, euTok["access_token"].(string))
		if s != http.StatusServiceUnavailable || m["error"] != "temporarily_unavailable" || m["active"] != nil {
			t.Fatalf("eu token via %s with eu down: %d %v", entry, s, m)
		}
		if d := time.Since(start); d > f.Cfg.Federation.RequestTimeout+time.Second {
			t.Fatalf("eu token via %s: answered after %s", entry, d)
		}
		s, oe, _ := f.Token(entry, euApp, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {euTok["refresh_token"].(string)}})
		if s != http.StatusServiceUnavailable || oe.Error != "temporarily_unavailable" {
			t.Fatalf("eu refresh via %s with eu down: %d %+v", entry, s, oe)
		}
	}
	usOK("eu down")
	t.Logf("GeoDNS moved eu.id.localhost to the DR site after %d failed rounds and id.localhost to us; %d us calls, 0 errors", fall, usCalls)
}
