package grant

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

func TestSignVerify(t *testing.T) {
	s, err := NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	g := &targetv1.Grant{SessionId: "s1", Job: "j", Repository: "r", Backup: "j", SourceAgent: "a", ExpiresUnix: now.Add(time.Minute).Unix()}
	msg, sig, err := s.Sign(g)
	if err != nil {
		t.Fatal(err)
	}
	trusted := []ed25519.PublicKey{s.Public()}
	got, err := Verify(trusted, msg, sig, now)
	if err != nil || got.SessionId != "s1" || got.SourceAgent != "a" {
		t.Fatalf("verify: %v %v", got, err)
	}
	other, _ := NewSigner()
	for name, tc := range map[string]struct {
		trusted  []ed25519.PublicKey
		msg, sig []byte
		now      time.Time
		says     string
	}{
		"expired":          {trusted, msg, sig, now.Add(time.Minute), "expired"},
		"untrusted signer": {[]ed25519.PublicKey{other.Public()}, msg, sig, now, "not the controller's"},
		"no trusted key":   {nil, msg, sig, now, "not the controller's"},
		"tampered grant":   {trusted, append(append([]byte(nil), msg...), 0x10, 0x01), sig, now, "not the controller's"},
		"no signature":     {trusted, msg, nil, now, "no signature"},
	} {
		_, err := Verify(tc.trusted, tc.msg, tc.sig, tc.now)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: want ErrInvalid saying %q, got %v", name, tc.says, err)
		}
	}
	// A signature over the bare message (without the context prefix) is
	// not a grant signature.
	if _, err := Verify(trusted, msg, ed25519.Sign(s.key, msg), now); !errors.Is(err, ErrInvalid) {
		t.Fatalf("signature without the grant context accepted: %v", err)
	}
}

func TestLoadOrCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "grant.key")
	a, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	b, err := LoadOrCreate(path)
	if err != nil || !a.Public().Equal(b.Public()) {
		t.Fatalf("reloaded key differs: %v", err)
	}
	os.WriteFile(path, []byte("short"), 0o600)
	if _, err := LoadOrCreate(path); err == nil {
		t.Fatal("a truncated key file was accepted")
	}
}
