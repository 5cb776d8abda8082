package lookup

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"golang.org/x/text/secure/precis"

	"github.com/meridian-id/meridian/routing"
)

func TestNormalizeCollisions(t *testing.T) {
	tests := []struct {
		name     string
		want     string
		variants []string
	}{
		{"ASCII case", "alice", []string{"alice", "Alice", "ALICE", "aLiCe"}},
		{"fullwidth", "alice", []string{"ＡＬＩＣＥ", "ａｌｉｃｅ", "Ａlice"}},
		{"diaeresis case", "\u00fcn\u00efcode", []string{"Ünïcode", "ÜNÏCODE", "ünïcode", "ÜnÏcOdE"}},
		{"decomposed NFC", "\u00fcn\u00efcode", []string{"U\u0308ni\u0308code", "u\u0308n\u00efcode"}},
		{"email", "juliet@example.com", []string{"juliet@example.com", "Juliet@Example.COM", "ＪＵＬＩＥＴ@example.com"}},
		{"angstrom sign", "\u00e5ngstr\u00f6m", []string{"\u212Bngstr\u00f6m", "\u00c5ngstr\u00f6m", "A\u030Angstro\u0308m"}},
		{"halfwidth katakana", "\u30ab\u30ca", []string{"\uff76\uff85", "\u30ab\u30ca"}},
		{"greek sigma", "\u03c3\u03b1\u03c3", []string{"\u03a3\u0391\u03a3", "\u03c3\u03b1\u03c3"}},
		{"cyrillic", "\u0430\u043d\u043d\u0430", []string{"\u0410\u043d\u043d\u0430", "\u0410\u041d\u041d\u0410"}},
		{"symbols kept", "a.b-c_d+e!~", []string{"A.B-C_D+E!~"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.variants {
				got, err := Normalize(v)
				if err != nil {
					t.Fatalf("Normalize(%q): %v", v, err)
				}
				if got != tc.want {
					t.Errorf("Normalize(%q) = %q (%+q), want %q (%+q)", v, got, got, tc.want, tc.want)
				}
			}
		})
	}
}

func TestNormalizeNonCollisions(t *testing.T) {
	pairs := [][2]string{
		{"straße", "strasse"},   // lower-casing is not case folding
		{"STRASSE", "straße"},   // "SS" lowers to "ss", not "ß"
		{"alice", "\u0430lice"}, // Cyrillic а is a confusable, not mapped
		{"\u03c3", "\u03c2"},    // final sigma stays distinct
		{"ünïcode", "unicode"},  // diacritics are not stripped
		{"user1", "user2"},
		{"alice", "alice."},
		{"\u00e5", "a"},
		{"i", "\u0131"}, // dotless i
		{"juliet@example.com", "juliet@example.org"},
	}
	for _, p := range pairs {
		a, errA := Normalize(p[0])
		b, errB := Normalize(p[1])
		if errA != nil || errB != nil {
			t.Fatalf("Normalize(%q), Normalize(%q): %v, %v", p[0], p[1], errA, errB)
		}
		if a == b {
			t.Errorf("%q and %q both normalize to %q", p[0], p[1], a)
		}
	}
}

func TestNormalizeInvalid(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"empty", ""},
		{"space", "alice smith"},
		{"only space", " "},
		{"tab", "alice\t"},
		{"NUL", "a\x00b"},
		{"invalid UTF-8", "ali\xffce"},
		{"ligature fi (compat, not NFKC-mapped)", "\ufb01ne"},
		{"superscript two", "user\u00b2"},
		{"roman numeral four", "henry\u2163"},
		{"chess king symbol", "\u265a"},
		{"bidi rule", "\u05e9c"},
		{"titlecase digraph", "\u01c5"},
		{"too long", strings.Repeat("a", MaxUsernameBytes+1)},
		{"zero width joiner alone", "a\u200db"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Normalize(tc.in)
			if !errors.Is(err, ErrInvalidUsername) {
				t.Fatalf("Normalize(%+q) = %q, %v; want ErrInvalidUsername", tc.in, got, err)
			}
			var ue *UsernameError
			if !errors.As(err, &ue) {
				t.Fatalf("error %T is not a *UsernameError", err)
			}
			if len(tc.in) > 2 && strings.Contains(err.Error(), tc.in) {
				t.Fatalf("error %q leaks the username", err)
			}
		})
	}
	if _, err := Normalize(strings.Repeat("a", MaxUsernameBytes)); err != nil {
		t.Fatalf("username of MaxUsernameBytes rejected: %v", err)
	}
}

