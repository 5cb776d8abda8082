package geodns

import (
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestKdig checks the server against an independent DNS client. kdig comes
// from knot-dnsutils; without it the test is skipped, except under CI=true,
// where it must be installed.
func TestKdig(t *testing.T) {
	kdig, err := exec.LookPath("kdig")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("kdig not on PATH; CI must install knot-dnsutils")
		}
		t.Skip("kdig not on PATH (apt-get install knot-dnsutils)")
	}
	_, addr := startServer(t, testConfig())
	host, port, _ := net.SplitHostPort(addr)

	tests := []struct {
		name string
		args []string
		want []string // substrings of kdig's output
	}{
		{
			name: "ECS over UDP",
			args: []string{"id.localhost", "A", "+subnet=192.0.2.0/24"},
			want: []string{"status: NOERROR", "Flags: qr aa;", "CLIENT-SUBNET: 192.0.2.0/24/24",
				"id.localhost.", "IN\tA\t127.0.0.11"},
		},
		{
			name: "ECS over TCP, longest prefix",
			args: []string{"+tcp", "id.localhost", "A", "+subnet=10.1.7.0/24"},
			want: []string{"status: NOERROR", "CLIENT-SUBNET: 10.1.7.0/24/16", "IN\tA\t127.0.0.11"},
		},
		{
			name: "IPv6 ECS",
			args: []string{"id.localhost", "AAAA", "+subnet=2001:db8:e0::/56"},
			want: []string{"CLIENT-SUBNET: 2001:db8:e0::/56/48", "IN\tAAAA\tfd00::11"},
		},
		{
			name: "source address",
			args: []string{"id.localhost", "A"},
			want: []string{"status: NOERROR", "IN\tA\t127.0.0.13"},
		},
		{
			name: "NXDOMAIN",
			args: []string{"nope.id.localhost", "A"},
			want: []string{"status: NXDOMAIN", "Flags: qr aa;", "IN\tSOA\ta.ns.id.localhost. hostmaster.id.localhost."},
		},
		{
			name: "REFUSED",
			args: []string{"example.org", "A"},
			want: []string{"status: REFUSED"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			args := append([]string{"@" + host, "-p", port, "+norecurse", "+timeout=3", "+retry=0"}, tc.args...)
			out, err := exec.CommandContext(ctx, kdig, args...).CombinedOutput()
			if err != nil {
				t.Fatalf("kdig %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("kdig %s: output lacks %q:\n%s", strings.Join(args, " "), w, out)
				}
			}
		})
	}
}
