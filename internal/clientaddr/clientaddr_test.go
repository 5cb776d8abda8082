package clientaddr

import (
	"net/http"
	"testing"
)

// TestClient walks X-Forwarded-For chains as an attacker would build them:
// only a trusted peer's header counts, and only up to the first address
// that is not a trusted proxy.
func TestClient(t *testing.T) {
	tr, err := Parse([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer, forged header ignored", "203.0.113.9:1234", []string{"198.51.100.1"}, "203.0.113.9"},
		{"trusted peer without header", "10.1.2.3:80", nil, "10.1.2.3"},
		{"trusted peer names the client", "10.1.2.3:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"client's own forged entries left of its address", "10.1.2.3:80", []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, "198.51.100.1"},
		{"chain of trusted proxies", "192.0.2.7:443", []string{"198.51.100.1, 10.9.9.9"}, "198.51.100.1"},
		{"several header lines", "10.1.2.3:80", []string{"1.1.1.1", "198.51.100.1, 10.0.0.5"}, "198.51.100.1"},
		{"entry with a port", "10.1.2.3:80", []string{"198.51.100.1:5555"}, "198.51.100.1"},
		{"garbage stops at the last trusted hop", "10.1.2.3:80", []string{"198.51.100.1, not-an-ip, 10.0.0.5"}, "10.0.0.5"},
		{"every entry trusted", "10.1.2.3:80", []string{"10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"IPv6 proxy", "[2001:db8::1]:80", []string{"2001:db9::5"}, "2001:db9::5"},
		{"IPv4-mapped peer", "[::ffff:10.1.2.3]:80", []string{"198.51.100.1"}, "198.51.100.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: c.peer, Header: http.Header{}}
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := tr.Client(r); got != c.want {
				t.Fatalf("Client = %s, want %s", got, c.want)
			}
		})
	}
	var none *Trusted
	if got := none.Client(&http.Request{RemoteAddr: "10.1.2.3:80", Header: http.Header{"X-Forwarded-For": {"198.51.100.1"}}}); got != "10.1.2.3" {
		t.Fatalf("no trusted proxies: %s", got)
	}
	for _, bad := range []string{"", "10.0.0.0/33", "example.com", "fe80::1%eth0"} {
		if _, err := Parse([]string{bad}); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
