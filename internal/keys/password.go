package keys

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/argon2"
)

// KDFParams are Argon2id parameters (RFC 9106). They are stored in every key
// table entry, so a file opens with the password alone.
type KDFParams struct {
	Time    uint32 // passes
	Memory  uint32 // KiB
	Threads uint8
}

// DefaultKDF is RFC 9106's second recommended option: t=3, m=64 MiB, p=4.
var DefaultKDF = KDFParams{Time: 3, Memory: 64 * 1024, Threads: 4}

// TestKDF is a cheap setting for tests only. Files made with it are as
// valid as any other, just easy to brute-force.
var TestKDF = KDFParams{Time: 1, Memory: 64, Threads: 1}

// Limits on parameters read from a file, so a hostile file cannot make
// ferry allocate without bound.
const (
	maxKDFMemory  = 1024 * 1024 // KiB: 1 GiB, 16x the default
	maxKDFTime    = 16
	saltSize      = 16
	maxHintLength = 1024
)

// Validate checks parameters read from a file.
func (p KDFParams) Validate() error {
	switch {
	case p.Time == 0 || p.Time > maxKDFTime:
		return fmt.Errorf("argon2id time %d out of range 1..%d", p.Time, maxKDFTime)
	case p.Threads == 0:
		return errors.New("argon2id threads is 0")
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxKDFMemory:
		return fmt.Errorf("argon2id memory %d KiB out of range", p.Memory)
	}
	return nil
}

// PasswordKey is a secret key derived from a password: the key-encryption
// key of password mode. Its salt and parameters travel with every wrap.
type PasswordKey struct {
	Params KDFParams
	Salt   [saltSize]byte
	Hint   string
	kek    cipher.AEAD // AES-256-GCM keyed with the Argon2id output
	raw    [SecretSize]byte
}

// NewPasswordKey derives a secret key from password with a fresh salt.
func NewPasswordKey(password []byte, p KDFParams, hint string) (*PasswordKey, error) {
	var salt [saltSize]byte
	if _, err := rand.Read(salt[:]); err != nil {
		return nil, fmt.Errorf("generate salt: %w", err)
	}
	return DerivePasswordKey(password, p, salt, hint)
}

// DerivePasswordKey derives the secret key for a known salt.
func DerivePasswordKey(password []byte, p KDFParams, salt [saltSize]byte, hint string) (*PasswordKey, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if len(password) == 0 {
		return nil, errors.New("password is empty")
	}
	if len(hint) > maxHintLength {
		return nil, fmt.Errorf("password hint is %d bytes, at most %d", len(hint), maxHintLength)
	}
	k := argon2.IDKey(password, salt[:], p.Time, p.Memory, p.Threads, SecretSize)
	return PasswordKeyFromRaw(p, salt, hint, k)
}

// PasswordKeyFromRaw rebuilds a password key from its derived bytes, as
// the controller keeps them sealed so that sessions need no password.
func PasswordKeyFromRaw(p KDFParams, salt [saltSize]byte, hint string, raw []byte) (*PasswordKey, error) {
	if len(raw) != SecretSize {
		return nil, fmt.Errorf("password key is %d bytes, want %d", len(raw), SecretSize)
	}
	kek, err := newGCM(raw)
	if err != nil {
		return nil, err
	}
	pk := &PasswordKey{Params: p, Salt: salt, Hint: hint, kek: kek}
	copy(pk.raw[:], raw)
	return pk, nil
}

// Raw returns a copy of the derived key bytes, for sealed storage.
func (k *PasswordKey) Raw() []byte { return append([]byte(nil), k.raw[:]...) }

// String never prints the key.
func (k *PasswordKey) String() string { return "password-key(redacted)" }

// GoString keeps %#v from printing the key.
func (k *PasswordKey) GoString() string { return k.String() }

// Format prints the redaction for every verb.
func (k *PasswordKey) Format(f fmt.State, verb rune) { io.WriteString(f, k.String()) }

// PasswordEntry is the wrapped form of a session secret under a password.
// Encoding (all little-endian):
//
//	time u32 | memory u32 | threads u8 | salt [16] | nonce [12] |
//	wrapped [48] (AES-256-GCM of the secret, AAD = "ferry/v1/wrap" || key id) |
//	hint length u16 | hint
type PasswordEntry struct {
	Params  KDFParams
	Salt    [saltSize]byte
	Nonce   [12]byte
	Wrapped [SecretSize + 16]byte
	Hint    string
}

const passwordEntryFixed = 4 + 4 + 1 + saltSize + 12 + SecretSize + 16 + 2

