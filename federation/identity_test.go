package federation_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"testing"
	"time"

	"github.com/meridian-id/meridian/federation"
)

// TestParseKeys: a development secret derives one key deterministically;
// PEM keys and the config's public-key form round-trip; short or foreign
// input is refused.
func TestParseKeys(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	a, err := federation.ParsePrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := federation.ParsePrivateKey(seed)
	if !a.Equal(b) {
		t.Fatal("derivation is not deterministic")
	}
	if c, _ := federation.ParsePrivateKey(bytes.Repeat([]byte{8}, 32)); a.Equal(c) {
		t.Fatal("two secrets, one key")
	}
	der, _ := x509.MarshalPKCS8PrivateKey(a)
	p, err := federation.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil || !p.Equal(a) {
		t.Fatalf("PKCS #8 PEM: %v", err)
	}
	pub, err := federation.ParsePublicKey(federation.MarshalPublicKey(&a.PublicKey))
	if err != nil || !pub.Equal(&a.PublicKey) {
		t.Fatalf("public key round trip: %v", err)
	}
	for name, in := range map[string][]byte{"short": []byte("short"), "cert PEM": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})} {
		if _, err := federation.ParsePrivateKey(in); !errors.Is(err, federation.ErrBadKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := federation.ParsePublicKey("not a key"); !errors.Is(err, federation.ErrBadKey) {
		t.Errorf("bad public key: %v", err)
	}
}

// TestVerifyAssertion: only an assertion by the client's own key, for this
// audience, naming the client as iss and sub, fresh, is accepted.
func TestVerifyAssertion(t *testing.T) {
	key, other := testKey(t), testKey(t)
	now := time.Now()
	const aud = "https://hub.example/internal/lookup/changes"
	sign := func(k any, id string, audience string, at time.Time) string {
		kk := key
		if k != nil {
			kk = other
		}
		a, err := federation.SignAssertion(kk, id, []string{audience}, at)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	if err := federation.VerifyAssertion(sign(nil, "region-eu", aud, now), &key.PublicKey, "region-eu", aud, now); err != nil {
		t.Fatal(err)
	}
	for name, a := range map[string]string{
		"another key":      sign(other, "region-eu", aud, now),
		"another client":   sign(nil, "region-us", aud, now),
		"another audience": sign(nil, "region-eu", "https://hub.example/oauth/token", now),
		"expired":          sign(nil, "region-eu", aud, now.Add(-2*time.Minute)),
		"from the future":  sign(nil, "region-eu", aud, now.Add(2*time.Minute)),
		"garbage":          "a.b.c",
	} {
		if err := federation.VerifyAssertion(a, &key.PublicKey, "region-eu", aud, now); !errors.Is(err, federation.ErrBadAssertion) {
			t.Errorf("%s: %v", name, err)
		}
	}
}
