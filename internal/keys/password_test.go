package keys

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
)

var testPassword = []byte("correct horse battery staple")

func testSession(t testing.TB) *Session {
	t.Helper()
	s, err := SessionFromSecret(testSecret())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testPasswordKey(t testing.TB, password []byte, hint string) *PasswordKey {
	t.Helper()
	k, err := DerivePasswordKey(password, TestKDF, [saltSize]byte{1, 2, 3}, hint)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestWrapUnwrap(t *testing.T) {
	s := testSession(t)
	k, err := NewPasswordKey(testPassword, TestKDF, "xkcd")
	if err != nil {
		t.Fatal(err)
	}
	e, err := k.Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	if e.Params != TestKDF || e.Salt != k.Salt || e.Hint != "xkcd" {
		t.Errorf("entry carries %+v salt %x hint %q", e.Params, e.Salt, e.Hint)
	}
	got, err := k.Unwrap(e, s.ID())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Secret(), s.Secret()) || got.ID() != s.ID() {
		t.Fatal("unwrapped a different secret")
	}

	// A second key derived from the entry alone (what a reader does).
	k2, err := DerivePasswordKey(testPassword, e.Params, e.Salt, e.Hint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k2.Unwrap(e, s.ID()); err != nil {
		t.Fatalf("unwrap with a re-derived key: %v", err)
	}

	// Wraps use fresh nonces.
	e2, err := k.Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	if e2.Nonce == e.Nonce || e2.Wrapped == e.Wrapped {
		t.Error("two wraps share a nonce")
	}
}

func TestWrapFromIsDeterministic(t *testing.T) {
	s := testSession(t)
	k := testPasswordKey(t, testPassword, "")
	nonce := bytes.Repeat([]byte{0xA5}, 12)
	a, err := k.WrapFrom(bytes.NewReader(nonce), s)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.WrapFrom(bytes.NewReader(nonce), s)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Marshal(), b.Marshal()) || !bytes.Equal(a.Nonce[:], nonce) {
		t.Fatal("WrapFrom with the same randomness gives different entries")
	}
	if _, err := k.WrapFrom(bytes.NewReader(nonce[:11]), s); err == nil {
		t.Error("WrapFrom with 11 bytes of randomness succeeded")
	}
	if _, err := k.WrapFrom(iotest.ErrReader(errors.New("no entropy")), s); err == nil {
		t.Error("WrapFrom with a failing reader succeeded")
	}
}

func TestUnwrapWrongPassword(t *testing.T) {
	s := testSession(t)
	e, err := testPasswordKey(t, testPassword, "").Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"correct horse battery stapl", "Correct horse battery staple", "x"} {
		wrong := testPasswordKey(t, []byte(pw), "")
		if _, err := wrong.Unwrap(e, s.ID()); !errors.Is(err, ErrWrongKey) {
			t.Errorf("password %q: err = %v, want ErrWrongKey", pw, err)
		}
	}
	// Right password, other parameters or salt than the entry's.
	k := testPasswordKey(t, testPassword, "")
	other, err := DerivePasswordKey(testPassword, KDFParams{Time: 2, Memory: 64, Threads: 1}, k.Salt, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Unwrap(e, s.ID()); !errors.Is(err, ErrWrongKey) {
		t.Errorf("other params: err = %v, want ErrWrongKey", err)
	}
	// Right key, wrong key id (the entry of another secret).
	if _, err := k.Unwrap(e, KeyID{1}); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong id: err = %v, want ErrWrongKey", err)
	}
}

// Every byte of a marshalled entry is either authenticated (the wrap fails
// with ErrWrongKey), structural (the entry no longer parses), or the hint.
func TestUnwrapTamperedEntry(t *testing.T) {
	s := testSession(t)
	hint := "a hint"
	k := testPasswordKey(t, testPassword, hint)
	e, err := k.Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	good := e.Marshal()
	cache := NewPasswordCache(testPassword)
	hintStart := passwordEntryFixed
	for i := range good {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			b := bytes.Clone(good)
			b[i] ^= mask
			pe, err := ParsePasswordEntry(b)
			if err != nil {
				continue // rejected as malformed: detected
			}
			// Derive the key from the entry as a reader would, so flipped
			// parameters and salt reach the AEAD instead of the equality check.
			pk, err := cache.Key(pe)
			if err != nil {
				t.Fatalf("byte %d mask %#x: derive: %v", i, mask, err)
			}
			_, err = pk.Unwrap(pe, s.ID())
			switch {
			case i >= hintStart:
				// The hint is not covered by the wrap's AAD: a changed hint
				// goes unnoticed here (the key table CRC is the only check).
				if err != nil {
					t.Errorf("byte %d (hint) mask %#x: %v", i, mask, err)
				}
			case !errors.Is(err, ErrWrongKey):
				t.Errorf("byte %d mask %#x: err = %v, want ErrWrongKey", i, mask, err)
			}
			// The fixed key must refuse it too (parameters or salt differ,
			// or the AEAD fails).
			if i < hintStart-2 {
				if _, err := k.Unwrap(pe, s.ID()); !errors.Is(err, ErrWrongKey) {
					t.Errorf("byte %d mask %#x with the original key: err = %v, want ErrWrongKey", i, mask, err)
				}
			}
		}
	}
}

