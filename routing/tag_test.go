package routing

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

func testCodec(t testing.TB) *Codec {
	t.Helper()
	c, err := NewCodec([]string{"eu", "us", "ap"}, bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestRoundTrip(t *testing.T) {
	c := testCodec(t)
	for _, k := range []Kind{KindClient, KindCode, KindRefresh, KindAccess, KindSession, KindAuthRequest, KindTokenID} {
		for _, r := range []string{"eu", "us", "ap"} {
			s, err := c.New(k, r)
			if err != nil {
				t.Fatalf("New(%s,%s): %v", k, r, err)
			}
			if strings.ContainsAny(s, ":/?#&=+ %") {
				t.Errorf("%q is not URL/form safe", s)
			}
			tag, err := c.Verify(s)
			if err != nil || tag.Kind != k || tag.Region != r {
				t.Errorf("Verify(%q) = %+v, %v", s, tag, err)
			}
			if p, err := Parse(s); err != nil || p != tag {
				t.Errorf("Parse(%q) = %+v, %v", s, p, err)
			}
		}
	}
}

func TestSecretsCarry256Bits(t *testing.T) {
	c := testCodec(t)
	s, _ := c.New(KindAccess, "eu")
	payload := s[strings.LastIndexByte(s, '.')+1:]
	raw, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) != 32+MACSize {
		t.Fatalf("payload is %d bytes, want %d", len(raw), 32+MACSize)
	}
	s2, _ := c.New(KindAccess, "eu")
	if s == s2 {
		t.Fatal("two artifacts are equal")
	}
}

func TestVerifyRejects(t *testing.T) {
	c := testCodec(t)
	good, _ := c.New(KindAccess, "eu")
	other, _ := NewCodec([]string{"eu", "us", "ap", "zz"}, bytes.Repeat([]byte{2}, 32))
	foreignKey, _ := other.New(KindAccess, "eu")
	unknownRegion, _ := other.New(KindAccess, "zz")
	sameKeyUnknown, _ := NewCodec([]string{"eu", "zz"}, bytes.Repeat([]byte{1}, 32))
	zz, _ := sameKeyUnknown.New(KindAccess, "zz")

	flipRegion := strings.Replace(good, ".eu.", ".us.", 1)
	flipKind := strings.Replace(good, ".at.", ".rt.", 1)
	payloadAt := strings.LastIndexByte(good, '.') + 1
	flipBit := []byte(good)
	if flipBit[payloadAt+3] == 'A' {
		flipBit[payloadAt+3] = 'B'
	} else {
		flipBit[payloadAt+3] = 'A'
	}
	// The last character of a 48-byte payload has no padding bits, so
	// change the last MAC character instead to test the MAC.
	flipMAC := []byte(good)
	if flipMAC[len(flipMAC)-1] == 'A' {
		flipMAC[len(flipMAC)-1] = 'B'
	} else {
		flipMAC[len(flipMAC)-1] = 'A'
	}

	tests := []struct {
		name string
		in   string
		want error
	}{
		{"empty", "", ErrMalformed},
		{"garbage", "not-a-token", ErrMalformed},
		{"url instead of region", strings.Replace(good, ".eu.", ".https://evil.example/.", 1), ErrMalformed},
		{"uppercase region", strings.Replace(good, ".eu.", ".EU.", 1), ErrMalformed},
		{"non-ascii region", strings.Replace(good, ".eu.", ".é.", 1), ErrMalformed},
		{"oversized", good + strings.Repeat("A", 300), ErrMalformed},
		{"truncated", good[:len(good)-1], ErrMalformed},
		{"future version", "m9" + good[2:], ErrVersion},
		{"unknown kind", strings.Replace(good, ".at.", ".zz.", 1), ErrKind},
		{"flipped region", flipRegion, ErrBadMAC},
		{"flipped kind", flipKind, ErrBadMAC},
		{"flipped random bit", string(flipBit), ErrBadMAC},
		{"flipped mac", string(flipMAC), ErrBadMAC},
		{"other federation key", foreignKey, ErrBadMAC},
		{"unconfigured region, foreign key", unknownRegion, ErrBadMAC},
		{"unconfigured region, valid mac", zz, ErrUnknownRegion},
		{"non-base64 payload", good[:payloadAt] + strings.Repeat("*", len(good)-payloadAt), ErrMalformed},
		{"jwt", "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := c.Verify(tt.in); !errors.Is(err, tt.want) {
				t.Fatalf("Verify(%q) error = %v, want %v", tt.in, err, tt.want)
			}
		})
	}
}

