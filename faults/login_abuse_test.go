package faults

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/internal/timingstat"
	"github.com/meridian-id/meridian/region"
)

// invalidCredentials is the message of the password page after a failure.
const invalidCredentials = "Invalid username or password."

// sourceBrowser is a browser whose connections leave from one loopback
// address (so the per-address limit sees distinct clients) and whose view
// of DNS can change mid-login (GeoDNS answering another region).
type sourceBrowser struct {
	*oidctest.Browser
	tr    *http.Transport
	hosts map[string]string
	mu    sync.Mutex
}

func browserFrom(t testing.TB, f *fedtest.Federation, source, entry string) *sourceBrowser {
	sb := &sourceBrowser{hosts: map[string]string{"id.localhost": fedtest.SiteIP(entry)}}
	for _, id := range []string{"eu", "us", "ap"} {
		sb.hosts[id+".id.localhost"] = fedtest.SiteIP(id)
	}
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		sb.mu.Lock()
		ip, ok := sb.hosts[host]
		sb.mu.Unlock()
		if !ok {
			return nil, fmt.Errorf("no address for %s", host)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(ip, port))
	}}
	sb.tr = tr
	sb.Browser = oidctest.NewBrowser(t, tr)
	return sb
}

// steer makes the global host resolve to region entry from now on (kept-
// alive connections to the previous answer are dropped, as a browser's
// would be after the DNS change).
func (sb *sourceBrowser) steer(entry string) {
	sb.mu.Lock()
	sb.hosts["id.localhost"] = fedtest.SiteIP(entry)
	sb.mu.Unlock()
	sb.tr.CloseIdleConnections()
}

// passwordPage starts a login for app on the global host and returns the
// password page (the local user "probe" entered on the identifier page;
// a name unknown to the region would be sent to the hub). The password
// form carries the username, so attempts may name anyone.
func passwordPage(t testing.TB, f *fedtest.Federation, b *sourceBrowser, app region.RegisteredClient) oidctest.Page {
	_, base := f.At("eu")
	p := oidctest.ReadPage(b.Follow(b.Get(fedtest.AuthURL(base, app, oauth2.GenerateVerifier())), oidctest.StopAt(fedtest.AppRedirect)))
	if p.Status != 200 || !strings.Contains(p.Body, `name="username"`) {
		t.Fatalf("login page: %d %s", p.Status, p.Body)
	}
	p = oidctest.ReadPage(b.Submit(p, url.Values{"username": {"probe"}}))
	if p.Status != 200 || !strings.Contains(p.Body, `name="password"`) {
		t.Fatalf("password page: %d %s", p.Status, p.Body)
	}
	return p
}

// attempt submits username and password on a password page; it returns
// the next page and the time the answer took.
func attempt(b *sourceBrowser, p oidctest.Page, username, password string) (oidctest.Page, time.Duration) {
	start := time.Now()
	resp := b.Submit(p, url.Values{"username": {username}, "password": {password}})
	next := oidctest.ReadPage(resp)
	return next, time.Since(start)
}

// TestAbuseLoginBruteForce guesses passwords: after 10 failures for one
// identifier (from any address, through any region) the next attempt —
// even with the right password — is answered 429; after 30 failures from
// one address, every further attempt from it is 429 while other addresses
// are unaffected.
func TestAbuseLoginBruteForce(t *testing.T) {
	f := startFederation(t, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "probe")
	f.User("eu", "max")
	f.User("eu", "nia")

	// Per identifier, with the attempts entering through us (the global
	// host steered to us mid-login: the router sends them to eu).
	a := browserFrom(t, f, "127.0.2.1", "eu")
	p := passwordPage(t, f, a, app)
	a.steer("us")
	for i := 1; i <= 10; i++ {
		p, _ = attempt(a, p, "max", fmt.Sprintf("guess-%d", i))
		if p.Status != 200 || !strings.Contains(p.Body, invalidCredentials) {
			t.Fatalf("guess %d: %d", i, p.Status)
		}
	}
	next, _ := attempt(a, p, "max", "password-max")
	if next.Status != http.StatusTooManyRequests {
		t.Fatalf("11th attempt for max (right password): %d, want 429", next.Status)
	}
	b := browserFrom(t, f, "127.0.2.2", "eu")
	if next, _ := attempt(b, passwordPage(t, f, b, app), "max", "password-max"); next.Status != http.StatusTooManyRequests {
		t.Fatalf("max from another address: %d, want 429 (per-identifier limit)", next.Status)
	}
	// Another identifier from a fresh address still signs in.
	if next, _ := attempt(b, passwordPage(t, f, b, app), "nia", "password-nia"); next.Status == http.StatusTooManyRequests || next.Status >= 400 {
		t.Fatalf("nia from a fresh address: %d", next.Status)
	}

	// Per address: 30 failures over 30 identifiers, then 429 for anything.
	c := browserFrom(t, f, "127.0.2.3", "eu")
	p = passwordPage(t, f, c, app)
	for i := 1; i <= 30; i++ {
		p, _ = attempt(c, p, fmt.Sprintf("nobody-%02d", i), "x")
		if p.Status != 200 || !strings.Contains(p.Body, invalidCredentials) {
			t.Fatalf("failure %d from one address: %d", i, p.Status)
		}
	}
	if next, _ := attempt(c, p, "nia", "password-nia"); next.Status != http.StatusTooManyRequests {
		t.Fatalf("31st attempt from one address: %d, want 429", next.Status)
	}
	d := browserFrom(t, f, "127.0.2.4", "eu")
	if next, _ := attempt(d, passwordPage(t, f, d, app), "nobody-31", "x"); next.Status != 200 || !strings.Contains(next.Body, invalidCredentials) {
		t.Fatalf("another address after one hit its limit: %d", next.Status)
	}
}

