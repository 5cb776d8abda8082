package region_test

import (
	"testing"

	"github.com/meridian-id/meridian/region"
)

// TestFederatedSubject: the federated form round-trips, and nothing a
// local user id can be (or a malformed value) parses as federated.
func TestFederatedSubject(t *testing.T) {
	for _, c := range []struct{ home, sub string }{{"us", "q3Yc0n9yJ5lG2b1v8Pz0Aw"}, {"ap-2", "a.b"}} {
		s, err := region.FederatedSubject(c.home, c.sub)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		home, sub, ok := region.ParseFederatedSubject(s)
		if !ok || home != c.home || sub != c.sub {
			t.Fatalf("%q parsed as %q %q %v", s, home, sub, ok)
		}
	}
	for _, c := range []struct{ home, sub string }{{"", "x"}, {"u.s", "x"}, {"us", ""}, {"us", "fed.eu.x"}, {"us", "a b"}, {"us", "é"}} {
		if s, err := region.FederatedSubject(c.home, c.sub); err == nil {
			t.Errorf("%v accepted as %q", c, s)
		}
	}
	for _, s := range []string{"q3Yc0n9yJ5lG2b1v8Pz0Aw", "fed.", "fed.us", "fed.us.", "fed..x", "fed.us.fed.eu.x", "xfed.us.x"} {
		if _, _, ok := region.ParseFederatedSubject(s); ok {
			t.Errorf("%q parsed as federated", s)
		}
	}
}
