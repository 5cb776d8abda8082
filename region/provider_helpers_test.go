package region_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/sqlite"
	"github.com/meridian-id/meridian/routing"
)

// testProvider is a regional testProvider serving on a real loopback listener.
type testProvider struct {
	t      *testing.T
	URL    string
	P      *region.Provider
	Store  store.Store
	Codec  *routing.Codec
	Region string
}

func testKey() []byte { return bytes.Repeat([]byte{42}, 32) }

// mint returns a well-formed artifact of kind tagged for region that no
// store holds: what a caller probing ids or tokens would present.
func (p *testProvider) mint(kind routing.Kind, region string) string {
	p.t.Helper()
	s, err := p.Codec.New(kind, region)
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

// newCodec is the federation codec every test region shares.
func newCodec(t testing.TB) *routing.Codec {
	c, err := routing.NewCodec([]string{"eu", "us", "ap"}, testKey())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func openSQLite(t testing.TB) store.Store {
	t.Helper()
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "region.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// startProvider serves region id on 127.0.0.1:0 with the given store.
func startProvider(t *testing.T, id string, st store.Store) *testProvider {
	t.Helper()
	n := startProviderTB(t, id, st)
	n.t = t
	return n
}

// testRegistrationToken is the initial access token test nodes open
// dynamic registration with.
const testRegistrationToken = "test-initial-access-token-0123456789abcdef"

func startProviderTB(t testing.TB, id string, st store.Store) *testProvider {
	t.Helper()
	return startProviderWith(t, id, st, nil)
}

// startProviderWith is startNodeTB with the provider config adjusted by edit.
func startProviderWith(t testing.TB, id string, st store.Store, edit func(*region.Config)) *testProvider {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	codec := newCodec(t)
	cfg := region.Config{
		Region: id, Issuer: "http://" + id + ".id.localhost", GlobalIssuer: u, RegionHosts: []string{id + ".id.localhost"},
		CookieKey: bytes.Repeat([]byte{7}, 32), RegistrationToken: testRegistrationToken,
		RegistrationsPerMinute: 1000,
	}
	if edit != nil {
		edit(&cfg)
	}
	p, err := region.New(context.Background(), cfg, st, codec, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: p}}
	srv.Start()
	t.Cleanup(srv.Close)
	return &testProvider{URL: u, P: p, Store: st, Codec: codec, Region: id}
}

func (n *testProvider) addUser(username, password string, claims map[string]string) store.User {
	n.t.Helper()
	u, err := region.CreateUser(context.Background(), n.Store, region.UserSpec{Username: username, Password: password, Claims: claims})
	if err != nil {
		n.t.Fatal(err)
	}
	return u
}

func (n *testProvider) addClient(spec region.ClientSpec) region.RegisteredClient {
	n.t.Helper()
	c, err := region.CreateClient(context.Background(), n.Store, n.Codec, n.Region, spec)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

func newBrowser(t *testing.T) *oidctest.Browser { return oidctest.NewBrowser(t, nil) }

func postForm(t *testing.T, u string, form url.Values, user, pass string) (int, oidctest.OAuthError, map[string]any) {
	return oidctest.PostForm(t, nil, u, form, user, pass)
}

func postFormTB(t testing.TB, u string, form url.Values, user, pass string) (int, oidctest.OAuthError, map[string]any) {
	return oidctest.PostForm(t, nil, u, form, user, pass)
}

type oauthError = oidctest.OAuthError

func openPostgres(t testing.TB) store.Store {
	st, _ := fedtest.OpenStore(t, fedtest.Postgres)
	return st
}
