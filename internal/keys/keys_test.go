package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
)

// hkdfSHA256 is RFC 5869 with an empty salt, written out from the RFC so the
// test does not check crypto/hkdf against itself. Only one or two output
// blocks are ever needed here.
func hkdfSHA256(secret []byte, info string, n int) []byte {
	ext := hmac.New(sha256.New, make([]byte, sha256.Size)) // salt: HashLen zeros
	ext.Write(secret)
	prk := ext.Sum(nil)
	var okm, t []byte
	for i := byte(1); len(okm) < n; i++ {
		m := hmac.New(sha256.New, prk)
		m.Write(t)
		m.Write([]byte(info))
		m.Write([]byte{i})
		t = m.Sum(nil)
		okm = append(okm, t...)
	}
	return okm[:n]
}

func testSecret() []byte {
	s := make([]byte, SecretSize)
	for i := range s {
		s[i] = byte(0x40 + i)
	}
	return s
}

func gcm(t *testing.T, key []byte) cipher.AEAD {
	t.Helper()
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestSessionDerivation(t *testing.T) {
	secret := testSecret()
	s, err := SessionFromSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	// The info strings are part of the file format.
	dataKey := hkdfSHA256(secret, "ferry/v1/data", 32)
	metaKey := hkdfSHA256(secret, "ferry/v1/meta", 32)
	id := hkdfSHA256(secret, "ferry/v1/key-id", 16)

	if got := s.ID(); !bytes.Equal(got[:], id) {
		t.Errorf("ID = %x, want HKDF(\"ferry/v1/key-id\") = %x", got, id)
	}
	if !s.Matches(KeyID(id)) {
		t.Error("Matches(own id) = false")
	}
	if s.Matches(KeyID{}) {
		t.Error("Matches(zero id) = true")
	}
	if !bytes.Equal(s.Secret(), secret) {
		t.Error("Secret() does not return the secret")
	}
	s.Secret()[0] ^= 1 // must be a copy
	if !bytes.Equal(s.Secret(), secret) {
		t.Error("Secret() returns the session's own array")
	}

	nonce := make([]byte, 12)
	nonce[11] = 7
	aad := []byte("aad")
	msg := []byte("a block of plaintext")
	for _, c := range []struct {
		name string
		aead cipher.AEAD
		key  []byte
	}{{"data", s.Data(), dataKey}, {"meta", s.Meta(), metaKey}} {
		if c.aead.NonceSize() != 12 || c.aead.Overhead() != 16 {
			t.Errorf("%s AEAD nonce %d overhead %d, want 12 and 16", c.name, c.aead.NonceSize(), c.aead.Overhead())
		}
		want := gcm(t, c.key).Seal(nil, nonce, msg, aad)
		if got := c.aead.Seal(nil, nonce, msg, aad); !bytes.Equal(got, want) {
			t.Errorf("%s AEAD is not AES-256-GCM under HKDF(%q)", c.name, "ferry/v1/"+c.name)
		}
		if got, err := c.aead.Open(nil, nonce, want, aad); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("%s AEAD open: %q, %v", c.name, got, err)
		}
	}
	if bytes.Equal(dataKey, metaKey) {
		t.Fatal("data key equals metakey")
	}

	s2, err := SessionFromSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	if s2.ID() != s.ID() {
		t.Error("derivation is not deterministic")
	}
}

func TestSessionFromSecretLength(t *testing.T) {
	for _, n := range []int{0, 16, 31, 33, 64} {
		if _, err := SessionFromSecret(make([]byte, n)); err == nil {
			t.Errorf("SessionFromSecret(%d bytes) succeeded", n)
		}
	}
}

func TestNewSession(t *testing.T) {
	a, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a.Secret(), b.Secret()) || a.ID() == b.ID() {
		t.Fatal("two new sessions share a secret")
	}
	if a.ID().IsZero() {
		t.Fatal("new session has the zero key id")
	}
	c, err := SessionFromSecret(a.Secret())
	if err != nil || c.ID() != a.ID() {
		t.Fatalf("re-deriving a session: %v, id %x want %x", err, c.ID(), a.ID())
	}
}

// leaks reports whether out contains the secret as fmt renders a byte
// array with verb, or in any of the usual hex and decimal forms.
func leaks(out, verb string, secret []byte) bool {
	forms := []string{
		strings.Trim(fmt.Sprintf(verb, [SecretSize]byte(secret)), "[]{}"),
		fmt.Sprintf("%x", secret),
		fmt.Sprintf("%X", secret),
		strings.Trim(fmt.Sprintf("%v", secret[:8]), "[]"),
		fmt.Sprintf("%#v", secret[:8])[7:20], // 0x40, 0x41, ...
		string(secret),
	}
	for _, f := range forms {
		if strings.Contains(out, f) {
			return true
		}
	}
	return false
}

func TestSessionNeverPrintsSecret(t *testing.T) {
	secret := testSecret()
	s, err := SessionFromSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	id := s.ID()
	if got, want := s.String(), fmt.Sprintf("session(%x)", id[:4]); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if got := s.GoString(); got != s.String() {
		t.Errorf("GoString() = %q, want %q", got, s.String())
	}
	wrapped := struct {
		S    *Session
		List []*Session
		Map  map[string]*Session
	}{s, []*Session{s}, map[string]*Session{"k": s}}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X"} {
		for _, v := range []any{s, wrapped} {
			if out := fmt.Sprintf(verb, v); leaks(out, verb, secret) {
				t.Errorf("fmt.Sprintf(%q, %T) prints the secret: %s", verb, v, out)
			}
		}
	}

	// fmt routes only %v %s %x %X %q to String (and %#v to GoString); any
	// other verb prints a *Session as &{[secret bytes] ...}. Reported; the
	// fix is for Session to implement fmt.Formatter.
	var leaked []string
	for _, verb := range []string{"%d", "%o", "%b", "%c", "%U", "%e"} {
		if out := fmt.Sprintf(verb, s); leaks(out, verb, secret) {
			leaked = append(leaked, verb)
		}
	}
	if len(leaked) > 0 {
		t.Fatalf("fmt verbs %v print the session secret", leaked)
	}
}
