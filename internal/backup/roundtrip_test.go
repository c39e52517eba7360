package backup

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
)

// copyTree keeps a snapshot of a tree (contents, modes, times, symlinks).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
}

// TestChainRoundTrip backs up a tree three times — a full, then two
// incrementals after changed, appended, truncated, added and deleted
// files — and restores every point byte-identical with modes and mtimes.
func TestChainRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Options
		pw   []byte
	}{
		{"encrypted-zstd-256KiB", testOptions(testPassword), testPassword},
		{"plain-uncompressed-1MiB", Options{BlockSize: 1 << 20, Compression: Compression{Algorithm: format.CompressionNone}}, nil},
		{"encrypted-zstd4-512KiB", Options{BlockSize: 512 << 10, Password: testPassword, KDF: testOptions(nil).KDF,
			Compression: Compression{Algorithm: format.CompressionZstd, Level: 4}}, testPassword},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			if err := datagen.Tree(src, 5, datagen.TreeOptions{Size: 24 << 20}); err != nil {
				t.Fatal(err)
			}
			r := newRepo(t)
			var points []*Result
			var snaps []string
			for gen := range 3 {
				if gen > 0 {
					if _, err := datagen.MutateTree(src, uint64(100+gen)); err != nil {
						t.Fatal(err)
					}
				}
				res := mustBackup(t, r, "tree", src, tc.o)
				points = append(points, res)
				snap := filepath.Join(dir, fmt.Sprintf("snap%d", gen))
				copyTree(t, src, snap)
				snaps = append(snaps, snap)
			}
			full, inc := points[0], points[1]
			if full.Kind != format.KindFull || inc.Kind != format.KindIncremental || points[2].Kind != format.KindIncremental {
				t.Fatalf("kinds: %v %v %v", full.Kind, inc.Kind, points[2].Kind)
			}
			if inc.ChainID != full.ChainID || points[2].Sequence != 3 {
				t.Fatalf("the incrementals are not in the full's chain")
			}
			// An incremental stores only the blocks that changed, and skips
			// files whose size and mtime did not (TestUnchangedFilesAreNotRead
			// checks that shortcut exactly).
			if inc.Records*2 > full.Records || inc.ReadBytes >= full.ReadBytes {
				t.Errorf("incremental stored %d records (full %d) and read %d bytes (full %d)", inc.Records, full.Records, inc.ReadBytes, full.ReadBytes)
			}
			for i, p := range points {
				to := filepath.Join(dir, fmt.Sprintf("restored%d", i))
				mustRestore(t, r, "tree", p.FileID.String()[:10], to, tc.pw)
				datagen.SameTree(t, snaps[i], to)
			}
			for _, keyless := range []bool{true, false} {
				res, err := Verify(context.Background(), r, "tree", VerifyOptions{Keyless: keyless, Keys: keyring.New(tc.pw)})
				if err != nil {
					t.Fatalf("verify (keyless=%v): %v %v", keyless, err, res.Problems)
				}
				if res.Files != 3 || res.Records != full.Records+inc.Records+points[2].Records {
					t.Errorf("verify checked %d files, %d records", res.Files, res.Records)
				}
			}
		})
	}
}

// TestUnchangedFilesAreNotRead checks the size+mtime shortcut and that
// --full-scan reads past it: a file rewritten with its size and mtime
// kept is taken over from the previous point unless FullScan is set.
func TestUnchangedFilesAreNotRead(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(src, "f")
	writeMixed(t, file, 1, 600<<10)
	mt := time.Date(2024, 1, 2, 3, 4, 5, 6, time.UTC)
	os.Chtimes(file, mt, mt)
	r := newRepo(t)
	o := testOptions(nil)
	mustBackup(t, r, "u", src, o)
	// Same size and mtime, different bytes.
	writeMixed(t, file, 2, 600<<10)
	os.Chtimes(file, mt, mt)
	res := mustBackup(t, r, "u", src, o)
	if res.ReadBytes != 0 || res.Records != 0 {
		t.Fatalf("unchanged size and mtime: read %d bytes, stored %d records", res.ReadBytes, res.Records)
	}
	o.FullScan = true
	res = mustBackup(t, r, "u", src, o)
	if res.ReadBytes != 600<<10 || res.Records != 3 {
		t.Fatalf("full scan: read %d bytes, stored %d records", res.ReadBytes, res.Records)
	}
	to := filepath.Join(dir, "out")
	mustRestore(t, r, "u", "", to)
	datagen.SameTree(t, src, to)
}
