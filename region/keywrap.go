package region

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeyWrapper seals and opens a region's private signing keys with a
// key-encryption key (KEK) that is kept outside the region's database, so a
// copy of the database alone cannot mint a token. FileKEK implements it with
// a key file; a cloud KMS implements the same three methods (its key ARN or
// resource name as ID, the associated data as the KMS encryption context).
type KeyWrapper interface {
	// ID names the KEK without revealing it. It is stored next to every key
	// the KEK sealed, so a node started with the wrong KEK says so instead
	// of failing to decrypt or, worse, generating a new key.
	ID() string
	// Wrap encrypts plaintext bound to aad (the signing key's id).
	Wrap(ctx context.Context, plaintext, aad []byte) ([]byte, error)
	// Unwrap decrypts what Wrap returned for the same aad; any other input,
	// aad or KEK gives an error.
	Unwrap(ctx context.Context, ciphertext, aad []byte) ([]byte, error)
}

// ErrWrongKEK is returned when a signing key cannot be opened with the
// configured key-encryption key(s).
var ErrWrongKEK = errors.New("region: signing key is sealed by another key-encryption key")

// fileKEK is AES-256-GCM under a key derived from a secret file.
type fileKEK struct {
	id   string
	aead cipher.AEAD
}

// sealVersion prefixes every sealed key so the format can change.
const sealVersion = 1

// NewFileKEK returns the KeyWrapper of a secret of at least 32 random bytes
// (a key file read with config.LoadSecret). The AES-256 key and the KEK id
// are derived from the secret with HKDF-SHA256 and HMAC-SHA256 under
// distinct labels; neither reveals the secret.
func NewFileKEK(secret []byte) (KeyWrapper, error) {
	if len(secret) < 32 {
		return nil, errors.New("region: key-encryption key shorter than 32 bytes")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "meridian signing-key KEK v1", 32)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, secret)
	m.Write([]byte("meridian signing-key KEK id v1"))
	return &fileKEK{id: "file-" + hex.EncodeToString(m.Sum(nil)[:8]), aead: aead}, nil
}

func (f *fileKEK) ID() string { return f.id }

func (f *fileKEK) Wrap(_ context.Context, plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, 1+f.aead.NonceSize(), 1+f.aead.NonceSize()+len(plaintext)+f.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, err
	}
	return f.aead.Seal(out, out[1:], plaintext, aad), nil
}

func (f *fileKEK) Unwrap(_ context.Context, ciphertext, aad []byte) ([]byte, error) {
	n := f.aead.NonceSize()
	if len(ciphertext) < 1+n+f.aead.Overhead() || ciphertext[0] != sealVersion {
		return nil, fmt.Errorf("%w: not a sealed key (version %d)", ErrWrongKEK, firstByte(ciphertext))
	}
	pt, err := f.aead.Open(nil, ciphertext[1:1+n], ciphertext[1+n:], aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %s cannot open it", ErrWrongKEK, f.id)
	}
	return pt, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// keyAAD binds a sealed key to its id (which names its region), so a sealed
// blob copied onto another key's row, or into another region, does not open.
func keyAAD(id string) []byte { return []byte("meridian/signing-key/v1\x00" + id) }