// TestNormalizeIdempotent checks Normalize(Normalize(x)) == Normalize(x) on
// random strings over an alphabet of tricky runes.
func TestNormalizeIdempotent(t *testing.T) {
	alphabet := []rune("aAzZ09.@-_ÜüÏïßσΣςÅå\u212B\u0308ＡａｶАа€")
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var b strings.Builder
		for range 1 + r.IntN(12) {
			b.WriteRune(alphabet[r.IntN(len(alphabet))])
		}
		n, err := Normalize(b.String())
		if err != nil {
			continue
		}
		n2, err := Normalize(n)
		if err != nil || n2 != n {
			t.Fatalf("Normalize not idempotent on %+q: %+q then %+q, %v", b.String(), n, n2, err)
		}
	}
}

func secret(b byte, n int) []byte {
	k := make([]byte, n)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func TestNewHasher(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cur, prev []byte
		ok        bool
	}{
		{"current only", secret(1, 32), nil, true},
		{"rotation", secret(1, 32), secret(2, 48), true},
		{"long keys", secret(1, 200), secret(2, 65), true},
		{"short current", secret(1, 31), nil, false},
		{"nil current", nil, nil, false},
		{"short previous", secret(1, 32), secret(2, 16), false},
		{"same keys", secret(1, 32), secret(1, 32), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := NewHasher(tc.cur, tc.prev)
			if (err == nil) != tc.ok {
				t.Fatalf("NewHasher err = %v, want ok=%v", err, tc.ok)
			}
			if err == nil && h.Rotating() != (len(tc.prev) > 0) {
				t.Fatalf("Rotating() = %v", h.Rotating())
			}
		})
	}
}

func refKey(secret []byte, normalized string) Key {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(normalized))
	var k Key
	copy(k[:], m.Sum(nil))
	return k
}

// TestKeysMatchHMAC checks the hand-rolled HMAC against crypto/hmac for key
// lengths below, at and above the SHA-256 block size and for messages that
// take the stack and the heap path.
func TestKeysMatchHMAC(t *testing.T) {
	names := []string{"alice", "Ünïcode", strings.Repeat("x", stackMsg), strings.Repeat("y", stackMsg+1), strings.Repeat("z", MaxUsernameBytes)}
	for _, n := range []int{32, 63, 64, 65, 128} {
		cur, prev := secret(3, n), secret(9, n+7)
		h, err := NewHasher(cur, prev)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			norm, err := Normalize(name)
			if err != nil {
				t.Fatal(err)
			}
			c, p, err := h.Keys(name)
			if err != nil {
				t.Fatal(err)
			}
			if want := refKey(cur, norm); c != want {
				t.Fatalf("key len %d, name len %d: current %s, want %s", n, len(name), c, want)
			}
			if p == nil || *p != refKey(prev, norm) {
				t.Fatalf("key len %d: previous key wrong", n)
			}
			if k, err := h.Key(name); err != nil || k != c {
				t.Fatalf("Key() = %s, %v; want %s", k, err, c)
			}
		}
	}
}

