package config

import (
	"slices"
	"testing"
)

func TestDialAddrs(t *testing.T) {
	c := &Config{Federation: Federation{Port: 443}}
	tests := []struct {
		site Site
		want []string
	}{
		{Site{Listen: "127.0.0.11:8080", Addresses: []string{"127.0.0.11", "127.0.0.31", "fd00::11"}},
			[]string{"127.0.0.11:8080", "127.0.0.31:8080", "[fd00::11]:8080"}},
		{Site{Listen: ":0", Addresses: []string{"192.0.2.1"}}, []string{"192.0.2.1:443"}},
		{Site{Addresses: []string{"192.0.2.1", "192.0.2.2"}}, []string{"192.0.2.1:443", "192.0.2.2:443"}},
	}
	for _, tc := range tests {
		got := c.DialAddrs(tc.site)
		if !slices.Equal(got, tc.want) {
			t.Errorf("DialAddrs(%+v) = %v, want %v", tc.site, got, tc.want)
		}
		if got[0] != c.DialAddr(tc.site) {
			t.Errorf("DialAddr = %s, want the first of DialAddrs", c.DialAddr(tc.site))
		}
	}
}
