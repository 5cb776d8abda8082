package region_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// twoNodes starts two nodes of region eu on one database of backend
// ("sqlite": one file; "postgres": one schema), their provider config
// adjusted by edit when it is not nil.
func twoNodes(t *testing.T, backend string, edit ...func(*region.Config)) [2]*testProvider {
	t.Helper()
	ctx := context.Background()
	open := func() store.Store {
		t.Fatalf("unknown backend %q", backend)
		return nil
	}
	switch backend {
	case "sqlite":
		path := filepath.Join(t.TempDir(), "region.db")
		open = func() store.Store {
			s, err := sqlite.Open(ctx, path)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	case "postgres":
		u := testenv.PostgresSchema(t)
		open = func() store.Store {
			s, err := postgres.Open(ctx, u)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	var nodes [2]*testProvider
	for i := range nodes {
		s := open()
		t.Cleanup(func() { s.Close() })
		if err := s.(interface{ Migrate(context.Context) error }).Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		var e func(*region.Config)
		if len(edit) > 0 {
			e = edit[0]
		}
		nodes[i] = startProviderWith(t, "eu", s, e)
		nodes[i].t = t
	}
	return nodes
}

// gotCode reports whether resp (redirects followed) ends at the client
// with an authorization code.
func gotCode(b *oidctest.Browser, resp *http.Response) bool {
	resp = b.Follow(resp, oidctest.StopAt(redirectURI))
	defer resp.Body.Close()
	loc, err := resp.Location()
	return err == nil && strings.HasPrefix(loc.String(), redirectURI) && loc.Query().Get("code") != ""
}

// TestTOTPCodeSingleUse: a TOTP code signs in once; the same code posted
// again — at the same node or at another node of the region — is refused
// (issue 11 item 9, RFC 6238 §5.2).
func TestTOTPCodeSingleUse(t *testing.T) {
	nodes := twoNodes(t, "sqlite")
	secret := addTOTPUser(t, nodes[0], "uma", "uma-password-1")
	c := nodes[0].addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	code := codeAt(t, secret, time.Now())

	b := newBrowser(t)
	if !gotCode(b, b.Submit(totpPage(t, b, nodes[0], c.ID, "uma", "uma-password-1"), url.Values{"code": {code}})) {
		t.Fatal("the first use of a valid code was refused")
	}
	for i, n := range nodes {
		b := newBrowser(t)
		p := totpPage(t, b, n, c.ID, "uma", "uma-password-1")
		resp := b.Submit(p, url.Values{"code": {code}})
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("replay at node %d: status %d", i, resp.StatusCode)
		}
		if pg := oidctest.ReadPage(resp); !strings.Contains(pg.Body, "already used") {
			t.Fatalf("replay at node %d was not refused: %s", i, pg.Body)
		}
	}
}

// TestTOTPCodeRace: 20 browsers at the TOTP step of one user post the same
// code at once, half at each of two nodes sharing one database: exactly
// one signs in.
func TestTOTPCodeRace(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) { testTOTPCodeRace(t, backend) })
	}
}

func testTOTPCodeRace(t *testing.T, backend string) {
	nodes := twoNodes(t, backend)
	secret := addTOTPUser(t, nodes[0], "rae", "rae-password-1")
	// 20 password steps first: a cheap hash keeps the setup fast.
	u, err := nodes[0].Store.GetUserByUsername(context.Background(), "rae")
	if err != nil {
		t.Fatal(err)
	}
	u.PasswordHash = cheapHash("rae-password-1")
	if err := nodes[0].Store.UpdateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	c := nodes[0].addClient(region.ClientSpec{RedirectURIs: []string{redirectURI}, FirstParty: true})
	const racers = 20
	browsers := make([]*oidctest.Browser, racers)
	pages := make([]oidctest.Page, racers)
	for i := range racers {
		browsers[i] = newBrowser(t)
		pages[i] = totpPage(t, browsers[i], nodes[i%2], c.ID, "rae", "rae-password-1")
	}
	code := codeAt(t, secret, time.Now())
	won := make([]bool, racers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			form := withForm(pages[i].Hidden, "code", code)
			resp, err := browsers[i].C.PostForm(nodes[i%2].URL+"/login/totp", form)
			if err != nil {
				return
			}
			if resp.StatusCode == http.StatusSeeOther {
				loc, _ := resp.Location()
				won[i] = loc != nil && strings.Contains(loc.Path, "/authorize/callback")
			}
			resp.Body.Close()
		}()
	}
	close(start)
	wg.Wait()
	n := 0
	for _, w := range won {
		if w {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d of %d concurrent posts of one TOTP code signed in, want exactly 1", n, racers)
	}
}