func wrapAAD(id KeyID) []byte { return append([]byte("ferry/v1/wrap"), id[:]...) }

// Wrap seals s under the password key with a random nonce.
func (k *PasswordKey) Wrap(s *Session) (*PasswordEntry, error) {
	return k.WrapFrom(rand.Reader, s)
}

// WrapFrom seals s under the password key, reading the nonce from rand.
// Only tests that need reproducible bytes (golden files) pass anything but
// crypto/rand.Reader.
func (k *PasswordKey) WrapFrom(rand io.Reader, s *Session) (*PasswordEntry, error) {
	e := &PasswordEntry{Params: k.Params, Salt: k.Salt, Hint: k.Hint}
	if _, err := io.ReadFull(rand, e.Nonce[:]); err != nil {
		return nil, fmt.Errorf("generate wrap nonce: %w", err)
	}
	out := k.kek.Seal(nil, e.Nonce[:], s.secret[:], wrapAAD(s.id))
	copy(e.Wrapped[:], out)
	return e, nil
}

// Unwrap opens e with the password key and checks the result against id.
func (k *PasswordKey) Unwrap(e *PasswordEntry, id KeyID) (*Session, error) {
	if e.Params != k.Params || e.Salt != k.Salt {
		return nil, ErrWrongKey
	}
	secret, err := k.kek.Open(nil, e.Nonce[:], e.Wrapped[:], wrapAAD(id))
	if err != nil {
		return nil, ErrWrongKey
	}
	return SessionWithID(secret, id[:])
}

// Marshal encodes the entry.
func (e *PasswordEntry) Marshal() []byte {
	b := make([]byte, 0, passwordEntryFixed+len(e.Hint))
	b = binary.LittleEndian.AppendUint32(b, e.Params.Time)
	b = binary.LittleEndian.AppendUint32(b, e.Params.Memory)
	b = append(b, e.Params.Threads)
	b = append(b, e.Salt[:]...)
	b = append(b, e.Nonce[:]...)
	b = append(b, e.Wrapped[:]...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(e.Hint)))
	return append(b, e.Hint...)
}

// ParsePasswordEntry decodes an entry and validates its parameters.
func ParsePasswordEntry(b []byte) (*PasswordEntry, error) {
	if len(b) < passwordEntryFixed {
		return nil, fmt.Errorf("password entry is %d bytes, want at least %d", len(b), passwordEntryFixed)
	}
	e := &PasswordEntry{}
	e.Params.Time = binary.LittleEndian.Uint32(b[0:])
	e.Params.Memory = binary.LittleEndian.Uint32(b[4:])
	e.Params.Threads = b[8]
	r := b[9:]
	r = r[copy(e.Salt[:], r):]
	r = r[copy(e.Nonce[:], r):]
	r = r[copy(e.Wrapped[:], r):]
	n := int(binary.LittleEndian.Uint16(r))
	r = r[2:]
	if n != len(r) || n > maxHintLength {
		return nil, fmt.Errorf("password entry hint length %d does not match the %d bytes left", n, len(r))
	}
	e.Hint = string(r)
	if err := e.Params.Validate(); err != nil {
		return nil, fmt.Errorf("password entry: %w", err)
	}
	return e, nil
}

// PasswordCache derives each (password, salt, parameters) secret key once,
// so a chain whose files share a salt costs one Argon2id run, not one a file.
type PasswordCache struct {
	mu       sync.Mutex
	password []byte
	keys     map[[saltSize + 9]byte]*PasswordKey
}

// NewPasswordCache holds a password for deriving keys on demand.
func NewPasswordCache(password []byte) *PasswordCache {
	return &PasswordCache{password: bytes.Clone(password), keys: map[[saltSize + 9]byte]*PasswordKey{}}
}

// Key returns the secret key for the salt and parameters of entry e.
func (c *PasswordCache) Key(e *PasswordEntry) (*PasswordKey, error) {
	var k [saltSize + 9]byte
	copy(k[:], e.Salt[:])
	binary.LittleEndian.PutUint32(k[saltSize:], e.Params.Time)
	binary.LittleEndian.PutUint32(k[saltSize+4:], e.Params.Memory)
	k[saltSize+8] = e.Params.Threads
	c.mu.Lock()
	defer c.mu.Unlock()
	if pk, ok := c.keys[k]; ok {
		return pk, nil
	}
	pk, err := DerivePasswordKey(c.password, e.Params, e.Salt, e.Hint)
	if err != nil {
		return nil, err
	}
	c.keys[k] = pk
	return pk, nil
}