func TestKeysCollideExactlyWhenNormalizedEqual(t *testing.T) {
	h, err := NewHasher(secret(1, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	k1, p, err := h.Keys("Ünïcode")
	if err != nil || p != nil {
		t.Fatalf("Keys: %v, prev %v", err, p)
	}
	k2, _, _ := h.Keys("U\u0308NI\u0308CODE")
	k3, _, _ := h.Keys("unicode")
	if k1 != k2 {
		t.Errorf("case/composition variants hash differently")
	}
	if k1 == k3 {
		t.Errorf("ünïcode and unicode collide")
	}
	if _, _, err := h.Keys("bad name"); !errors.Is(err, ErrInvalidUsername) {
		t.Errorf("Keys(invalid) = %v", err)
	}
	other, _ := NewHasher(secret(2, 32), nil)
	k4, _ := other.Key("Ünïcode")
	if k4 == k1 {
		t.Errorf("different hub keys give the same Key")
	}
}

func TestZeroHasher(t *testing.T) {
	var h Hasher
	if _, err := h.Key("alice"); err == nil {
		t.Error("zero Hasher hashed with a zero key")
	}
	if _, _, err := (*Hasher)(nil).Keys("alice"); err == nil {
		t.Error("nil Hasher did not fail")
	}
	if _, err := NewTable(&h, nil); err == nil {
		t.Error("NewTable accepted a zero Hasher")
	}
}

func TestHasherAllocations(t *testing.T) {
	h, err := NewHasher(secret(1, 32), secret(2, 32))
	if err != nil {
		t.Fatal(err)
	}
	n, _ := Normalize("juliet@example.com")
	if a := testing.AllocsPerRun(100, func() { h.keysNormalized(n) }); a != 0 {
		t.Errorf("hashing a normalized name allocates %v times", a)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = h.Key("juliet@example.com") }); a != 0 {
		t.Errorf("Key on an already normalized name allocates %v times", a)
	}
}

func TestValidateRegion(t *testing.T) {
	for _, ok := range []string{"eu", "us", "ap", "eu-west-1", "0", strings.Repeat("a", MaxRegionLen)} {
		if err := ValidateRegion(ok); err != nil {
			t.Errorf("ValidateRegion(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "EU", "eu_west", "eu west", "é", "-eu", strings.Repeat("a", MaxRegionLen+1)} {
		if err := ValidateRegion(bad); !errors.Is(err, ErrInvalidRegion) {
			t.Errorf("ValidateRegion(%q) = %v, want ErrInvalidRegion", bad, err)
		}
	}
}

// TestValidateRegionIsTheRoutingRule: lookup and routing judge region ids by
// one rule.
func TestValidateRegionIsTheRoutingRule(t *testing.T) {
	for _, id := range []string{"", "eu", "-eu", "eu-", "e-u", "EU", "0", "a.b", strings.Repeat("a", 16), strings.Repeat("a", 17)} {
		if got, want := ValidateRegion(id) == nil, routing.ValidRegionID(id); got != want {
			t.Errorf("%q: lookup accepts=%v, routing accepts=%v", id, got, want)
		}
	}
}

// TestNormalizeASCIIFastPath checks the ASCII fast path against the precis
// package: exhaustively for every string of one or two bytes, and on random
// longer strings.
func TestNormalizeASCIIFastPath(t *testing.T) {
	check := func(s string) {
		t.Helper()
		fast, ok := normalizeASCII(s)
		ref, err := precis.UsernameCaseMapped.String(s)
		if !ok {
			for i := 0; i < len(s); i++ {
				if s[i] < 0x21 || s[i] > 0x7e {
					return // not the fast path's job
				}
			}
			t.Fatalf("fast path refused printable ASCII %q", s)
		}
		if err != nil || fast != ref {
			t.Fatalf("fast path %q -> %q, precis -> %q, %v", s, fast, ref, err)
		}
	}
	for a := range 128 {
		check(string(rune(a)))
		for b := range 128 {
			check(string([]byte{byte(a), byte(b)}))
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 40)
	for range 20000 {
		n := 1 + r.IntN(len(buf))
		for i := range n {
			buf[i] = byte(0x21 + r.IntN(0x7e-0x21+1))
		}
		check(string(buf[:n]))
	}
}
