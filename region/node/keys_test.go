package node_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"

	"github.com/meridian-id/meridian/internal/fedtest"
	"github.com/meridian-id/meridian/internal/oidctest"
	"github.com/meridian-id/meridian/region"
	"github.com/meridian-id/meridian/region/node"
)

// cachingVerifier is the strictest verifier a rotation must survive: it
// fetches a JWKS, keeps it for ttl and never refetches on an unknown kid.
type cachingVerifier struct {
	name    string
	client  *http.Client
	url     string
	ttl     time.Duration
	set     *jose.JSONWebKeySet
	fetched time.Time
}

func (v *cachingVerifier) verify(t *testing.T, token string) error {
	if v.set == nil || time.Since(v.fetched) >= v.ttl {
		v.set, v.fetched = fetchJWKS(t, v.client, v.url), time.Now()
	}
	sig, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return err
	}
	kid := sig.Signatures[0].Header.KeyID
	keys := v.set.Key(kid)
	if len(keys) == 0 {
		return fmt.Errorf("%s: unknown kid %s", v.name, kid)
	}
	_, err = sig.Verify(keys[0])
	return err
}

// TestSigningKeyRotationNoUnknownKid rotates region eu's signing key, as
// `regional keys rotate` does, while two eu nodes (sharing eu's database)
// keep issuing JWTs and verifiers that cached the JWKS of eu, of us and of
// ap (the global key set every region publishes) verify every token. The
// new key must be in every cached key set before any node signs with it:
// zero unknown-kid failures, and both the old and the new kid seen.
func TestSigningKeyRotationNoUnknownKid(t *testing.T) {
	// The production defaults scaled down: node cache + peer cache = 0.8s
	// is the propagation bound; the verifiers refresh every second, so the
	// publish delay must cover 1.8s.
	timings := region.KeyOptions{CacheTTL: 300 * time.Millisecond, PeerCacheTTL: 500 * time.Millisecond, PublishDelay: 2 * time.Second}
	verifierTTL := time.Second
	f := fedtest.Start(t, fedtest.Options{KeyTimings: timings})

	// A second eu node on its own listener, sharing eu's database.
	eu := f.Cfg.Regions[0]
	second, err := node.New(context.Background(), f.Cfg, "eu", node.Options{KeyTimings: timings}, f.Telemetry("eu"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(eu.Addresses[0], "0"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = second.ServeListeners(ctx, ln, nil); second.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	codec, err := node.Codec(f.Cfg, f.Cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	app, err := region.CreateClient(t.Context(), f.Nodes["eu"].Store, codec, "eu", region.ClientSpec{
		GrantTypes: []string{region.GrantClientCredentials}, AccessTokenFormat: region.FormatJWT})
	if err != nil {
		t.Fatal(err)
	}
	primaryClient, primary := f.At("eu")
	issuers := []struct {
		c    *http.Client
		base string
	}{{primaryClient, primary}, {http.DefaultClient, "http://" + ln.Addr().String()}}
	mint := func(i int) string {
		is := issuers[i%len(issuers)]
		s, oe, m := oidctest.PostForm(t, is.c, is.base+"/oauth/token", url.Values{"grant_type": {"client_credentials"}}, app.ID, app.Secret)
		if s != http.StatusOK {
			t.Fatalf("token from %s: %d %+v", is.base, s, oe)
		}
		return m["access_token"].(string)
	}
	var verifiers []*cachingVerifier
	for _, id := range []string{"eu", "us", "ap"} {
		c, base := f.At(id)
		verifiers = append(verifiers, &cachingVerifier{name: "global JWKS at " + id, client: c, url: base + "/keys", ttl: verifierTTL})
	}
	// And what the hub and the federation RPs use: go-oidc's remote key
	// set, which refetches on an unknown kid (at most once per token).
	oc, obase := f.At("ap")
	remote := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), oc), obase+"/keys")
	kidOf := func(tok string) string {
		sig, _ := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256})
		return sig.Signatures[0].Header.KeyID
	}

	// Warm every verifier's cache with the old key set.
	oldKid := kidOf(mint(0))
	for _, v := range verifiers {
		if err := v.verify(t, mint(0)); err != nil {
			t.Fatal(err)
		}
	}

	// Rotate from "an operator's machine": the CLI's key manager.
	opts, err := node.KeyOptions(f.Cfg, &eu, f.Cfg.DataDir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	opts.PublishDelay, opts.CacheTTL, opts.PeerCacheTTL = timings.PublishDelay, timings.CacheTTL, timings.PeerCacheTTL
	opts.MinOverlap = max(region.DefaultLifetimes.IDToken, region.DefaultLifetimes.AccessToken)
	keys, err := region.NewKeys("eu", f.Nodes["eu"].Store, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.Rotate(t.Context(), time.Minute); err == nil {
		t.Fatal("rotation with an overlap shorter than the token lifetimes was accepted")
	}
	rotated := time.Now()
	newKid, _, err := keys.Rotate(t.Context(), opts.MinOverlap)
	if err != nil {
		t.Fatal(err)
	}

	// Mint and verify until the new key has signed a good number of tokens.
	seen := map[string]int{}
	published := map[string]time.Duration{} // when each region's global JWKS first listed the new kid
	var failures []error
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; seen[newKid] < 20; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("the new key never signed: seen %v", seen)
		}
		tok := mint(i)
		seen[kidOf(tok)]++
		if _, err := remote.VerifySignature(t.Context(), tok); err != nil {
			failures = append(failures, fmt.Errorf("go-oidc remote key set: %w", err))
		}
		for _, v := range verifiers {
			if err := v.verify(t, tok); err != nil {
				failures = append(failures, err)
			}
			if _, ok := published[v.name]; !ok && len(v.set.Key(newKid)) > 0 {
				published[v.name] = time.Since(rotated)
			}
		}
	}
	if len(failures) > 0 {
		t.Fatalf("%d verification failures during rotation, first: %v", len(failures), failures[0])
	}
	if seen[oldKid] == 0 || len(seen) != 2 {
		t.Fatalf("kids seen %v, want the old %s and the new %s", seen, oldKid, newKid)
	}
	t.Logf("tokens per kid %v; new key in cached JWKS after %v (publish delay %v)", seen, published, timings.PublishDelay)

	// The retired key stays published: a token it signed still verifies.
	for _, id := range []string{"eu", "us", "ap"} {
		c, base := f.At(id)
		set := fetchJWKS(t, c, base+"/keys")
		var kids []string
		for _, k := range set.Keys {
			kids = append(kids, k.KeyID)
		}
		if !slices.Contains(kids, oldKid) || !slices.Contains(kids, newKid) {
			t.Fatalf("JWKS at %s lists %v, want both %s and %s", id, kids, oldKid, newKid)
		}
	}
}
