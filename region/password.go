package region

import "github.com/meridian-id/meridian/password"

// ErrPasswordMismatch is returned when a password does not match its hash.
var ErrPasswordMismatch = password.ErrMismatch

// HashPassword returns the argon2id PHC string of a person's password
// (password.Hash).
func HashPassword(pw string) (string, error) { return password.Hash(pw) }

// VerifyPassword checks pw against an argon2id PHC string in constant time
// (password.Verify).
func VerifyPassword(phc, pw string) error { return password.Verify(phc, pw) }
