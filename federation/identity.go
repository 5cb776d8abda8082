package federation

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// PartyHub is the party id of the hub in a Keyring (regions use their
// region id; a region's DR site is the same party as its primary).
const PartyHub = "hub"

// Keyring is one party's federation identity: its own ES256 private key
// and every party's public key (its own included). Parties authenticate to
// each other with it, never with the shared routing key.
type Keyring struct {
	// Self is this party: a region id or PartyHub.
	Self string
	// Key is this party's private key.
	Key *ecdsa.PrivateKey
	// Public holds each party's public key by party id (for this party,
	// the public half of Key).
	Public map[string]*ecdsa.PublicKey
	// Also holds, by party id, the further public keys a party is
	// accepted under while it rotates its federation key (the config lists
	// more than one). Verification accepts any of PublicKeys.
	Also map[string][]*ecdsa.PublicKey
}

// PublicKeys returns every public key party is accepted under: Public's
// first, then Also's, without duplicates.
func (k *Keyring) PublicKeys(party string) []*ecdsa.PublicKey {
	if k == nil {
		return nil
	}
	var out []*ecdsa.PublicKey
	add := func(p *ecdsa.PublicKey) {
		if p == nil {
			return
		}
		for _, q := range out {
			if q.Equal(p) {
				return
			}
		}
		out = append(out, p)
	}
	add(k.Public[party])
	for _, p := range k.Also[party] {
		add(p)
	}
	return out
}

// PublicKey returns party's public key.
func (k *Keyring) PublicKey(party string) (*ecdsa.PublicKey, bool) {
	if k == nil {
		return nil, false
	}
	p, ok := k.Public[party]
	return p, ok && p != nil
}

// ErrBadKey is wrapped when a federation key cannot be parsed.
var ErrBadKey = errors.New("federation: invalid key")

// ParsePrivateKey reads a party's private key file: a PEM P-256 key
// (PKCS #8 or SEC 1), or a secret of at least 32 bytes (what
// config.LoadSecret generates for development) from which the key is
// derived deterministically with HKDF-SHA256.
func ParsePrivateKey(b []byte) (*ecdsa.PrivateKey, error) {
	if blk, _ := pem.Decode(b); blk != nil {
		var key any
		var err error
		switch blk.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(blk.Bytes)
		default:
			return nil, fmt.Errorf("%w: PEM block %q", ErrBadKey, blk.Type)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
		}
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok || k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("%w: want a P-256 (ES256) key", ErrBadKey)
		}
		return k, nil
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("%w: neither PEM nor a 32-byte secret", ErrBadKey)
	}
	for i := uint32(0); i < 64; i++ {
		var info [4]byte
		binary.BigEndian.PutUint32(info[:], i)
		d, err := hkdf.Key(sha256.New, b, nil, "meridian federation key v1"+string(info[:]), 32)
		if err != nil {
			return nil, err
		}
		if k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d); err == nil {
			return k, nil
		}
	}
	return nil, fmt.Errorf("%w: no scalar derived", ErrBadKey)
}

// ParsePublicKey reads a party's public key as the federation config
// holds it: PEM ("PUBLIC KEY", PKIX) or base64 (standard or URL) of the
// PKIX DER.
func ParsePublicKey(s string) (*ecdsa.PublicKey, error) {
	var der []byte
	if blk, _ := pem.Decode([]byte(s)); blk != nil {
		der = blk.Bytes
	} else {
		t := strings.TrimRight(strings.TrimSpace(s), "=")
		var err error
		if der, err = base64.RawStdEncoding.DecodeString(t); err != nil {
			if der, err = base64.RawURLEncoding.DecodeString(t); err != nil {
				return nil, fmt.Errorf("%w: neither PEM nor base64", ErrBadKey)
			}
		}
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	p, ok := k.(*ecdsa.PublicKey)
	if !ok || p.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: want a P-256 (ES256) key", ErrBadKey)
	}
	return p, nil
}

// MarshalPublicKey returns pub as one line of base64 PKIX DER, the form
// regions[].federation_public_key and hub.federation_public_key take.
func MarshalPublicKey(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(der)
}

// KeyID is pub's RFC 7638 thumbprint (base64url SHA-256).
func KeyID(pub *ecdsa.PublicKey) string {
	t, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto256)
	if err != nil {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString(t)
}

