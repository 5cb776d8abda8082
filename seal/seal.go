// Package seal is Meridian's one construction for values it hands out
// encrypted and takes back later: login-state cookies, the federated-login
// hint, paging cursors, the hub's stored login state.
//
// A Box is AES-256-GCM under a key derived once, with HKDF-SHA256, from a
// secret and a label naming the use ("meridian hub state v1"): one secret
// serves every use without one use's sealed values opening in another. A
// sealed value is bound to a context string (the cookie name, the store
// key, the region) and carries its expiry inside the authenticated data,
// so that a value cannot be replayed in another place nor after its time.
// Keys rotate: a Box seals with the current secret and opens values sealed
// with the current or any previous one.
//
// Format: version 1 byte ‖ nonce 12 bytes ‖ GCM(expiry unix seconds 8 bytes
// big-endian ‖ plaintext), associated data "label\x00context".
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// MinSecret is the minimum secret length in bytes.
const MinSecret = 32

const (
	version   = 1
	nonceSize = 12
	expSize   = 8
)

// Errors of Open. Neither says which check failed beyond these two, so
// that an attacker learns nothing from the difference.
var (
	// ErrInvalid: tampered, truncated, sealed for another label or context,
	// or under an unknown key.
	ErrInvalid = errors.New("seal: invalid sealed value")
	// ErrExpired: authentic but past its expiry.
	ErrExpired = errors.New("seal: expired")
)

// Box seals and opens values for one label.
type Box struct {
	label string
	keys  []cipher.AEAD // keys[0] seals
}

// New returns the Box of label: it seals under the key derived from
// current and opens under that key or those derived from previous (older
// secrets kept during a rotation). Every secret must be at least MinSecret
// bytes.
func New(label string, current []byte, previous ...[]byte) (*Box, error) {
	if label == "" {
		return nil, errors.New("seal: empty label")
	}
	b := &Box{label: label}
	for i, s := range append([][]byte{current}, previous...) {
		if len(s) < MinSecret {
			return nil, fmt.Errorf("seal: %s: secret %d is shorter than %d bytes", label, i, MinSecret)
		}
		key, err := hkdf.Key(sha256.New, s, nil, label, 32)
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
		b.keys = append(b.keys, aead)
	}
	return b, nil
}

func (b *Box) ad(context string) []byte { return []byte(b.label + "\x00" + context) }

// Seal encrypts plain for context, valid until expires (the zero time: no
// expiry).
func (b *Box) Seal(plain []byte, context string, expires time.Time) ([]byte, error) {
	out := make([]byte, 1+nonceSize, 1+nonceSize+expSize+len(plain)+b.keys[0].Overhead())
	out[0] = version
	if _, err := rand.Read(out[1 : 1+nonceSize]); err != nil {
		return nil, err
	}
	var exp int64
	if !expires.IsZero() {
		exp = expires.Unix()
	}
	msg := binary.BigEndian.AppendUint64(make([]byte, 0, expSize+len(plain)), uint64(exp))
	msg = append(msg, plain...)
	return b.keys[0].Seal(out, out[1:1+nonceSize], msg, b.ad(context)), nil
}

// Open decrypts a value Seal made for the same label and context, checking
// its expiry against now.
func (b *Box) Open(sealed []byte, context string, now time.Time) ([]byte, error) {
	if len(sealed) < 1+nonceSize+expSize+b.keys[0].Overhead() || sealed[0] != version {
		return nil, ErrInvalid
	}
	nonce, ct := sealed[1:1+nonceSize], sealed[1+nonceSize:]
	for _, k := range b.keys {
		msg, err := k.Open(nil, nonce, ct, b.ad(context))
		if err != nil {
			continue
		}
		if exp := int64(binary.BigEndian.Uint64(msg)); exp != 0 && now.Unix() > exp {
			return nil, ErrExpired
		}
		return msg[expSize:], nil
	}
	return nil, ErrInvalid
}

// SealString is Seal encoded as unpadded base64url (for cookies and URLs).
func (b *Box) SealString(plain []byte, context string, expires time.Time) (string, error) {
	s, err := b.Seal(plain, context, expires)
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(s), nil
}

// OpenString opens a SealString value; values longer than maxLen encoded
// bytes are refused before decoding.
func (b *Box) OpenString(s, context string, now time.Time, maxLen int) ([]byte, error) {
	if len(s) > maxLen {
		return nil, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, ErrInvalid
	}
	return b.Open(raw, context, now)
}
