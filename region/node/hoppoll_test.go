package node_test

import (
	"testing"
	"time"

	"github.com/meridian-id/meridian/config"
	"github.com/meridian-id/meridian/region/node"
)

// TestHopPollSetting: federation.hop_poll reaches the router as the
// operator sets it, in the file or in MERIDIAN_FEDERATION_HOP_POLL; 0 (as
// docs/operations.md advises on hosts with CPU quotas) turns polling off.
func TestHopPollSetting(t *testing.T) {
	tests := []struct {
		name string
		env  string
		want time.Duration
	}{
		{"example file", "", 250 * time.Microsecond},
		{"env override", "100us", 100 * time.Microsecond},
		{"turned off", "0", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.env != "" {
				t.Setenv("MERIDIAN_FEDERATION_HOP_POLL", tc.env)
			}
			cfg, err := config.Load("../../configs/regions.yaml")
			if err != nil {
				t.Fatal(err)
			}
			if got := node.RouterConfig(cfg, "us", nil).HopPoll; got != tc.want {
				t.Fatalf("router HopPoll = %s, want %s", got, tc.want)
			}
		})
	}
}
