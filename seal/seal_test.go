package seal_test

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/meridian-id/meridian/seal"
)

func secret(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func box(t *testing.T, label string, cur []byte, prev ...[]byte) *seal.Box {
	t.Helper()
	b, err := seal.New(label, cur, prev...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestOpen(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	sealer := box(t, "meridian test v1", secret(1))
	sealed, err := sealer.Seal([]byte("alice"), "cookie-a", now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	forever, _ := sealer.Seal([]byte("bob"), "cookie-a", time.Time{})
	flip := func(i int) []byte { c := bytes.Clone(sealed); c[i] ^= 1; return c }
	for _, tc := range []struct {
		name    string
		opener  *seal.Box
		sealed  []byte
		context string
		now     time.Time
		want    string
		err     error
	}{
		{"round trip", sealer, sealed, "cookie-a", now, "alice", nil},
		{"at expiry", sealer, sealed, "cookie-a", now.Add(time.Minute), "alice", nil},
		{"no expiry", sealer, forever, "cookie-a", now.Add(1000 * time.Hour), "bob", nil},
		{"expired", sealer, sealed, "cookie-a", now.Add(time.Minute + time.Second), "", seal.ErrExpired},
		{"tampered version", sealer, flip(0), "cookie-a", now, "", seal.ErrInvalid},
		{"tampered nonce", sealer, flip(3), "cookie-a", now, "", seal.ErrInvalid},
		{"tampered expiry", sealer, flip(14), "cookie-a", now, "", seal.ErrInvalid},
		{"tampered tag", sealer, flip(len(sealed) - 1), "cookie-a", now, "", seal.ErrInvalid},
		{"truncated", sealer, sealed[:20], "cookie-a", now, "", seal.ErrInvalid},
		{"empty", sealer, nil, "cookie-a", now, "", seal.ErrInvalid},
		{"other context", sealer, sealed, "cookie-b", now, "", seal.ErrInvalid},
		{"wrong label", box(t, "meridian other v1", secret(1)), sealed, "cookie-a", now, "", seal.ErrInvalid},
		{"wrong secret", box(t, "meridian test v1", secret(2)), sealed, "cookie-a", now, "", seal.ErrInvalid},
		{"rotated: old value opens under previous", box(t, "meridian test v1", secret(2), secret(1)), sealed, "cookie-a", now, "alice", nil},
		{"rotated: previous dropped", box(t, "meridian test v1", secret(2), secret(3)), sealed, "cookie-a", now, "", seal.ErrInvalid},
		{"rotated: previous does not lift expiry", box(t, "meridian test v1", secret(2), secret(1)), sealed, "cookie-a", now.Add(time.Hour), "", seal.ErrExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.opener.Open(tc.sealed, tc.context, tc.now)
			if !errors.Is(err, tc.err) || string(got) != tc.want {
				t.Fatalf("Open = %q, %v; want %q, %v", got, err, tc.want, tc.err)
			}
		})
	}
}

// TestRotationSealsWithCurrent: after a rotation, new values no longer
// open under the old secret alone.
func TestRotationSealsWithCurrent(t *testing.T) {
	rotated := box(t, "l", secret(2), secret(1))
	s, err := rotated.SealString([]byte("x"), "c", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := box(t, "l", secret(1)).OpenString(s, "c", time.Now(), 1024); !errors.Is(err, seal.ErrInvalid) {
		t.Fatalf("value sealed after rotation opened under the old secret: %v", err)
	}
	if got, err := box(t, "l", secret(2)).OpenString(s, "c", time.Now(), 1024); err != nil || string(got) != "x" {
		t.Fatalf("current secret: %q %v", got, err)
	}
	for _, bad := range []string{"!!!", s + "A", s[:len(s)-2]} {
		if _, err := rotated.OpenString(bad, "c", time.Now(), 1024); !errors.Is(err, seal.ErrInvalid) {
			t.Fatalf("OpenString(%q) = %v", bad, err)
		}
	}
	if _, err := rotated.OpenString(s, "c", time.Now(), len(s)-1); !errors.Is(err, seal.ErrInvalid) {
		t.Fatal("over-long value was decoded")
	}
}

func TestNewRejectsShortSecrets(t *testing.T) {
	for _, tc := range []struct {
		label string
		cur   []byte
		prev  [][]byte
	}{
		{"l", secret(1)[:31], nil},
		{"l", secret(1), [][]byte{secret(1)[:16]}},
		{"", secret(1), nil},
	} {
		if _, err := seal.New(tc.label, tc.cur, tc.prev...); err == nil {
			t.Fatalf("New(%q, %d bytes) accepted", tc.label, len(tc.cur))
		}
	}
}
