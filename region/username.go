package region

import (
	"errors"

	"golang.org/x/text/secure/precis"
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
