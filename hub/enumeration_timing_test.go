package hub_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/internal/timingstat"
)

// browserFrom is a browser whose connections leave from the loopback
// address source, so each region's and the hub's per-address limits see
// it as its own client.
func (f *fed) browserFrom(source string) *browser {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(source)}}
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ip, ok := f.Resolver.Lookup(host)
		if !ok {
			return nil, fmt.Errorf("test resolver: unknown host %s", host)
		}
		return d.DialContext(ctx, network, net.JoinHostPort(ip, port))
	}, DisableKeepAlives: true}
	jar, _ := cookiejar.New(nil)
	return &browser{t: f.t, f: f, c: &http.Client{Jar: jar, Transport: tr, Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// timed submits fields on p and returns the page the browser ends on and
// the time from sending the post to reading that page (redirects included).
func (b *browser) timed(p page, fields url.Values) (page, time.Duration) {
	start := time.Now()
	next := b.submit(p, fields)
	return next, time.Since(start)
}

// TestCrossRegionEnumerationTiming measures, from outside as a browser
// entering at eu, the cross-region login path for a user resident in us
// and for a username no region has (which the hub sends to a decoy
// region):
//
//   - the username step: posting the name on eu's username page until
//     the (resident or decoy) region's password page is read, through eu,
//     the hub and that region; 500 samples per class;
//   - the password step: posting a wrong password on that page until
//     "Invalid username or password." is read (one argon2id verification
//     each); 100 samples per class.
//
// Classes are interleaved sample by sample on two workers, each source
// address staying under every per-address and per-identifier limit. The
// two distributions of each step must be indistinguishable: medians within
// 10% and a Mann–Whitney probability that the unknown name is slower
// within [0.4, 0.6] (about ±2.4 standard errors at 100+100 samples).
// Like faults.TestAbuseEnumerationTiming it is skipped under -short and
// -race.
func TestCrossRegionEnumerationTiming(t *testing.T) {
	if testing.Short() {
		t.Skip("about half a minute of cross-region logins and argon2id verifications; run without -short")
	}
	if raceEnabled {
		t.Skip("the race detector slows argon2id ~10x and distorts timings; the claim is measured without -race")
	}
	if os.Getenv("MERIDIAN_TIMING_TESTS") == "" {
		// Open finding (docs/security.md, Enumeration): in the CI run of
		// 2026-12-06, next to the fault suite, the password step differed
		// by 14.5% (P(unknown slower) = 0.632) while three runs on a
		// loaded machine did not. Until that is explained this measurement
		// is run on demand, not as a gate that would fail every CI run.
		t.Skip("set MERIDIAN_TIMING_TESTS=1 to measure cross-region enumeration timing (open finding, see docs/security.md)")
	}
	const (
		usernameSamples = 500 // per class
		passwordSamples = 100 // per class
		perSource       = 20  // posts per source address: under the username (60/min) and failure (30/min) limits
		knownUsers      = 20  // wrong passwords spread so no user reaches 10 failures a minute
	)
	f := newFed(t, options{topology: federation.TopologyHub})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < knownUsers; i += 2 {
				f.addUser("us", fmt.Sprintf("resident-%02d", i), bobPassword, bobClaims())
			}
		})
	}
	wg.Wait()
	for i := range knownUsers {
		f.waitResolves(fmt.Sprintf("resident-%02d", i), "us")
	}
	a := f.newApp("eu", f.globalURL())

	// name is the username of sample n: even samples a name no region has,
	// odd ones a user resident in us.
	name := func(n int) (string, bool) {
		if n%2 == 0 {
			return fmt.Sprintf("nobody-%04d", n/2), true
		}
		return fmt.Sprintf("resident-%02d", (n/2)%knownUsers), false
	}
	// run takes total samples, perSource per source address (addresses
	// 127.0.<net>.x), on two interleaved workers, and returns the
	// durations of unknown names and of resident users.
	run := func(net, total int, sample func(b *browser, n int, username string) (time.Duration, error)) (unknown, resident []time.Duration) {
		var mu sync.Mutex
		var failure error
		sources := total / perSource
		for w := range 2 {
			wg.Go(func() {
				for s := w; s < sources; s += 2 {
					b := f.browserFrom(fmt.Sprintf("127.0.%d.%d", net, s+1))
					for i := range perSource {
						n := s*perSource + i
						username, isUnknown := name(n)
						d, err := sample(b, n, username)
						mu.Lock()
						if err != nil && failure == nil {
							failure = err
						}
						if isUnknown {
							unknown = append(unknown, d)
						} else {
							resident = append(resident, d)
						}
						mu.Unlock()
						if err != nil {
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if failure != nil {
			t.Fatal(failure)
		}
		return unknown, resident
	}
	usernamePage := func(b *browser) page {
		p := b.visit(a.start().url)
		if p.status != http.StatusOK || !p.isUsername() || p.url.Hostname() != globalHost {
			t.Errorf("entry page at %s: %d", p.url, p.status)
		}
		return p
	}

	start := time.Now()
	uu, ur := run(4, 2*usernameSamples, func(b *browser, n int, username string) (time.Duration, error) {
		p, d := b.timed(usernamePage(b), url.Values{"username": {username}})
		if p.status != http.StatusOK || !p.isPassword() || p.url.Hostname() == globalHost || p.url.Hostname() == hubHost {
			return d, fmt.Errorf("username sample %d (%s): %d at %s, want a region's password page", n, username, p.status, p.url)
		}
		return d, nil
	})
	usernameTime := time.Since(start)
	start = time.Now()
	pu, pr := run(5, 2*passwordSamples, func(b *browser, n int, username string) (time.Duration, error) {
		p := b.submit(usernamePage(b), url.Values{"username": {username}})
		if !p.isPassword() {
			return 0, fmt.Errorf("password sample %d (%s): no password page: %d at %s", n, username, p.status, p.url)
		}
		next, d := b.timed(p, url.Values{"username": {username}, "password": {"not-the-password"}})
		if next.status != http.StatusOK || !next.has(federation.InvalidCredentials) {
			return d, fmt.Errorf("password sample %d (%s): %d at %s, want %q", n, username, next.status, next.url, federation.InvalidCredentials)
		}
		return d, nil
	})
	passwordTime := time.Since(start)

	for _, c := range []struct {
		step              string
		unknown, resident []time.Duration
		took              time.Duration
	}{
		{"username step (eu → hub → region's password page)", uu, ur, usernameTime},
		{"password step (wrong password → error page)", pu, pr, passwordTime},
	} {
		mu, mr := timingstat.Median(c.unknown), timingstat.Median(c.resident)
		diff := math.Abs(float64(mu-mr)) / float64(min(mu, mr))
		auc := timingstat.Superiority(c.unknown, c.resident)
		t.Logf("%s: %d+%d samples in %s: unknown name median %s (p10 %s, p90 %s); resident in us median %s (p10 %s, p90 %s); "+
			"median difference %.2f%%; P(unknown slower) = %.3f",
			c.step, len(c.unknown), len(c.resident), c.took.Round(time.Second),
			mu, timingstat.Quantile(c.unknown, .1), timingstat.Quantile(c.unknown, .9), mr, timingstat.Quantile(c.resident, .1), timingstat.Quantile(c.resident, .9), 100*diff, auc)
		if diff > 0.10 {
			t.Errorf("%s: medians differ by %.1f%%: an attacker can tell unknown names from users resident elsewhere", c.step, 100*diff)
		}
		if auc < 0.4 || auc > 0.6 {
			t.Errorf("%s: probability of superiority %.3f outside [0.4, 0.6]: the distributions are distinguishable", c.step, auc)
		}
	}
}

// TestDecoyRegionConsistentAcrossEntries is the two-probe attack on the
// decoy: type a name at an application of region A; if the password page
// appears at region X, type it again at an application of X. A user
// resident in X gets X's password page directly (no hub); an unknown name
// goes through the hub once more (its decoy is never the entry region) to
// a third region, so existence shows. Known leak, documented in
// docs/security.md ("Enumeration"); skipped until the hub (or the entry
// region) answers an unknown name at its decoy region as a resident one.
func TestDecoyRegionConsistentAcrossEntries(t *testing.T) {
	t.Skip("known leak: an unknown name's decoy region sends it through the hub again (docs/security.md, Enumeration)")
	f := newFed(t, options{topology: federation.TopologyHub})
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	apps := map[string]*app{}
	for _, id := range regionIDs {
		apps[id] = f.newApp(id, f.globalURL())
	}
	probe := func(entry, name string) page {
		b := f.newBrowser()
		p := b.submit(b.visit(apps[entry].start().url), url.Values{"username": {name}})
		if !p.isPassword() {
			t.Fatalf("%s via %s: %d at %s, want a password page", name, entry, p.status, p.url)
		}
		return p
	}
	for _, name := range []string{"bob.smith", "nobody.a", "nobody.b", "nobody.c"} {
		first := probe("eu", name)
		shown := first.header.Get("X-Meridian-Region")
		second := probe(shown, name)
		if slices.Contains(second.hosts, hubHost) {
			t.Errorf("%s: shown at %s from eu, but entering at %s goes through the hub again (%v): not resident there, so unknown",
				name, shown, shown, second.hosts)
		}
	}
}