func TestPasswordEntryEncoding(t *testing.T) {
	e := &PasswordEntry{
		Params: KDFParams{Time: 0x01020304, Memory: 0x05060708, Threads: 9},
		Hint:   "hint",
	}
	for i := range e.Salt {
		e.Salt[i] = 0x10 + byte(i)
	}
	for i := range e.Nonce {
		e.Nonce[i] = 0x20 + byte(i)
	}
	for i := range e.Wrapped {
		e.Wrapped[i] = 0x30 + byte(i)
	}
	b := e.Marshal()
	if len(b) != 87+4 || passwordEntryFixed != 87 {
		t.Fatalf("entry is %d bytes, fixed part %d; want 91 and 87", len(b), passwordEntryFixed)
	}
	// The layout docs/format.md gives.
	check := func(name string, off int, want []byte) {
		t.Helper()
		if !bytes.Equal(b[off:off+len(want)], want) {
			t.Errorf("%s at %d = %x, want %x", name, off, b[off:off+len(want)], want)
		}
	}
	check("time", 0, []byte{4, 3, 2, 1})
	check("memory", 4, []byte{8, 7, 6, 5})
	check("threads", 8, []byte{9})
	check("salt", 9, e.Salt[:])
	check("nonce", 25, e.Nonce[:])
	check("wrapped", 37, e.Wrapped[:])
	check("hint length", 85, []byte{4, 0})
	check("hint", 87, []byte("hint"))

	// Parameters that Validate rejects do not parse; use valid ones to
	// check the round trip.
	e.Params = DefaultKDF
	got, err := ParsePasswordEntry(e.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if *got != *e {
		t.Errorf("round trip: got %+v, want %+v", got, e)
	}
	if !bytes.Equal(got.Marshal(), e.Marshal()) {
		t.Error("parse then marshal changes the bytes")
	}

	for _, hint := range []string{"", strings.Repeat("h", maxHintLength)} {
		e.Hint = hint
		if got, err := ParsePasswordEntry(e.Marshal()); err != nil || got.Hint != hint {
			t.Errorf("hint of %d bytes: %v", len(hint), err)
		}
	}
}

func TestParsePasswordEntryRejects(t *testing.T) {
	valid := (&PasswordEntry{Params: TestKDF, Hint: "abc"}).Marshal()
	withParams := func(p KDFParams) []byte {
		b := bytes.Clone(valid)
		binary.LittleEndian.PutUint32(b[0:], p.Time)
		binary.LittleEndian.PutUint32(b[4:], p.Memory)
		b[8] = p.Threads
		return b
	}
	withHintLen := func(n uint16) []byte {
		b := bytes.Clone(valid)
		binary.LittleEndian.PutUint16(b[85:], n)
		return b
	}
	long := (&PasswordEntry{Params: TestKDF, Hint: strings.Repeat("h", maxHintLength+1)}).Marshal()
	cases := map[string][]byte{
		"empty":               nil,
		"short":               valid[:passwordEntryFixed-1],
		"hint length short":   withHintLen(2),
		"hint length long":    withHintLen(4),
		"hint length huge":    withHintLen(0xffff),
		"trailing byte":       append(bytes.Clone(valid), 0),
		"hint too long":       long,
		"zero time":           withParams(KDFParams{Time: 0, Memory: 64, Threads: 1}),
		"huge time":           withParams(KDFParams{Time: 0xffffffff, Memory: 64, Threads: 1}),
		"huge memory":         withParams(KDFParams{Time: 1, Memory: 0xffffffff, Threads: 1}),
		"memory over the max": withParams(KDFParams{Time: 1, Memory: maxKDFMemory + 1, Threads: 1}),
		"zero threads":        withParams(KDFParams{Time: 1, Memory: 64, Threads: 0}),
		"memory < 8×threads":  withParams(KDFParams{Time: 1, Memory: 8*255 - 1, Threads: 255}),
	}
	for name, b := range cases {
		if e, err := ParsePasswordEntry(b); err == nil {
			t.Errorf("%s: parsed %+v", name, e)
		}
	}
}

func TestValidateKDFParams(t *testing.T) {
	for _, c := range []struct {
		p  KDFParams
		ok bool
	}{
		{DefaultKDF, true},
		{TestKDF, true},
		{KDFParams{Time: 1, Memory: 8, Threads: 1}, true},
		{KDFParams{Time: maxKDFTime, Memory: maxKDFMemory, Threads: 255}, true},
		{KDFParams{Time: 0, Memory: 64, Threads: 1}, false},
		{KDFParams{Time: maxKDFTime + 1, Memory: 64, Threads: 1}, false},
		{KDFParams{Time: 1, Memory: maxKDFMemory + 1, Threads: 1}, false},
		{KDFParams{Time: 1, Memory: 1 << 31, Threads: 1}, false},
		{KDFParams{Time: 1, Memory: 0xffffffff, Threads: 4}, false},
		{KDFParams{Time: 1, Memory: 0, Threads: 1}, false},
		{KDFParams{Time: 1, Memory: 7, Threads: 1}, false},
		{KDFParams{Time: 1, Memory: 31, Threads: 4}, false},
		{KDFParams{Time: 1, Memory: 64, Threads: 0}, false},
	} {
		if err := c.p.Validate(); (err == nil) != c.ok {
			t.Errorf("Validate(%+v) = %v, want ok=%v", c.p, err, c.ok)
		}
	}
	// DerivePasswordKey refuses what Validate refuses, before running Argon2id.
	if _, err := DerivePasswordKey(testPassword, KDFParams{Time: 1, Memory: 0xffffffff, Threads: 1}, [saltSize]byte{}, ""); err == nil {
		t.Error("DerivePasswordKey accepted 4 TiB of memory")
	}
}

func TestDerivePasswordKeyRejects(t *testing.T) {
	if _, err := DerivePasswordKey(nil, TestKDF, [saltSize]byte{}, ""); err == nil {
		t.Error("empty password accepted")
	}
	if _, err := DerivePasswordKey(testPassword, TestKDF, [saltSize]byte{}, strings.Repeat("h", maxHintLength+1)); err == nil {
		t.Error("over-long hint accepted")
	}
}

func TestPasswordCache(t *testing.T) {
	s := testSession(t)
	c := NewPasswordCache(testPassword)
	k1 := testPasswordKey(t, testPassword, "")
	e1, err := k1.Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	e1b, err := k1.Wrap(s) // another file of the chain: same salt, new nonce
	if err != nil {
		t.Fatal(err)
	}
	k2, err := NewPasswordKey(testPassword, TestKDF, "")
	if err != nil {
		t.Fatal(err)
	}
	e2, err := k2.Wrap(s)
	if err != nil {
		t.Fatal(err)
	}
	e3 := *e1
	e3.Params.Time = 2 // same salt, other parameters

	// Concurrent callers with the same salt get the one derived key.
	var wg sync.WaitGroup
	got := make([]*PasswordKey, 16)
	for i := range got {
		wg.Go(func() {
			e := e1
			if i%2 == 1 {
				e = e1b
			}
			k, err := c.Key(e)
			if err != nil {
				t.Error(err)
			}
			got[i] = k
		})
	}
	wg.Wait()
	for i, k := range got {
		if k != got[0] {
			t.Fatalf("caller %d got a second derivation for the same salt", i)
		}
	}
	if _, err := got[0].Unwrap(e1b, s.ID()); err != nil {
		t.Fatal(err)
	}
	if len(c.keys) != 1 {
		t.Fatalf("cache holds %d keys after one salt, want 1", len(c.keys))
	}

	kb, err := c.Key(e2)
	if err != nil {
		t.Fatal(err)
	}
	if kb == got[0] {
		t.Fatal("a different salt returned the cached key")
	}
	if _, err := kb.Unwrap(e2, s.ID()); err != nil {
		t.Fatal(err)
	}
	kc, err := c.Key(&e3)
	if err != nil {
		t.Fatal(err)
	}
	if kc == got[0] || kc.Params != e3.Params {
		t.Fatal("other parameters with the same salt returned the cached key")
	}
	if len(c.keys) != 3 {
		t.Fatalf("cache holds %d keys, want 3", len(c.keys))
	}

	// The cache copied the password.
	pw := bytes.Clone(testPassword)
	c2 := NewPasswordCache(pw)
	pw[0] = 'X'
	k, err := c2.Key(e1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Unwrap(e1, s.ID()); err != nil {
		t.Fatal("the cache kept a reference to the caller's password slice")
	}

	// A wrong password is cached too, and fails to unwrap.
	bad := NewPasswordCache([]byte("wrong"))
	kw, err := bad.Key(e1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kw.Unwrap(e1, s.ID()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong password through the cache: %v", err)
	}
}
