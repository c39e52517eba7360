package keys

import (
	"errors"
	"strings"
	"testing"
)

func TestRecoveryKey(t *testing.T) {
	priv, err := NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ParseRecoveryPublic(priv.Public().Marshal())
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSession()
	entry, err := pub.Seal(s)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseRecoveryPrivate(priv.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	got, err := back.Open(entry, s.ID())
	if err != nil || got.ID() != s.ID() {
		t.Fatalf("open: %v", err)
	}
	other, _ := NewRecoveryKey()
	if _, err := other.Open(entry, s.ID()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("another recovery key opened the entry: %v", err)
	}
	s2, _ := NewSession()
	if _, err := priv.Open(entry, s2.ID()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("the entry opened for another secret id: %v", err)
	}
	entry[len(entry)-1] ^= 1
	if _, err := priv.Open(entry, s.ID()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("a tampered entry opened: %v", err)
	}
	if strings.Contains(priv.String(), priv.Marshal()[30:40]) {
		t.Fatal("String prints the private key")
	}
	if _, err := ParseRecoveryPrivate("garbage"); err == nil {
		t.Fatal("garbage parsed as a recovery key")
	}
}