// JWK returns pub as a signature JWK (ES256) named by KeyID.
func JWK(pub *ecdsa.PublicKey) jose.JSONWebKey {
	return jose.JSONWebKey{Key: pub, KeyID: KeyID(pub), Algorithm: string(jose.ES256), Use: "sig"}
}

// JWKS returns the JSON Web Key Set holding pubs, as a private_key_jwt
// client's registration stores it.
func JWKS(pubs ...*ecdsa.PublicKey) string {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{}}
	for _, p := range pubs {
		set.Keys = append(set.Keys, JWK(p))
	}
	b, _ := json.Marshal(set)
	return string(b)
}

// VerifyAssertionAny is VerifyAssertion under any of pubs.
func VerifyAssertionAny(token string, pubs []*ecdsa.PublicKey, clientID, aud string, now time.Time) error {
	err := ErrBadAssertion
	for _, p := range pubs {
		if err = VerifyAssertion(token, p, clientID, aud, now); err == nil {
			return nil
		}
	}
	return err
}

// ClientAssertionType is the RFC 7523 client assertion type.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionTTL bounds a client assertion's life.
const assertionTTL = time.Minute

// SignAssertion returns a private_key_jwt client assertion (RFC 7523 §3):
// iss and sub clientID, aud the audiences (the OP's issuer first), a fresh
// jti, valid for one minute.
func SignAssertion(key *ecdsa.PrivateKey, clientID string, aud []string, now time.Time) (string, error) {
	if key == nil {
		return "", fmt.Errorf("%w: no private key", ErrBadKey)
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: KeyID(&key.PublicKey)}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	var jti [16]byte
	if _, err := randRead(jti[:]); err != nil {
		return "", err
	}
	return jwt.Signed(signer).Claims(jwt.Claims{Issuer: clientID, Subject: clientID, Audience: jwt.Audience(aud),
		ID: base64.RawURLEncoding.EncodeToString(jti[:]), IssuedAt: jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now.Add(-5 * time.Second)), Expiry: jwt.NewNumericDate(now.Add(assertionTTL))}).Serialize()
}

// ErrBadAssertion is returned by VerifyAssertion.
var ErrBadAssertion = errors.New("federation: invalid client assertion")

// VerifyAssertion checks a client assertion made by SignAssertion: ES256
// under pub, iss = sub = clientID, audience contains aud, unexpired and
// not issued more than assertionTTL ago (30 s of clock skew allowed).
func VerifyAssertion(token string, pub *ecdsa.PublicKey, clientID, aud string, now time.Time) error {
	if pub == nil {
		return ErrBadAssertion
	}
	t, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadAssertion, err)
	}
	var c jwt.Claims
	if err := t.Claims(pub, &c); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAssertion, err)
	}
	if c.Issuer != clientID || c.Subject != clientID || c.IssuedAt == nil || c.Expiry == nil || !slices.Contains(c.Audience, aud) {
		return ErrBadAssertion
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Time: now}, 30*time.Second); err != nil {
		return fmt.Errorf("%w: %v", ErrBadAssertion, err)
	}
	if iat := c.IssuedAt.Time(); now.Sub(iat) > assertionTTL+30*time.Second || c.Expiry.Time().Sub(iat) > assertionTTL {
		return ErrBadAssertion
	}
	return nil
}

// BearerAssertion returns the Authorization header value an internal call
// carries: "Bearer " and a client assertion for aud.
func BearerAssertion(key *ecdsa.PrivateKey, clientID, aud string) (string, error) {
	a, err := SignAssertion(key, clientID, []string{aud}, time.Now())
	if err != nil {
		return "", err
	}
	return "Bearer " + a, nil
}

// AssertionFromRequest returns the bearer assertion of an internal call.
func AssertionFromRequest(h string) (string, bool) {
	a, ok := strings.CutPrefix(h, "Bearer ")
	return strings.TrimSpace(a), ok && a != ""
}

var randRead = rand.Read

const crypto256 = crypto.SHA256

// AssertionIssuer returns the iss claim of a client assertion without
// verifying it: it names the client whose key must then verify it.
func AssertionIssuer(token string) (string, error) {
	t, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadAssertion, err)
	}
	var c jwt.Claims
	if err := t.UnsafeClaimsWithoutVerification(&c); err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadAssertion, err)
	}
	return c.Issuer, nil
}