func TestVerifyKind(t *testing.T) {
	c := testCodec(t)
	s, _ := c.New(KindRefresh, "us")
	if _, err := c.VerifyKind(s, KindAccess); !errors.Is(err, ErrKind) {
		t.Fatalf("refresh token accepted as access token: %v", err)
	}
	if _, err := c.VerifyKind(s, KindRefresh); err != nil {
		t.Fatal(err)
	}
}

func TestKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	before, _ := NewCodec([]string{"eu"}, oldKey)
	during, _ := NewCodec([]string{"eu"}, newKey, oldKey)
	after, _ := NewCodec([]string{"eu"}, newKey)
	old, _ := before.New(KindAccess, "eu")
	if _, err := during.Verify(old); err != nil {
		t.Fatalf("old artifact rejected during rotation: %v", err)
	}
	if _, err := after.Verify(old); !errors.Is(err, ErrBadMAC) {
		t.Fatalf("old artifact accepted after rotation: %v", err)
	}
	fresh, _ := during.New(KindAccess, "eu")
	if _, err := after.Verify(fresh); err != nil {
		t.Fatalf("artifact minted during rotation rejected after: %v", err)
	}
}

func TestNewCodecValidates(t *testing.T) {
	if _, err := NewCodec([]string{"eu"}, []byte("short")); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("short key: %v", err)
	}
	if _, err := NewCodec([]string{"EU"}, bytes.Repeat([]byte{1}, 32)); !errors.Is(err, ErrInvalidRegion) {
		t.Errorf("bad region: %v", err)
	}
	c := testCodec(t)
	if _, err := c.New(KindAccess, "mars"); !errors.Is(err, ErrUnknownRegion) {
		t.Errorf("mint for unknown region: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	c := testCodec(f)
	for _, k := range []Kind{KindClient, KindCode, KindRefresh, KindAccess} {
		s, _ := c.New(k, "eu")
		f.Add(s)
	}
	f.Add("m1.at.eu.")
	f.Add("m1..")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tag, err := c.Verify(s)
		if err != nil {
			return
		}
		// Anything accepted must be a configured region and re-parse equally.
		if !c.HasRegion(tag.Region) {
			t.Fatalf("accepted unknown region %q", tag.Region)
		}
		if p, err := Parse(s); err != nil || p != tag {
			t.Fatalf("Parse disagrees with Verify on %q", s)
		}
	})
}

func BenchmarkEncodeVerify(b *testing.B) {
	c := testCodec(b)
	b.ReportAllocs()
	for b.Loop() {
		s, err := c.New(KindAccess, "eu")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Verify(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	c := testCodec(b)
	s, _ := c.New(KindAccess, "eu")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNew(b *testing.B) {
	c := testCodec(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.New(KindAccess, "eu"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDerive(t *testing.T) {
	c := testCodec(t)
	a, err := c.Derive(KindClient, "us", "hub")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := c.Derive(KindClient, "us", "hub")
	o, _ := c.Derive(KindClient, "us", "peer|eu")
	if a != b || a == o {
		t.Fatalf("derive not deterministic/distinct: %s %s %s", a, b, o)
	}
	if tag, err := c.VerifyKind(a, KindClient); err != nil || tag.Region != "us" {
		t.Fatalf("derived id does not verify: %v", err)
	}
	x1, x2, y := c.DeriveSecret("x"), c.DeriveSecret("x"), c.DeriveSecret("y")
	if x1 != x2 || x1 == y || len(x1) != 43 {
		t.Fatal("DeriveSecret")
	}
}
