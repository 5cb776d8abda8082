package region

import (
	"errors"
	"strings"

	"github.com/meridian-id/meridian/routing"
)

// tokenCrypto is op's Crypto seam. op calls Encrypt to turn an authorization
// request id into a code and "tokenID:subject" into an opaque access token,
// and Decrypt to read them back. Meridian's opaque artifacts are not
// encrypted blobs but random, region-tagged strings whose digest is the
// database key, so:
//
//   - Encrypt(authRequestID) mints a fresh tagged authorization code (the
//     storage then saves its digest with SaveAuthCode);
//   - Encrypt("tokenID:subject") returns tokenID, which storage already
//     minted as the tagged opaque access token;
//   - Decrypt(accessToken) verifies the tag and returns "token:" so op hands
//     the token itself to the storage, which looks up its digest.
type tokenCrypto struct {
	codec  *routing.Codec
	region string
}

var errNotOurs = errors.New("region: not an artifact of this region")

func (c tokenCrypto) Encrypt(s string) (string, error) {
	if id, _, ok := strings.Cut(s, ":"); ok {
		if _, err := c.codec.VerifyKind(id, routing.KindAccess); err != nil {
			return "", err
		}
		return id, nil
	}
	if _, err := c.codec.VerifyKind(s, routing.KindAuthRequest); err != nil {
		return "", err
	}
	return c.codec.New(routing.KindCode, c.region)
}

func (c tokenCrypto) Decrypt(s string) (string, error) {
	tag, err := c.codec.VerifyKind(s, routing.KindAccess)
	if err != nil {
		return "", err
	}
	if tag.Region != c.region {
		return "", errNotOurs
	}
	return s + ":", nil
}