// TestAbuseProxiedLoginLimitIsPerClient: logins proxied through another
// region's router are limited per browser address (from the verified hop's
// X-Forwarded-For), not per forwarding router, so one attacker cannot lock
// every other proxied browser out of a region.
func TestAbuseProxiedLoginLimitIsPerClient(t *testing.T) {
	f := startFederation(t, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "probe")
	f.User("eu", "vic")
	a := browserFrom(t, f, "127.0.2.1", "eu")
	p := passwordPage(t, f, a, app)
	a.steer("us")
	for i := 1; i <= 30; i++ {
		p, _ = attempt(a, p, fmt.Sprintf("nobody-%02d", i), "x")
		if p.Status != 200 {
			t.Fatalf("failure %d: %d", i, p.Status)
		}
	}
	if next, _ := attempt(a, p, "vic", "password-vic"); next.Status != http.StatusTooManyRequests {
		t.Fatalf("31st attempt from the attacker: %d, want 429", next.Status)
	}
	v := browserFrom(t, f, "127.0.2.2", "eu")
	vp := passwordPage(t, f, v, app)
	v.steer("us")
	if next, _ := attempt(v, vp, "vic", "password-vic"); next.Status == http.StatusTooManyRequests {
		t.Fatal("a victim proxied through the same router was locked out by another address's failures")
	}
}

// TestAbuseEnumerationTiming measures the password step for unknown users
// and for known users with a wrong password, 1000 samples each,
// interleaved, two at a time from 80 source addresses (so no limit is
// reached), and checks that the two distributions are indistinguishable:
// medians within 5% and a Mann–Whitney probability of superiority within
// [0.45, 0.55]. It takes one to three minutes, depending on the machine
// (one argon2id verification per sample: ~160 ms at two at a time on a
// 2-core CI machine), so -short leaves it out.
func TestAbuseEnumerationTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("one to three minutes of argon2id verifications; run without -short")
	}
	if raceEnabled {
		t.Skip("the race detector slows argon2id ~10x and distorts timings; the claim is measured without -race")
	}
	const perClass, perSource, users = 1000, 25, 100
	f := startFederation(t, fedtest.Options{})
	app := f.Client("eu")
	f.User("eu", "probe")
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < users; i += 2 {
				f.User("eu", fmt.Sprintf("known-%03d", i))
			}
		})
	}
	wg.Wait()

	sources := 2 * perClass / perSource
	unknown, wrong := make([]time.Duration, 0, perClass), make([]time.Duration, 0, perClass)
	var mu sync.Mutex
	var failure error
	start := time.Now()
	for w := range 2 {
		wg.Go(func() {
			for s := w; s < sources; s += 2 {
				b := browserFrom(t, f, fmt.Sprintf("127.0.3.%d", s+1), "eu")
				p := passwordPage(t, f, b, app)
				for i := range perSource {
					n := s*perSource + i // 0 … 1999
					name, class := fmt.Sprintf("ghost-%04d", n/2), &unknown
					if n%2 == 1 {
						name, class = fmt.Sprintf("known-%03d", (n/2)%users), &wrong
					}
					next, d := attempt(b, p, name, "not-the-password")
					if next.Status != 200 || !strings.Contains(next.Body, invalidCredentials) {
						mu.Lock()
						failure = fmt.Errorf("sample %d (%s): status %d", n, name, next.Status)
						mu.Unlock()
						return
					}
					p = next
					mu.Lock()
					*class = append(*class, d)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if failure != nil {
		t.Fatal(failure)
	}
	mu1, mu2 := timingstat.Median(unknown), timingstat.Median(wrong)
	diff := math.Abs(float64(mu1-mu2)) / float64(min(mu1, mu2))
	auc := timingstat.Superiority(unknown, wrong)
	t.Logf("%d+%d samples in %s: unknown user median %s (p10 %s, p90 %s); wrong password median %s (p10 %s, p90 %s); "+
		"median difference %.2f%%; P(unknown slower) = %.3f",
		len(unknown), len(wrong), time.Since(start).Round(time.Second), mu1, timingstat.Quantile(unknown, .1), timingstat.Quantile(unknown, .9),
		mu2, timingstat.Quantile(wrong, .1), timingstat.Quantile(wrong, .9), 100*diff, auc)
	if diff > 0.05 {
		t.Errorf("medians differ by %.1f%%: an attacker can tell unknown users from wrong passwords", 100*diff)
	}
	if auc < 0.45 || auc > 0.55 {
		t.Errorf("probability of superiority %.3f outside [0.45, 0.55]: the distributions are distinguishable", auc)
	}
}
