package backup

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// rewrapAll rewraps every file of backup b from password from to password
// to, rewriting only the key tables.
func rewrapAll(t *testing.T, r *repo.Repo, b string, from, to []byte) {
	t.Helper()
	l, err := r.Lock(b)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ix, err := r.Index(b)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := keys.NewPasswordKey(to, keys.TestKDF, "the new one")
	if err != nil {
		t.Fatal(err)
	}
	kr := keyring.New(from)
	for _, p := range ix.Points() {
		f, fd, err := format.OpenPath(r.Path(b, p))
		if err != nil {
			t.Fatal(err)
		}
		s, err := kr.Session(f, f.Header.Secrets[0])
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		kt, err := keyring.PasswordTable(pk, s)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.RewriteKeyTable(b, p, kt); err != nil {
			t.Fatal(err)
		}
	}
}

// outsideKeyTable returns a file's bytes with its key table section cut out.
func outsideKeyTable(t *testing.T, path string) []byte {
	t.Helper()
	f, fd, err := format.OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	fd.Close()
	b, _ := os.ReadFile(path)
	return append(append([]byte(nil), b[:f.KeyTableOffset]...), b[f.Footer.RecordsOffset:]...)
}

// TestRewrapRewritesOnlyTheKeyTable: after a rewrap to a new password the
// records, block map, catalog and footer are byte-identical, every point
// restores with the new password, and the old one no longer opens them.
func TestRewrapRewritesOnlyTheKeyTable(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "data")
	writeMixed(t, src, 31, 2<<20)
	mustBackup(t, r, "b", src, testOptions(testPassword))
	f, _ := os.OpenFile(src, os.O_RDWR, 0)
	f.WriteAt([]byte("day two"), 300<<10)
	f.Close()
	mustBackup(t, r, "b", src, testOptions(testPassword))
	ix, _ := r.Index("b")
	before := map[string][]byte{}
	for _, p := range ix.Points() {
		before[p.File] = outsideKeyTable(t, r.Path("b", p))
	}
	newPW := []byte("the new password")
	rewrapAll(t, r, "b", testPassword, newPW)
	ix, _ = r.Index("b")
	for _, p := range ix.Points() {
		if !bytes.Equal(before[p.File], outsideKeyTable(t, r.Path("b", p))) {
			t.Fatalf("%s: bytes outside the key table changed", p.File)
		}
	}
	for _, p := range ix.Points() {
		to := filepath.Join(t.TempDir(), "out")
		mustRestore(t, r, "b", p.FileID.String(), to, newPW)
	}
	_, err := Restore(context.Background(), r, "b", filepath.Join(t.TempDir(), "old"), RestoreOptions{Keys: keyring.New(testPassword)})
	if !errors.Is(err, keyring.ErrWrongPassword) {
		t.Fatalf("the old password still opens the rewrapped points: %v", err)
	}
	if _, err := Verify(context.Background(), r, "b", VerifyOptions{Keys: keyring.New(newPW)}); err != nil {
		t.Fatal(err)
	}
}

// TestKeyTableJournalRecovery: a rewrite cut off after its journal was
// written is finished when the backup is next locked; a torn journal is
// dropped and leaves the file as it was.
func TestKeyTableJournalRecovery(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "data")
	writeMixed(t, src, 32, 1<<20)
	mustBackup(t, r, "b", src, testOptions(testPassword))
	ix, _ := r.Index("b")
	p := ix.Points()[0]
	path := r.Path("b", p)
	orig, _ := os.ReadFile(path)

	// Rewrap, then put the old bytes back and tear the key table, keeping
	// the journal the rewrite wrote: what a crash mid-write leaves.
	newPW := []byte("after the crash")
	rewrapAll(t, r, "b", testPassword, newPW)
	rewrapped, _ := os.ReadFile(path)
	f, _, err := format.OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	section := rewrapped[f.KeyTableOffset:f.Footer.RecordsOffset]
	if err := writeTestJournal(path, f.KeyTableOffset, section); err != nil {
		t.Fatal(err)
	}
	torn := append([]byte(nil), orig...)
	copy(torn[f.KeyTableOffset:], section[:len(section)/3])
	os.WriteFile(path, torn, 0o600)
	if _, _, err := format.OpenPath(path); err == nil {
		t.Fatal("the torn key table opens")
	}
	l, err := r.Lock("b") // recovery replays the journal
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, rewrapped) {
		t.Fatal("the journal was not replayed")
	}
	if _, err := os.Stat(path + ".kt-journal"); !os.IsNotExist(err) {
		t.Fatal("the journal is still there")
	}
	mustRestore(t, r, "b", "", filepath.Join(t.TempDir(), "out"), newPW)

	// A torn journal: dropped, file untouched.
	os.WriteFile(path+".kt-journal", []byte("half a journ"), 0o600)
	l, err = r.Lock("b")
	if err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	if got, _ := os.ReadFile(path); !bytes.Equal(got, rewrapped) {
		t.Fatal("a torn journal changed the file")
	}
	if _, err := os.Stat(path + ".kt-journal"); !os.IsNotExist(err) {
		t.Fatal("the torn journal is still there")
	}
}
