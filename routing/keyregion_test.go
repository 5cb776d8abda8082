package routing

import (
	"errors"
	"testing"
)

func TestCheckKeyRegion(t *testing.T) {
	issuers := map[string]string{"eu": "https://eu.id.example.com", "us": "https://us.id.example.com"}
	tests := []struct {
		kid, iss string
		ok       bool
	}{
		{"eu-3f2a9c", "https://eu.id.example.com", true},
		{"eu-3f2a9c", "https://us.id.example.com", false}, // an eu key minting a us token
		{"mars-1", "https://eu.id.example.com", false},
		{"eu", "https://eu.id.example.com", false},
		{"", "https://eu.id.example.com", false},
		{"EU-1", "https://eu.id.example.com", false},
		{"us-1", "https://id.example.com", false}, // not a region issuer
	}
	for _, tt := range tests {
		err := CheckKeyRegion(tt.kid, tt.iss, issuers)
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrKeyRegion)) {
			t.Errorf("CheckKeyRegion(%q, %q) = %v, want ok=%v", tt.kid, tt.iss, err, tt.ok)
		}
	}
}
