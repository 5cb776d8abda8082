package hub_test

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/meridian-id/meridian/federation"
	"github.com/meridian-id/meridian/lookup"
)

var (
	hiddenValueRE = regexp.MustCompile(`(<input type="hidden" name="[a-z]+" value=")[^"]*(">)`)
	regionLabelRE = regexp.MustCompile(`(Meridian |region <b>)(eu|us|ap)\b`)
	cookieValueRE = regexp.MustCompile(`^([^=]+)=[^;]*`)
)

// shape is a response with what legitimately differs between two users
// removed: the typed username, per-request hidden values (request id, CSRF
// token) and the region label (an unknown user sees a real region's label).
func shape(t *testing.T, p page, username string) (int, http.Header, string) {
	t.Helper()
	m := regionLabelRE.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("page has no region label: %s", p.body)
	}
	for _, k := range []string{"X-Meridian-Region", "X-Meridian-Entry"} {
		if got := p.header.Get(k); got != m[2] {
			t.Fatalf("%s %q, page label %q", k, got, m[2])
		}
	}
	body := strings.ReplaceAll(p.body, username, "USER")
	body = hiddenValueRE.ReplaceAllString(body, "${1}X${2}")
	body = regionLabelRE.ReplaceAllString(body, "${1}REGION")
	h := p.header.Clone()
	for _, k := range []string{"Date", "Content-Length", "X-Meridian-Region", "X-Meridian-Entry"} {
		h.Del(k)
	}
	for i, c := range h.Values("Set-Cookie") {
		h["Set-Cookie"][i] = cookieValueRE.ReplaceAllString(c, "${1}=VALUE")
	}
	return p.status, h, body
}

func sameShape(t *testing.T, what string, a page, ua string, b page, ub string, ignoreCookies bool) {
	t.Helper()
	sa, ha, ba := shape(t, a, ua)
	sb, hb, bb := shape(t, b, ub)
	if ignoreCookies {
		ha.Del("Set-Cookie")
		hb.Del("Set-Cookie")
	}
	if sa != sb {
		t.Errorf("%s: status %d vs %d", what, sa, sb)
	}
	for _, k := range slices.Sorted(maps.Keys(mergeKeys(ha, hb))) {
		if !slices.Equal(ha.Values(k), hb.Values(k)) {
			t.Errorf("%s: header %s: %q vs %q", what, k, ha.Values(k), hb.Values(k))
		}
	}
	if ba != bb {
		t.Errorf("%s: bodies differ:\n--- known user\n%s\n--- unknown user\n%s", what, ba, bb)
	}
}

func mergeKeys(hs ...http.Header) map[string]bool {
	m := map[string]bool{}
	for _, h := range hs {
		for k := range h {
			m[k] = true
		}
	}
	return m
}

