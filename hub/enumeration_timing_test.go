package hub_test

import (
	"context"
	"fmt"
	"maps"
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
//     each); 100 samples per class;
//   - the username step at the decoy region itself: a name no region has
//     whose decoy is eu, and a user resident in eu, typed at eu (no hub
//     hop for either; eu asks the hub about both, see AskAsIfUnknown);
//     500 samples per class.
//
// Classes are interleaved sample by sample on two workers that are always
// in opposite classes, each source address staying under every
// per-address and per-identifier limit; the unknown names are decoyed to
// the residents' region. The
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
		// A timing claim on a shared machine is a measurement, not a CI
		// gate: the 14.5% CI finding of 2026-12-06 and the runs since are
		// in docs/security.md (Enumeration).
		t.Skip("set MERIDIAN_TIMING_TESTS=1 to measure cross-region enumeration timing (see docs/security.md, Enumeration)")
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

	// Names no region has whose decoy region is us, where the residents
	// live: the attacker compares a resident's wrong password with an
	// unknown name's at the same region (unknown names decoyed to the entry
	// region are answered there, like its residents, and are compared with
	// those in TestUnknownUserIndistinguishable).
	var nobody []string
	for i := 0; len(nobody) < usernameSamples+passwordSamples; i++ {
		n := fmt.Sprintf("nobody-%05d", i)
		if d, err := federation.DecoyRegion(f.hasher, n, regionIDs); err == nil && d == "us" {
			nobody = append(nobody, n)
		}
	}
	// name is the username of sample n (source n/perSource): a name no
	// region has or a user resident in us, alternately. The parity flips
	// with the source, so the two workers (even and odd sources) are
	// always in opposite classes: each unknown-name sample runs beside a
	// resident sample, never beside another of its class, and neither
	// class gets the other's concurrent load. (Before, both workers were
	// in the same class at once.)
	name := func(n int) (string, bool) {
		if (n+n/perSource)%2 == 0 {
			return nobody[n/2], true
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

	// The username step at an unknown name's decoy region, entering there:
	// the region asks the hub whether the name is known (one back-channel
	// round trip) before answering it as its own resident; a resident's
	// name needs no such question. Unknown names decoyed to eu vs users
	// resident in eu, entering at eu.
	for w := range 2 {
		wg.Go(func() {
			for i := w; i < knownUsers; i += 2 {
				f.addUser("eu", fmt.Sprintf("local-%02d", i), bobPassword, bobClaims())
			}
		})
	}
	wg.Wait()
	var nobodyHere []string
	for i := 0; len(nobodyHere) < usernameSamples; i++ {
		n := fmt.Sprintf("nobody-here-%05d", i)
		if d, err := federation.DecoyRegion(f.hasher, n, regionIDs); err == nil && d == "eu" {
			nobodyHere = append(nobodyHere, n)
		}
	}
	name = func(n int) (string, bool) {
		if (n+n/perSource)%2 == 0 {
			return nobodyHere[n/2], true
		}
		return fmt.Sprintf("local-%02d", (n/2)%knownUsers), false
	}
	start = time.Now()
	eu, er := run(6, 2*usernameSamples, func(b *browser, n int, username string) (time.Duration, error) {
		p, d := b.timed(usernamePage(b), url.Values{"username": {username}})
		if p.status != http.StatusOK || !p.isPassword() || p.url.Hostname() != globalHost || slices.Contains(p.hosts, hubHost) {
			return d, fmt.Errorf("entry username sample %d (%s): %d at %s (%v), want eu's own password page", n, username, p.status, p.url, p.hosts)
		}
		return d, nil
	})
	entryTime := time.Since(start)

	for _, c := range []struct {
		step              string
		unknown, resident []time.Duration
		took              time.Duration
	}{
		{"username step (eu → hub → region's password page)", uu, ur, usernameTime},
		{"password step (wrong password → error page)", pu, pr, passwordTime},
		{"username step at the decoy region (eu, no hub; resident in eu)", eu, er, entryTime},
	} {
		mu, mr := timingstat.Median(c.unknown), timingstat.Median(c.resident)
		diff := math.Abs(float64(mu-mr)) / float64(min(mu, mr))
		auc := timingstat.Superiority(c.unknown, c.resident)
		t.Logf("%s: %d+%d samples in %s: unknown name median %s (p10 %s, p90 %s); resident median %s (p10 %s, p90 %s); "+
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

// unknownNameDecoyedTo returns a username no region has whose decoy region
// (federation.DecoyRegion under the test's k_hub) is region: the attacker
// cannot compute it, the test can, so every region's decoy case runs.
func (f *fed) unknownNameDecoyedTo(prefix, region string) string {
	f.t.Helper()
	for i := range 1000 {
		name := fmt.Sprintf("%s.%d", prefix, i)
		if d, err := federation.DecoyRegion(f.hasher, name, regionIDs); err == nil && d == region {
			return name
		}
	}
	f.t.Fatalf("no name with prefix %s has decoy region %s", prefix, region)
	return ""
}

// TestDecoyRegionConsistentAcrossEntries is the two-probe attack on the
// decoy: type a name at an application of region A; if the password page
// appears at region X, type it again at an application of X (and of every
// other region). A user resident in X gets X's password page directly at
// X and X's page through the hub elsewhere; an unknown name must do the
// same: its decoy region, the same from every entry, answers it itself
// when the login enters there, with no hop through the hub.
func TestDecoyRegionConsistentAcrossEntries(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub})
	names := map[string]string{} // name → the region whose page it must show
	for _, id := range regionIDs {
		resident := "resident.of." + id
		f.addUser(id, resident, bobPassword, bobClaims())
		f.waitResolves(resident, id)
		names[resident] = id
		names[f.unknownNameDecoyedTo("nobody.decoyed.to."+id, id)] = id
	}
	apps := map[string]*app{}
	for _, id := range regionIDs {
		apps[id] = f.newApp(id, f.globalURL())
	}
	probe := func(entry, name string) (*browser, page) {
		b := f.newBrowser()
		p := b.submit(b.visit(apps[entry].start().url), url.Values{"username": {name}})
		if p.status != http.StatusOK || !p.isPassword() {
			t.Fatalf("%s via %s: %d at %s, want a password page", name, entry, p.status, p.url)
		}
		return b, p
	}
	for _, name := range slices.Sorted(maps.Keys(names)) {
		want := names[name]
		for _, entry := range regionIDs {
			b, p := probe(entry, name)
			shown := p.header.Get("X-Meridian-Region")
			viaHub := slices.Contains(p.hosts, hubHost)
			if shown != want {
				t.Errorf("%s typed at %s: page of %s, want %s (the same region from every entry)", name, entry, shown, want)
			}
			if viaHub != (entry != want) {
				t.Errorf("%s typed at %s: through the hub = %v (%v), want %v: a resident of %s goes through the hub exactly when entering elsewhere",
					name, entry, viaHub, p.hosts, entry != want, want)
			}
			// The wrong password gets the same answer either way.
			ans := b.submit(p, url.Values{"password": {"not-the-password"}})
			if ans.status != http.StatusOK || !ans.has(federation.InvalidCredentials) || ans.header.Get("X-Meridian-Region") != want {
				t.Errorf("%s typed at %s, wrong password: %d at %s (%s)", name, entry, ans.status, ans.url, ans.header.Get("X-Meridian-Region"))
			}
		}
	}
}
