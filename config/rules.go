package config

import (
	"fmt"

	"github.com/meridian-id/meridian/routing"
)

// Rules shared by [Config.Validate] and the GeoDNS validator (geodns.Config),
// so that a regions.yaml key is judged the same way wherever it is read. The
// dns block itself is validated in one place, geodns.Config.Validate (reached
// through geodns.FromConfig by every process that serves DNS): this package
// cannot import geodns.

// CheckRegionID reports an error naming key unless id is a region id by the
// federation's one rule, [routing.ValidRegionID].
func CheckRegionID(key, id string) error {
	if !routing.ValidRegionID(id) {
		return invalid(key, "%q is not a region id (1-16 of a-z, 0-9, -; not starting with -)", id)
	}
	return nil
}

// CheckProximity reports an error naming key[j] unless every entry of list
// is a known region other than self, listed once.
func CheckProximity(key, self string, known map[string]bool, list []string) error {
	seen := make(map[string]bool, len(list))
	for j, p := range list {
		k := fmt.Sprintf("%s[%d]", key, j)
		switch {
		case !known[p] || p == self:
			return invalid(k, "%q is not another configured region", p)
		case seen[p]:
			return invalid(k, "region %q listed twice", p)
		}
		seen[p] = true
	}
	return nil
}
