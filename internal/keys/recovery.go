package keys

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// The recovery key protects against losing a password or a Vault key:
// every new session secret is also sealed to an X25519 public key with
// HPKE (RFC 9180: DHKEM(X25519), HKDF-SHA256, AES-256-GCM), and the private
// half, stored offline, opens any point without password or Vault.

var (
	recoveryKEM  = hpke.DHKEM(ecdh.X25519())
	recoveryKDF  = hpke.HKDFSHA256()
	recoveryAEAD = hpke.AES256GCM()
)

const (
	recoveryInfo      = "ferry/v1/recovery"
	recoveryPrivLabel = "ferry-recovery-private-key-v1:"
	recoveryPubLabel  = "ferry-recovery-public-key-v1:"
	// RecoveryFingerprintSize is the size of the key fingerprint stored in
	// each entry, to tell which recovery key sealed it.
	RecoveryFingerprintSize = 8
)

// RecoveryPublic is the public half of a recovery key.
type RecoveryPublic struct {
	pk  hpke.PublicKey
	raw []byte
}

// RecoveryPrivate is the private half of a recovery key.
type RecoveryPrivate struct {
	sk  hpke.PrivateKey
	raw []byte
	pub []byte
}

// NewRecoveryKey makes a recovery key pair.
func NewRecoveryKey() (*RecoveryPrivate, error) {
	sk, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return recoveryPrivateFrom(sk.Bytes())
}

func recoveryPrivateFrom(raw []byte) (*RecoveryPrivate, error) {
	sk, err := recoveryKEM.NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("recovery private key: %w", err)
	}
	xk, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("recovery private key: %w", err)
	}
	return &RecoveryPrivate{sk: sk, raw: append([]byte(nil), raw...), pub: xk.PublicKey().Bytes()}, nil
}

// Public returns the public half.
func (k *RecoveryPrivate) Public() *RecoveryPublic {
	p, _ := ParseRecoveryPublicBytes(k.pub)
	return p
}

// Marshal encodes the private key for the offline file; it is the only
// copy, so keep it safe.
func (k *RecoveryPrivate) Marshal() string {
	return recoveryPrivLabel + base64.StdEncoding.EncodeToString(k.raw) + "\n"
}

// ParseRecoveryPrivate reads what Marshal wrote.
func ParseRecoveryPrivate(s string) (*RecoveryPrivate, error) {
	b64, ok := strings.CutPrefix(strings.TrimSpace(s), recoveryPrivLabel)
	if !ok {
		return nil, errors.New("not a ferry recovery private key")
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("recovery private key is not valid base64")
	}
	return recoveryPrivateFrom(raw)
}

// String never prints the key.
func (k *RecoveryPrivate) String() string { return "recovery-private-key(redacted)" }

// GoString keeps %#v from printing the key.
func (k *RecoveryPrivate) GoString() string { return k.String() }

// Format prints the redaction for every verb.
func (k *RecoveryPrivate) Format(f fmt.State, verb rune) { f.Write([]byte(k.String())) }

// ParseRecoveryPublicBytes reads a raw X25519 public key.
func ParseRecoveryPublicBytes(raw []byte) (*RecoveryPublic, error) {
	pk, err := recoveryKEM.NewPublicKey(raw)
	if err != nil {
		return nil, fmt.Errorf("recovery public key: %w", err)
	}
	return &RecoveryPublic{pk: pk, raw: append([]byte(nil), raw...)}, nil
}

// Marshal encodes the public key for the controller's config: base64 of
// the raw X25519 key.
func (p *RecoveryPublic) Marshal() string {
	return base64.StdEncoding.EncodeToString(p.raw)
}

// ParseRecoveryPublic reads what Marshal wrote (the label is optional).
func ParseRecoveryPublic(s string) (*RecoveryPublic, error) {
	b64 := strings.TrimPrefix(strings.TrimSpace(s), recoveryPubLabel)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("recovery public key is not valid base64")
	}
	return ParseRecoveryPublicBytes(raw)
}

// Fingerprint names the key pair in entries.
func (p *RecoveryPublic) Fingerprint() [RecoveryFingerprintSize]byte {
	h := sha256.Sum256(append([]byte(recoveryPubLabel), p.raw...))
	return [RecoveryFingerprintSize]byte(h[:RecoveryFingerprintSize])
}

func recoveryAAD(id KeyID) []byte { return append([]byte(recoveryInfo), id[:]...) }

// Seal seals a session secret to the recovery key: fingerprint || HPKE
// single-shot ciphertext (encapsulated key, then the sealed secret).
func (p *RecoveryPublic) Seal(s *Session) ([]byte, error) {
	ct, err := hpke.Seal(p.pk, recoveryKDF, recoveryAEAD, recoveryAAD(s.ID()), s.secret[:])
	if err != nil {
		return nil, fmt.Errorf("seal to recovery key: %w", err)
	}
	fp := p.Fingerprint()
	return append(fp[:], ct...), nil
}

// Open opens an entry Seal made for secret id.
func (k *RecoveryPrivate) Open(entry []byte, id KeyID) (*Session, error) {
	fp := k.Public().Fingerprint()
	if len(entry) < RecoveryFingerprintSize || [RecoveryFingerprintSize]byte(entry[:RecoveryFingerprintSize]) != fp {
		return nil, ErrWrongKey
	}
	secret, err := hpke.Open(k.sk, recoveryKDF, recoveryAEAD, recoveryAAD(id), entry[RecoveryFingerprintSize:])
	if err != nil {
		return nil, ErrWrongKey
	}
	return SessionWithID(secret, id[:])
}
