package lookup

import "testing"

func BenchmarkNormalize(b *testing.B) {
	for _, tc := range []struct{ name, in string }{
		{"ascii-lower", "juliet@example.com"},
		{"ascii-mixed", "Juliet@Example.COM"},
		{"unicode", "Ünïcode-Ñame@example.com"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Normalize(tc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHasherKeys(b *testing.B) {
	cur := []byte("benchmark hub key, current, 32+ bytes")
	prev := []byte("benchmark hub key, previous, 32+ bytes")
	for _, tc := range []struct {
		name     string
		prev     []byte
		username string
	}{
		{"ascii", nil, "juliet@example.com"},
		{"ascii-rotating", prev, "juliet@example.com"},
		{"unicode", nil, "Ünïcode-Ñame@example.com"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			h, err := NewHasher(cur, tc.prev)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := h.Keys(tc.username); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
