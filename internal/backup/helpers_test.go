package backup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

var testPassword = []byte("correct horse battery staple")

// testOptions are fast options: the cheap test KDF, small blocks.
func testOptions(password []byte) Options {
	return Options{
		BlockSize:   256 << 10,
		Compression: Compression{Algorithm: format.CompressionZstd, Level: 1},
		Password:    password,
		KDF:         keys.TestKDF,
	}
}

func newRepo(t *testing.T) *repo.Repo {
	t.Helper()
	r, err := repo.Create(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// writeMixed writes size bytes of the deterministic mixed stream to path.
func writeMixed(t *testing.T, path string, seed uint64, size int64) {
	t.Helper()
	if err := datagen.WriteFile(path, seed, size); err != nil {
		t.Fatal(err)
	}
}

func mustBackup(t *testing.T, r *repo.Repo, name, path string, o Options) *Result {
	t.Helper()
	res, err := Backup(context.Background(), r, name, path, o)
	if err != nil {
		t.Fatalf("backup %s: %v", path, err)
	}
	return res
}

func mustRestore(t *testing.T, r *repo.Repo, name, point, to string, pw ...[]byte) {
	t.Helper()
	if _, err := Restore(context.Background(), r, name, to, RestoreOptions{Point: point, Keys: keyring.New(pw...)}); err != nil {
		t.Fatalf("restore %s point %q: %v", name, point, err)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// snapshotDir returns every file under dir with its contents, to show
// that an operation wrote nothing.
func snapshotDir(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[p] = b
		} else {
			out[p] = nil
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sameSnapshot(t *testing.T, what string, a, b map[string][]byte) {
	t.Helper()
	for p, x := range a {
		y, ok := b[p]
		if !ok {
			t.Errorf("%s: %s disappeared", what, p)
		} else if !bytes.Equal(x, y) {
			t.Errorf("%s: %s changed", what, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			t.Errorf("%s: %s appeared", what, p)
		}
	}
}

func openRepo(t *testing.T, dir string) *repo.Repo {
	t.Helper()
	r, err := repo.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func writeTestJournal(path string, off int64, section []byte) error {
	return repo.WriteJournalForTest(path, off, section)
}
