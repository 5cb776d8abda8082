package region

import (
	"encoding/json"
	"errors"

	"golang.org/x/text/secure/precis"

	"github.com/meridian-id/meridian/region/store"
)

// ErrInvalidUsername is returned for a username that is not a valid
// identifier under RFC 8265.
var ErrInvalidUsername = errors.New("region: invalid username")

// NormalizeUsername maps a username to its stored form with the PRECIS
// UsernameCaseMapped profile (RFC 8265: width-mapped, case-folded, NFC), so
// case and width variants of one name are one account. The hub's lookup
// table uses the same profile.
func NormalizeUsername(s string) (string, error) {
	n, err := precis.UsernameCaseMapped.String(s)
	if err != nil || n == "" || len(n) > 256 {
		return "", ErrInvalidUsername
	}
	return n, nil
}

// UserActive reports whether u may sign in: a user whose SCIM attributes
// say "active": false (deactivated by provisioning) may not, nor one whose
// SCIM document does not parse (fail closed).
func UserActive(u store.User) bool {
	if u.SCIM == "" {
		return true
	}
	var doc struct {
		Active *bool `json:"active"`
	}
	if err := json.Unmarshal([]byte(u.SCIM), &doc); err != nil {
		return false
	}
	if doc.Active == nil {
		return true
	}
	return *doc.Active
}
