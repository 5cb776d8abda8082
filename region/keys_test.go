package region_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/jackc/pgx/v5"

	"github.com/meridian-id/meridian/internal/testenv"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/store"
	"github.com/meridian-id/meridian/region/store/postgres"
	"github.com/meridian-id/meridian/region/store/sqlite"
)

// rawKeyRow is a signing_keys row as the database holds it.
type rawKeyRow struct {
	id, kek  string
	material []byte
}

// keyBackend is a real database with a way to read it around the store:
// what an attacker holding a copy of the database sees.
type keyBackend struct {
	name string
	open func(t *testing.T) (st store.Store, rows func() []rawKeyRow, dump func() []byte)
}

var keyBackends = []keyBackend{
	{"sqlite", func(t *testing.T) (store.Store, func() []rawKeyRow, func() []byte) {
		path := filepath.Join(t.TempDir(), "region.db")
		s, err := sqlite.Open(t.Context(), path)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		db, err := sql.Open("sqlite", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		rows := func() []rawKeyRow {
			rs, err := db.Query(`SELECT id, kek_id, private_der FROM signing_keys`)
			if err != nil {
				t.Fatal(err)
			}
			defer rs.Close()
			var out []rawKeyRow
			for rs.Next() {
				var r rawKeyRow
				if err := rs.Scan(&r.id, &r.kek, &r.material); err != nil {
					t.Fatal(err)
				}
				out = append(out, r)
			}
			return out
		}
		// The database file and its write-ahead log, byte for byte.
		dump := func() []byte {
			var all []byte
			for _, f := range []string{path, path + "-wal"} {
				b, err := os.ReadFile(f)
				if err != nil && !errors.Is(err, os.ErrNotExist) {
					t.Fatal(err)
				}
				all = append(all, b...)
			}
			return all
		}
		return s, rows, dump
	}},
	{"postgres", func(t *testing.T) (store.Store, func() []rawKeyRow, func() []byte) {
		dsn := testenv.PostgresSchema(t)
		s, err := postgres.Open(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		conn, err := pgx.Connect(t.Context(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		rows := func() []rawKeyRow {
			rs, err := conn.Query(t.Context(), `SELECT id, kek_id, private_der FROM signing_keys`)
			if err != nil {
				t.Fatal(err)
			}
			out, err := pgx.CollectRows(rs, func(r pgx.CollectableRow) (rawKeyRow, error) {
				var k rawKeyRow
				return k, r.Scan(&k.id, &k.kek, &k.material)
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
		// Every row of the table as PostgreSQL prints it (bytea as hex).
		dump := func() []byte {
			rs, err := conn.Query(t.Context(), `SELECT k::text FROM signing_keys k`)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rs, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			var all []byte
			for _, l := range lines {
				all = append(all, l...)
			}
			return all
		}
		return s, rows, dump
	}},
}

func testKEK(t *testing.T) region.KeyWrapper {
	t.Helper()
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	w, err := region.NewFileKEK(secret)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// startKeyNode serves region eu with the given key options on 127.0.0.1:0.
func startKeyNode(t *testing.T, st store.Store, opts region.KeyOptions) (*region.Provider, string, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := "http://" + ln.Addr().String()
	p, err := region.New(t.Context(), region.Config{
		Region: "eu", Issuer: "http://eu.id.localhost", GlobalIssuer: u, RegionHosts: []string{"eu.id.localhost"},
		CookieKey: bytes.Repeat([]byte{7}, 32), Keys: opts,
	}, st, newCodec(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		ln.Close()
		return nil, "", err
	}
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: p}}
	srv.Start()
	t.Cleanup(srv.Close)
	return p, u, nil
}

// jwtToken gets a JWT access token (signed with the region's signing key)
// by client_credentials and returns it with its kid.
func jwtToken(t *testing.T, st store.Store, base string) (string, string) {
	t.Helper()
	c, err := region.CreateClient(t.Context(), st, newCodec(t), "eu", region.ClientSpec{
		GrantTypes: []string{region.GrantClientCredentials}, AccessTokenFormat: region.FormatJWT})
	if err != nil {
		t.Fatal(err)
	}
	s, oe, m := postForm(t, base+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, c.ID, c.Secret)
	if s != 200 {
		t.Fatalf("client_credentials: %d %+v", s, oe)
	}
	tok := m["access_token"].(string)
	sig, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatalf("JWT access token: %v", err)
	}
	return tok, sig.Signatures[0].Header.KeyID
}

func publishedKeys(t *testing.T, base string) jose.JSONWebKeySet {
	t.Helper()
	resp, err := http.Get(base + "/keys")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set jose.JSONWebKeySet
	if err := json.NewDecoder(resp.Body).Decode(&set); err != nil {
		t.Fatal(err)
	}
	return set
}

// assertSealed fails when a stored key is plaintext: the material parses as
// a PKCS#8, SEC 1, PEM or JWK private key, or the private scalar D appears
// anywhere in the database dump (raw, hex, base64 or base64url as in a JWK).
func assertSealed(t *testing.T, kek region.KeyWrapper, rows []rawKeyRow, dump []byte) {
	t.Helper()
	if len(rows) == 0 {
		t.Fatal("no signing key rows")
	}
	for _, r := range rows {
		if r.kek != kek.ID() {
			t.Errorf("key %s sealed by %q, want %q", r.id, r.kek, kek.ID())
		}
		if _, err := x509.ParsePKCS8PrivateKey(r.material); err == nil {
			t.Errorf("key %s: stored bytes parse as a PKCS#8 private key", r.id)
		}
		if _, err := x509.ParseECPrivateKey(r.material); err == nil {
			t.Errorf("key %s: stored bytes parse as an EC private key", r.id)
		}
		if b, _ := pem.Decode(r.material); b != nil {
			t.Errorf("key %s: stored bytes are PEM (%s)", r.id, b.Type)
		}
		var jwk jose.JSONWebKey
		if err := json.Unmarshal(r.material, &jwk); err == nil {
			t.Errorf("key %s: stored bytes parse as a JWK", r.id)
		}
		// The test holds the KEK: open the key to learn what must not leak.
		der, err := kek.Unwrap(t.Context(), r.material, []byte("meridian/signing-key/v1\x00"+r.id))
		if err != nil {
			t.Fatalf("key %s does not open with its KEK: %v", r.id, err)
		}
		priv, err := x509.ParsePKCS8PrivateKey(der)
		if err != nil {
			t.Fatal(err)
		}
		d, err := priv.(*ecdsa.PrivateKey).Bytes() // the scalar D, 32 bytes big-endian
		if err != nil {
			t.Fatal(err)
		}
		for form, needle := range map[string][]byte{
			"raw": d, "hex": []byte(hex.EncodeToString(d)), "base64url": []byte(base64.RawURLEncoding.EncodeToString(d)),
			"base64": []byte(base64.StdEncoding.EncodeToString(d)[:40]), "pkcs8": der,
		} {
			if bytes.Contains(dump, needle) {
				t.Errorf("key %s: the private key (%s) is in the database", r.id, form)
			}
		}
	}
}

func TestSigningKeysSealedAtRest(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.name, func(t *testing.T) {
			st, rows, dump := b.open(t)
			kek := testKEK(t)
			_, base, err := startKeyNode(t, st, region.KeyOptions{Wrapper: kek})
			if err != nil {
				t.Fatal(err)
			}
			tok, kid := jwtToken(t, st, base)
			// Rotate too: a rotated key is sealed the same way.
			p2, _, err := startKeyNode(t, st, region.KeyOptions{Wrapper: kek})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := p2.Keys().Rotate(t.Context(), 24*time.Hour); err != nil {
				t.Fatal(err)
			}
			before := rows()
			if len(before) != 2 {
				t.Fatalf("%d key rows, want 2", len(before))
			}
			assertSealed(t, kek, before, dump())

			// A copy of the database with another KEK, or none, cannot sign:
			// the node refuses to start and generates no key of its own.
			for name, opts := range map[string]region.KeyOptions{
				"wrong KEK": {Wrapper: testKEK(t)},
				"no KEK":    {},
			} {
				if _, _, err := startKeyNode(t, st, opts); !errors.Is(err, region.ErrWrongKEK) {
					t.Errorf("%s: start = %v, want ErrWrongKEK", name, err)
				}
				keys, err := region.NewKeys("eu", st, opts)
				if err != nil {
					t.Fatal(err)
				}
				if _, _, err := keys.Rotate(t.Context(), 24*time.Hour); !errors.Is(err, region.ErrWrongKEK) {
					t.Errorf("%s: rotate = %v, want ErrWrongKEK", name, err)
				}
				if _, err := keys.Migrate(t.Context()); opts.Wrapper != nil && !errors.Is(err, region.ErrWrongKEK) {
					t.Errorf("%s: migrate = %v, want ErrWrongKEK", name, err)
				}
			}
			if after := rows(); len(after) != len(before) {
				t.Fatalf("a node with the wrong KEK changed the key set: %d rows, want %d", len(after), len(before))
			}
			// A sealed key copied onto another key's row does not open (the
			// kid is the associated data).
			if _, err := kek.Unwrap(t.Context(), before[0].material, []byte("meridian/signing-key/v1\x00"+before[1].id)); err == nil {
				t.Error("a sealed key opened under another key id")
			}
			// The token signed before still verifies with the published key.
			set := publishedKeys(t, base)
			sig, _ := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
			if ks := set.Key(kid); len(ks) != 1 {
				t.Fatalf("kid %s not published", kid)
			} else if _, err := sig.Verify(ks[0]); err != nil {
				t.Fatalf("token does not verify: %v", err)
			}
		})
	}
}

func TestPlaintextSigningKeyMigratesInPlace(t *testing.T) {
	for _, b := range keyBackends {
		t.Run(b.name, func(t *testing.T) {
			st, rows, _ := b.open(t)
			// A key as the previous release stored it: PKCS#8 in the clear.
			legacy, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			der, _ := x509.MarshalPKCS8PrivateKey(legacy)
			created := time.Now().UTC().Add(-time.Hour).Truncate(time.Microsecond)
			if err := st.AddSigningKey(t.Context(), store.SigningKey{ID: "eu-legacy", Algorithm: "ES256", PrivateDER: der,
				CreatedAt: created, Active: true}); err != nil {
				t.Fatal(err)
			}
			kek := testKEK(t)
			_, base, err := startKeyNode(t, st, region.KeyOptions{Wrapper: kek})
			if err != nil {
				t.Fatal(err)
			}
			got := rows()
			if len(got) != 1 || got[0].id != "eu-legacy" {
				t.Fatalf("rows after migration: %+v, want the legacy key, resealed", got)
			}
			if bytes.Equal(got[0].material, der) || got[0].kek != kek.ID() {
				t.Fatal("legacy key still in the clear after start")
			}
			// Same key: the node signs with it and publishes its public half.
			_, kid := jwtToken(t, st, base)
			if kid != "eu-legacy" {
				t.Fatalf("signed with %q, want the migrated key", kid)
			}
			set := publishedKeys(t, base)
			if ks := set.Key("eu-legacy"); len(ks) != 1 || !ks[0].Key.(*ecdsa.PublicKey).Equal(&legacy.PublicKey) {
				t.Fatalf("published key is not the legacy key: %+v", set)
			}
			// A second start (another node, same KEK) has nothing to migrate.
			keys, _ := region.NewKeys("eu", st, region.KeyOptions{Wrapper: kek})
			if n, err := keys.Migrate(t.Context()); err != nil || n != 0 {
				t.Fatalf("second migration: %d, %v", n, err)
			}
			// A KEK rotation reseals in place too.
			next := testKEK(t)
			keys, _ = region.NewKeys("eu", st, region.KeyOptions{Wrapper: next, Previous: []region.KeyWrapper{kek}})
			if n, err := keys.Migrate(t.Context()); err != nil || n != 1 {
				t.Fatalf("KEK rotation: %d, %v", n, err)
			}
			if got := rows(); got[0].kek != next.ID() {
				t.Fatalf("after KEK rotation sealed by %s, want %s", got[0].kek, next.ID())
			}
			// Mid-rollout, a node still on the old KEK with the new one as
			// previous (procedure step 1) reads the resealed key.
			if _, _, err := startKeyNode(t, st, region.KeyOptions{Wrapper: kek, Previous: []region.KeyWrapper{next}}); err != nil {
				t.Fatalf("step-1 node after the reseal: %v", err)
			}
			keys, _ = region.NewKeys("eu", st, region.KeyOptions{Wrapper: next, Previous: []region.KeyWrapper{kek}})
			if _, err := keys.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			if _, _, err := startKeyNode(t, st, region.KeyOptions{Wrapper: kek}); !errors.Is(err, region.ErrWrongKEK) {
				t.Fatalf("start with the retired KEK: %v, want ErrWrongKEK", err)
			}
		})
	}
}

func TestFileKEK(t *testing.T) {
	kek := testKEK(t)
	aad := []byte("meridian/signing-key/v1\x00eu-1")
	sealed, err := kek.Wrap(t.Context(), []byte("secret key bytes"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := kek.Unwrap(t.Context(), sealed, aad); err != nil || string(pt) != "secret key bytes" {
		t.Fatalf("round trip: %q %v", pt, err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	for name, c := range map[string]struct {
		kek  region.KeyWrapper
		blob []byte
		aad  []byte
	}{
		"other KEK":  {testKEK(t), sealed, aad},
		"other kid":  {kek, sealed, []byte("meridian/signing-key/v1\x00us-1")},
		"tampered":   {kek, tampered, aad},
		"truncated":  {kek, sealed[:10], aad},
		"empty":      {kek, nil, aad},
		"plaintext":  {kek, []byte("0\x82\x01..."), aad},
		"newversion": {kek, append([]byte{2}, sealed[1:]...), aad},
	} {
		if _, err := c.kek.Unwrap(t.Context(), c.blob, c.aad); !errors.Is(err, region.ErrWrongKEK) {
			t.Errorf("%s: %v, want ErrWrongKEK", name, err)
		}
	}
	if _, err := region.NewFileKEK(make([]byte, 31)); err == nil {
		t.Error("a 31-byte KEK was accepted")
	}
	a, _ := region.NewFileKEK(bytes.Repeat([]byte{1}, 32))
	b, _ := region.NewFileKEK(bytes.Repeat([]byte{1}, 32))
	if a.ID() != b.ID() || a.ID() == kek.ID() {
		t.Errorf("KEK ids: same secret %s/%s, other %s", a.ID(), b.ID(), kek.ID())
	}
}
