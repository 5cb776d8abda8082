package region

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/meridian-id/meridian/routing"
)

// tokenCrypto is op's Crypto seam. op calls Encrypt to turn an authorization
// request id into a code and "tokenID:subject" into an access token, and
// Decrypt to read an access token back. Meridian's opaque artifacts are not
// encrypted blobs but random, region-tagged strings whose digest is the
// database key, so:
//
//   - Encrypt(authRequestID) mints a fresh tagged authorization code (the
//     storage then saves its digest with SaveAuthCode);
//   - Encrypt("tokenID:subject") returns tokenID, which storage already
//     minted as the tagged opaque access token, or, for a JWT client, the
//     RFC 9068 JWT (typ at+jwt) storage signed for that jti;
//   - Decrypt(accessToken) verifies the tag (or the at+jwt signature) and
//     returns "tokenID:" so op hands the token id to the storage, which
//     looks up its digest.
//
// Every client is served as op's "bearer" type: op's own JWT access tokens
// carry typ JWT, the same as ID tokens, so a verifier could not tell them
// apart (RFC 9068 §2.1, §4).
type tokenCrypto struct {
	codec  *routing.Codec
	region string
	jwts   *jwtAccessTokens
}

var errNotOurs = errors.New("region: not an artifact of this region")

func (c tokenCrypto) Encrypt(s string) (string, error) {
	if id, _, ok := strings.Cut(s, ":"); ok {
		if _, err := c.codec.VerifyKind(id, routing.KindTokenID); err == nil {
			return c.jwts.take(id)
		}
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
		if strings.HasPrefix(s, "eyJ") {
			return c.jwts.verify(s)
		}
		return "", err
	}
	if tag.Region != c.region {
		return "", errNotOurs
	}
	return s + ":", nil
}

// typAccessToken is RFC 9068 §2.1's JWT type for access tokens.
const typAccessToken = "at+jwt"

// jwtAccessTokens signs RFC 9068 access tokens and verifies them when they
// come back. Storage signs a token when it creates the jti (it has the
// request's context and facts) and parks it here until op asks the crypto
// seam to "encrypt" that jti.
type jwtAccessTokens struct {
	keys   *Keys
	region string
	codec  *routing.Codec

	mu     sync.Mutex
	parked map[string]parkedJWT
}

type parkedJWT struct {
	raw string
	at  time.Time
}

func newJWTAccessTokens(keys *Keys, codec *routing.Codec, region string) *jwtAccessTokens {
	return &jwtAccessTokens{keys: keys, codec: codec, region: region, parked: map[string]parkedJWT{}}
}

// sign returns c signed by the region's active key with typ at+jwt.
func (j *jwtAccessTokens) sign(ctx context.Context, c atClaims) (string, error) {
	key, err := j.keys.signingKey(ctx)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key.Key(), KeyID: key.ID()}},
		(&jose.SignerOptions{}).WithType(typAccessToken))
	if err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(c).Serialize()
}

// park signs c and keeps it for take(c.ID).
func (j *jwtAccessTokens) park(ctx context.Context, c atClaims) error {
	raw, err := j.sign(ctx, c)
	if err != nil {
		return err
	}
	now := time.Now()
	j.mu.Lock()
	defer j.mu.Unlock()
	for id, p := range j.parked {
		if now.Sub(p.at) > time.Minute {
			delete(j.parked, id)
		}
	}
	j.parked[c.ID] = parkedJWT{raw: raw, at: now}
	return nil
}

func (j *jwtAccessTokens) take(id string) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	p, ok := j.parked[id]
	if !ok {
		return "", fmt.Errorf("region: no access token signed for %s", id)
	}
	delete(j.parked, id)
	return p.raw, nil
}

// verify accepts only a JWT of type at+jwt signed by this region, unexpired,
// whose jti is this region's token id; an ID token (typ JWT) is refused.
func (j *jwtAccessTokens) verify(raw string) (string, error) {
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil || len(tok.Headers) != 1 {
		return "", errNotOurs
	}
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); !strings.EqualFold(strings.TrimPrefix(strings.ToLower(typ), "application/"), typAccessToken) {
		return "", fmt.Errorf("region: JWT of type %q is not an access token", typ)
	}
	keys, err := j.keys.PublicKeys(context.Background())
	if err != nil {
		return "", err
	}
	var c atClaims
	verified := false
	for _, k := range keys {
		if k.KeyID == tok.Headers[0].KeyID && tok.Claims(k.Key, &c) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return "", errNotOurs
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Time: time.Now()}, 0); err != nil {
		return "", err
	}
	tag, err := j.codec.VerifyKind(c.ID, routing.KindTokenID)
	if err != nil || tag.Region != j.region {
		return "", errNotOurs
	}
	return c.ID + ":", nil
}
