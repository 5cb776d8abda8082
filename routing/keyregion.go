package routing

import (
	"errors"
	"strings"
)

// ErrKeyRegion is returned when a JWT's signing key belongs to a different
// region than the issuer it claims.
var ErrKeyRegion = errors.New("routing: signing key's region differs from the token's issuer region")

// KeyRegion returns the region a key id names: region keys are published
// as "<region>-<random>".
func KeyRegion(kid string) (string, bool) {
	r, _, ok := strings.Cut(kid, "-")
	if !ok || !ValidRegionID(r) {
		return "", false
	}
	return r, true
}

// CheckKeyRegion is the check a resource server validating region JWTs
// locally (RFC 9068 access tokens from /dereference) must add to signature
// verification: the key that signed the token must belong to the region
// whose issuer the token names, so a key stolen from one region cannot mint
// tokens for another. regionIssuers maps region id to region issuer URL.
func CheckKeyRegion(kid, iss string, regionIssuers map[string]string) error {
	r, ok := KeyRegion(kid)
	if !ok {
		return ErrKeyRegion
	}
	want, ok := regionIssuers[r]
	if !ok || want != iss {
		return ErrKeyRegion
	}
	return nil
}
