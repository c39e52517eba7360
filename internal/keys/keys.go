package keys

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
)

// SecretSize is the size of a session secret and of every derived key.
const SecretSize = 32

// KeyIDSize is the size of a key id: a one-way fingerprint of a session
// secret that records and catalogs use to name the secret that sealed them.
const KeyIDSize = 16

// KeyID names a session secret without revealing it.
type KeyID [KeyIDSize]byte

// IsZero reports whether id is the zero id, which plaintext records carry.
func (id KeyID) IsZero() bool { return id == KeyID{} }

// ErrWrongKey is returned when a wrapped session secret does not open with
// the key it was offered: a wrong password, the wrong recovery key, or a
// wrapped form that was altered.
var ErrWrongKey = errors.New("wrong key")

// HKDF info strings. They are part of the file format: changing one makes
// every existing file unreadable.
const (
	infoData  = "ferry/v1/data"
	infoMeta  = "ferry/v1/meta"
	infoCheck = "ferry/v1/key-id"
)

// Session is an unwrapped session secret with the keys derived from it.
// The zero value is not usable; build one with NewSession or OpenSession.
type Session struct {
	secret [SecretSize]byte
	id     KeyID
	data   cipher.AEAD
	meta   cipher.AEAD
}

// NewSession makes a session from a fresh random secret.
func NewSession() (*Session, error) {
	var s [SecretSize]byte
	if _, err := rand.Read(s[:]); err != nil {
		return nil, fmt.Errorf("generate session secret: %w", err)
	}
	return SessionFromSecret(s[:])
}

// SessionFromSecret derives the session keys from a secret held elsewhere
// (unwrapped from a key table, or handed over by the controller).
func SessionFromSecret(secret []byte) (*Session, error) {
	if len(secret) != SecretSize {
		return nil, fmt.Errorf("session secret is %d bytes, want %d", len(secret), SecretSize)
	}
	s := &Session{}
	copy(s.secret[:], secret)
	dk, err := hkdf.Key(sha256.New, secret, nil, infoData, SecretSize)
	if err != nil {
		return nil, err
	}
	mk, err := hkdf.Key(sha256.New, secret, nil, infoMeta, SecretSize)
	if err != nil {
		return nil, err
	}
	ck, err := hkdf.Key(sha256.New, secret, nil, infoCheck, KeyIDSize)
	if err != nil {
		return nil, err
	}
	copy(s.id[:], ck)
	if s.data, err = newGCM(dk); err != nil {
		return nil, err
	}
	if s.meta, err = newGCM(mk); err != nil {
		return nil, err
	}
	return s, nil
}

// SessionWithID derives the session keys of secret and checks that it is
// the secret id names; ErrWrongKey when it is not (a wrapped form opened
// with the wrong key, or swapped between files).
func SessionWithID(secret []byte, id []byte) (*Session, error) {
	s, err := SessionFromSecret(secret)
	if err != nil {
		return nil, err
	}
	if len(id) != KeyIDSize || !s.Matches(KeyID(id)) {
		return nil, ErrWrongKey
	}
	return s, nil
}

// ID returns the key id of the session secret.
func (s *Session) ID() KeyID { return s.id }

// Secret returns a copy of the raw session secret, for wrapping it or
// handing it to the one agent that must encrypt a session.
func (s *Session) Secret() []byte { return append([]byte(nil), s.secret[:]...) }

// Data returns the AEAD that seals block records (AES-256-GCM).
func (s *Session) Data() cipher.AEAD { return s.data }

// Meta returns the AEAD that seals the catalog (AES-256-GCM).
func (s *Session) Meta() cipher.AEAD { return s.meta }

// Matches reports whether id names this session's secret.
func (s *Session) Matches(id KeyID) bool {
	return subtle.ConstantTimeCompare(s.id[:], id[:]) == 1
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// String never prints the secret.
func (s *Session) String() string { return fmt.Sprintf("session(%x)", s.id[:4]) }

// GoString keeps %#v from printing the secret too.
func (s *Session) GoString() string { return s.String() }

// Format prints the key id for every verb, so no verb (%d, %x, %v, ...)
// can print the secret by walking the struct.
func (s *Session) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }
