package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/keyring"
)

// TestWrongPasswordRefusedBeforeWriting: a backup into an encrypted chain
// with the wrong password fails before it writes anything, says the
// password is wrong and shows the stored hint; restore and verify refuse
// it the same way and write nothing.
func TestWrongPasswordRefusedBeforeWriting(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "data")
	writeMixed(t, src, 3, 700<<10)
	o := testOptions(testPassword)
	o.Hint = "the one on the blue card"
	mustBackup(t, r, "b", src, o)
	before := snapshotDir(t, r.Dir)

	bad := testOptions([]byte("Tr0ub4dor&3"))
	_, err := Backup(context.Background(), r, "b", src, bad)
	if !errors.Is(err, keyring.ErrWrongPassword) {
		t.Fatalf("backup with a wrong password: want ErrWrongPassword, got %v", err)
	}
	for _, want := range []string{"wrong password", "the one on the blue card"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "Tr0ub4dor") || strings.Contains(err.Error(), string(testPassword)) {
		t.Errorf("error %q shows a password", err)
	}
	sameSnapshot(t, "after a refused backup", before, snapshotDir(t, r.Dir))

	to := filepath.Join(t.TempDir(), "out")
	_, err = Restore(context.Background(), r, "b", to, RestoreOptions{Keys: keyring.New([]byte("Tr0ub4dor&3"))})
	if !errors.Is(err, keyring.ErrWrongPassword) || !strings.Contains(err.Error(), "blue card") {
		t.Fatalf("restore with a wrong password: %v", err)
	}
	if _, err := os.Lstat(to); err == nil {
		t.Fatalf("a refused restore created %s", to)
	}
	_, err = Restore(context.Background(), r, "b", to, RestoreOptions{})
	if !errors.Is(err, keyring.ErrNeedKey) {
		t.Fatalf("restore without a password: want ErrNeedKey, got %v", err)
	}
	if _, err := Verify(context.Background(), r, "b", VerifyOptions{Keys: keyring.New([]byte("nope"))}); !errors.Is(err, keyring.ErrWrongPassword) {
		t.Fatalf("verify with a wrong password: %v", err)
	}
	// Keyless verify needs no password at all.
	if _, err := Verify(context.Background(), r, "b", VerifyOptions{Keyless: true}); err != nil {
		t.Fatalf("keyless verify: %v", err)
	}
	// Without a password, an encrypted chain is not silently continued in
	// plaintext.
	if _, err := Backup(context.Background(), r, "b", src, testOptions(nil)); !errors.Is(err, ErrEncryptedChain) {
		t.Fatalf("backup without a password into an encrypted chain: %v", err)
	}
	sameSnapshot(t, "after refused operations", before, snapshotDir(t, r.Dir))
	// The right password still works and continues the chain.
	res := mustBackup(t, r, "b", src, testOptions(testPassword))
	if res.Sequence != 2 {
		t.Fatalf("want an incremental of sequence 2, got %d", res.Sequence)
	}
}
