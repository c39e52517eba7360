package backup

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
)

// region is a byte range of a committed file and the region name errors
// must use for a flip inside it.
type region struct {
	name       string
	start, end int64
}

func regionsOf(t *testing.T, path string) []region {
	t.Helper()
	f, fd, err := format.OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	ft := f.Footer
	rs := []region{
		{format.RegionHeader, 0, int64(len(f.HeaderBytes))},
		{format.RegionKeyTable, f.KeyTableOffset, ft.RecordsOffset},
	}
	for _, e := range f.Entries {
		rs = append(rs,
			region{format.RegionRecordHeader, e.Offset, e.Offset + format.RecordHeaderSize},
			region{format.RegionRecordPayload, e.Offset + format.RecordHeaderSize, e.Offset + int64(e.Length)})
	}
	rs = append(rs,
		region{format.RegionBlockMap, ft.BlockMapOffset, ft.CatalogOffset},
		region{format.RegionCatalog, ft.CatalogOffset, ft.CatalogOffset + ft.CatalogLen},
		region{format.RegionFooter, f.Size - format.FooterSize, f.Size})
	return rs
}

// offsets picks the bytes of a region to flip: all of a small region,
// and the edges plus a random sample of a large one (payloads).
func offsets(rg region, rnd *rand.Rand) []int64 {
	n := rg.end - rg.start
	if n <= 160 {
		out := make([]int64, 0, n)
		for o := rg.start; o < rg.end; o++ {
			out = append(out, o)
		}
		return out
	}
	out := []int64{rg.start, rg.start + 1, rg.end - 2, rg.end - 1}
	for range 40 {
		out = append(out, rg.start+rnd.Int64N(n))
	}
	return out
}

func flipByte(t *testing.T, path string, off int64) (restore func()) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	orig := b[0]
	b[0] ^= 0x01 << (off % 8)
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	return func() {
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{orig}, off); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTamperEveryRegion flips single bytes in every region of both files
// of a two-point encrypted chain and checks that full verify, keyless
// verify and restore each refuse, name the file and the region, and that
// restore leaves no output behind.
func TestTamperEveryRegion(t *testing.T) {
	r := newRepo(t)
	src := filepath.Join(t.TempDir(), "disk.img")
	writeMixed(t, src, 7, 1<<20+12345)
	mustBackup(t, r, "t", src, testOptions(testPassword))
	// Change a block in the middle so the incremental holds one record.
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("changed on day two"), 512<<10+77); err != nil {
		t.Fatal(err)
	}
	f.Close()
	mustBackup(t, r, "t", src, testOptions(testPassword))

	ix, err := r.Index("t")
	if err != nil {
		t.Fatal(err)
	}
	pts := ix.Points()
	if len(pts) != 2 {
		t.Fatalf("want 2 points, got %d", len(pts))
	}
	want := fileHash(t, src)
	// Records of the full that the incremental supersedes are not read by
	// a restore of the incremental: a flip there must not stop the restore
	// (verify still catches it), and the restored bytes must be right.
	newer := map[format.BlockKey]bool{}
	{
		f, fd, err := format.OpenPath(r.Path("t", pts[1]))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range f.Entries {
			newer[e.Key()] = true
		}
		fd.Close()
	}
	superseded := map[int64]bool{} // record start offsets in the full
	{
		f, fd, err := format.OpenPath(r.Path("t", pts[0]))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range f.Entries {
			if newer[e.Key()] {
				superseded[e.Offset] = true
			}
		}
		fd.Close()
	}
	if len(superseded) != 1 {
		t.Fatalf("want one superseded record, got %d", len(superseded))
	}
	ctx := context.Background()
	kr := func() *keyring.Keyring { return keyring.New(testPassword) }
	rnd := rand.New(rand.NewPCG(1, 2))
	flips := 0
	for _, p := range pts {
		path := r.Path("t", p)
		for _, rg := range regionsOf(t, path) {
			skipped := p == pts[0] && (superseded[rg.start] || superseded[rg.start-format.RecordHeaderSize])
			for _, off := range offsets(rg, rnd) {
				undo := flipByte(t, path, off)
				flips++
				where := fmt.Sprintf("flip at %d (%s) of %s", off, rg.name, filepath.Base(path))

				// Full verify of the chain up to the last point.
				res, err := Verify(ctx, r, "t", VerifyOptions{Point: pts[1].FileID.String(), Keys: kr()})
				if err == nil {
					t.Fatalf("%s: full verify passed", where)
				}
				checkNamed(t, where, "full verify", append(res.problems(), err.Error()), path, rg.name)

				// Keyless verify catches a flip anywhere too: the header and
				// key table have checksums, records their block map
				// checksums, the block map and catalog the footer hash.
				res, err = Verify(ctx, r, "t", VerifyOptions{Point: pts[1].FileID.String(), Keyless: true})
				if err == nil {
					t.Fatalf("%s: keyless verify passed", where)
				}
				checkNamed(t, where, "keyless verify", append(res.problems(), err.Error()), path, rg.name)

				// Restore of the last point reads from both files.
				to := filepath.Join(t.TempDir(), "out.img")
				_, err = Restore(ctx, r, "t", to, RestoreOptions{Point: pts[1].FileID.String(), Keys: kr()})
				if skipped {
					if err != nil {
						t.Fatalf("%s: restore read a superseded record: %v", where, err)
					}
					if fileHash(t, to) != want {
						t.Fatalf("%s: restore produced wrong data", where)
					}
					undo()
					continue
				}
				if err == nil {
					t.Fatalf("%s: restore succeeded", where)
				}
				if !errors.Is(err, format.ErrCorrupt) {
					t.Fatalf("%s: restore error is not a damage error: %v", where, err)
				}
				checkNamed(t, where, "restore", []string{err.Error()}, path, rg.name)
				if _, err := os.Lstat(to); err == nil {
					t.Fatalf("%s: restore left %s behind", where, to)
				}
				if _, err := os.Lstat(to + partialSuffix); err == nil {
					t.Fatalf("%s: restore left its partial file behind", where)
				}
				undo()
			}
		}
	}
	// With every byte back, everything passes again.
	if _, err := Verify(ctx, r, "t", VerifyOptions{Keys: kr()}); err != nil {
		t.Fatalf("verify after undoing the flips: %v", err)
	}
	t.Logf("%d single-byte flips, each detected", flips)
}

func (r *VerifyResult) problems() []string {
	if r == nil {
		return nil
	}
	return r.Problems
}

// checkNamed asserts that some message names the damaged file and region.
// A flip in the block map or catalog may be reported as "block map or
// catalog" (the footer hash covers both), which counts for either.
func checkNamed(t *testing.T, where, op string, msgs []string, path, region string) {
	t.Helper()
	for _, m := range msgs {
		if !strings.Contains(m, path) {
			continue
		}
		if strings.Contains(m, region) {
			return
		}
		// One checksum covers a record's header and payload: a flip in a
		// header field that has no valid range of its own (the nonce, the
		// key id) shows as a record whose bytes do not match.
		if region == format.RegionRecordHeader && strings.Contains(m, format.RegionRecordPayload) && strings.Contains(m, "nonce or key id") {
			return
		}
	}
	t.Fatalf("%s: %s did not name file and region %q:\n%s", where, op, region, strings.Join(msgs, "\n"))
}