// unknownUserIndistinguishable compares, in one topology, a resident user
// typing a wrong password with a username no region has.
func unknownUserIndistinguishable(t *testing.T, f *fed, topology string) {
	f.addUser("us", "bob.smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())

	known := f.newBrowser()
	pk := known.passwordPage(a.start().url, "bob.smith")
	rk := known.submit(pk, url.Values{"password": {"wrong password"}})

	// A name no region has whose decoy is not the entry region: it goes
	// through the hub like bob.smith (names whose decoy is the entry
	// region are answered there, like its residents: decoyAtEntry).
	nobody := f.unknownNameDecoyedTo("nobody.anywhere", "us")
	unknown := f.newBrowser()
	pu := unknown.passwordPage(a.start().url, nobody)
	ru := unknown.submit(pu, url.Values{"password": {"wrong password"}})

	if !strings.Contains(rk.body, federation.InvalidCredentials) || !strings.Contains(ru.body, federation.InvalidCredentials) {
		t.Fatalf("expected %q on both: known %d, unknown %d", federation.InvalidCredentials, rk.status, ru.status)
	}
	// Each host sets its browser cookie on its first page. Through the hub
	// both password pages are the first page of their host once the
	// resident region answers a federation login_hint with the password
	// page directly (a GET); while it still shows the username page first,
	// and in mesh (the unknown user stays on the entry region), the cookie
	// headers differ by construction and are not compared.
	strict := topology == federation.TopologyHub && pk.method == http.MethodGet
	if !strict {
		t.Log("password page: Set-Cookie not compared (resident region shows the username step first, or mesh)")
	}
	// The browser's path is the same too: through the hub to a region's
	// own password page (the resident region, or a decoy for the unknown
	// name), never a page on the hub's host.
	if topology == federation.TopologyHub {
		hk, hu := regionHostsAs(pk.hosts), regionHostsAs(pu.hosts)
		if !slices.Equal(hk, hu) || pk.url.Hostname() == hubHost || pu.url.Hostname() == hubHost {
			t.Errorf("host sequence: known %v (page at %s), unknown %v (page at %s)", pk.hosts, pk.url.Host, pu.hosts, pu.url.Host)
		}
	}
	sameShape(t, "password page", pk, "bob.smith", pu, nobody, !strict)
	sameShape(t, "wrong password answer", rk, "bob.smith", ru, nobody, false)
	decoyAtEntry(t, f, a)
}

// decoyAtEntry compares, at the entry region eu, a user resident there
// typing a wrong password with a name no region has whose decoy region is
// eu: both stay on eu (no hub), with the same pages and answer.
func decoyAtEntry(t *testing.T, f *fed, a *app) {
	f.addUser("eu", "eve.local", bobPassword, bobClaims())
	f.waitResolves("eve.local", "eu")
	nobody := f.unknownNameDecoyedTo("nobody.here", "eu")
	known := f.newBrowser()
	pk := known.passwordPage(a.start().url, "eve.local")
	rk := known.submit(pk, url.Values{"password": {"wrong password"}})
	unknown := f.newBrowser()
	pu := unknown.passwordPage(a.start().url, nobody)
	ru := unknown.submit(pu, url.Values{"password": {"wrong password"}})
	if !slices.Equal(pk.hosts, pu.hosts) || slices.Contains(pu.hosts, hubHost) {
		t.Errorf("decoy at entry: host sequence: resident %v, unknown %v", pk.hosts, pu.hosts)
	}
	if !strings.Contains(ru.body, federation.InvalidCredentials) {
		t.Errorf("decoy at entry: wrong password answer %d: %s", ru.status, ru.body)
	}
	sameShape(t, "decoy at entry: password page", pk, "eve.local", pu, nobody, false)
	sameShape(t, "decoy at entry: wrong password answer", rk, "eve.local", ru, nobody, false)
}

// TestUnknownUserIndistinguishable: through the hub, a username no region
// has gets the same password page and the same "Invalid username or
// password." answer (status, headers, body) as a resident user's wrong
// password.
func TestUnknownUserIndistinguishable(t *testing.T) {
	unknownUserIndistinguishable(t, newFed(t, options{topology: federation.TopologyHub}), federation.TopologyHub)
}

// TestUnknownUserIndistinguishableMesh is the same in mesh topology, where
// the entry region answers for unknown usernames itself.
func TestUnknownUserIndistinguishableMesh(t *testing.T) {
	unknownUserIndistinguishable(t, newFed(t, options{topology: federation.TopologyMesh, redis: true}), federation.TopologyMesh)
}

// TestPrivacyRedis imports users into the real Redis, runs a federated
// login through the hub with its state in Redis too, then dumps every key
// and value under the test's prefix: no username, claim or hub key
// appears in any form.
func TestPrivacyRedis(t *testing.T) {
	f := newFed(t, options{topology: federation.TopologyHub, redis: true})
	users := map[string]string{}
	for i := range 600 {
		users[fmt.Sprintf("Privacy.User-%03d@Example.ORG", i)] = regionIDs[i%3]
	}
	n, err := f.table.Import(f.ctx, maps.All(users), nil)
	if err != nil || n != len(users) {
		t.Fatalf("import: %d, %v", n, err)
	}
	// A real login leaves the hub's state (auth request, code, token with
	// the resident claims) in Redis.
	f.addUser("us", "Bob.Smith", bobPassword, bobClaims())
	f.waitResolves("bob.smith", "us")
	a := f.newApp("eu", f.globalURL())
	fl := a.start()
	loc, _ := f.newBrowser().login(fl.url, "bob.smith", bobPassword)
	a.finish(fl, loc)

	keys, err := f.redis.Keys(f.ctx, f.prefix+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	var dump strings.Builder
	kinds := map[string]int{}
	for _, k := range keys {
		dump.WriteString(k + "\x00")
		typ, err := f.redis.Type(f.ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		kinds[typ]++
		switch typ {
		case "hash":
			m, err := f.redis.HGetAll(f.ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			for field, v := range m {
				dump.WriteString(field + "\x00" + v + "\x00")
			}
		case "string":
			v, err := f.redis.Get(f.ctx, k).Result()
			if err != nil {
				t.Fatal(err)
			}
			dump.WriteString(v + "\x00")
		default:
			t.Fatalf("unexpected %s key %q", typ, k)
		}
	}
	if kinds["hash"] == 0 || kinds["string"] == 0 {
		t.Fatalf("dump covers %v; want the table (hashes) and the hub state (strings)", kinds)
	}
	all := strings.ToLower(dump.String())
	forms := []string{"bob.smith", "bob smith", "bob.smith@example.com", "privacy.user", "example.org"}
	for u := range users {
		norm, _ := lookup.Normalize(u)
		forms = append(forms, strings.ToLower(u), norm)
	}
	for _, s := range forms {
		if strings.Contains(all, s) {
			t.Fatalf("%q found in the Redis dump", s)
		}
	}
	if strings.Contains(dump.String(), string(f.hubKey)) {
		t.Fatal("k_hub is stored in Redis")
	}
}

// regionHostsAs replaces region host names by one placeholder: which
// region a page comes from is the label the shape comparison ignores.
func regionHostsAs(hosts []string) []string {
	out := make([]string, len(hosts))
	for i, h := range hosts {
		out[i] = h
		for _, id := range regionIDs {
			if strings.EqualFold(h, regionHost(id)) {
				out[i] = "REGION"
			}
		}
	}
	return out
}
