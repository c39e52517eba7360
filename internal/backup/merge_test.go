package backup

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

const mergeBlock = 256 << 10

// mergeTree writes a small tree: six files of one to several blocks, a
// subdirectory and a symlink.
func mergeTree(t *testing.T, src string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, size := range []int64{1<<20 + 123, 700 << 10, 300 << 10, 1600 << 10, 90 << 10, 500<<10 + 1} {
		dir := src
		if i%2 == 1 {
			dir = filepath.Join(src, "sub")
		}
		writeMixed(t, filepath.Join(dir, fmt.Sprintf("f%d", i)), uint64(10+i), size)
	}
	if err := os.Symlink("sub/f1", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
}

// mutation names what mergeMutate changed, relative to the tree.
type mutation struct{ changed, appended, truncated, deleted, added string }

// mergeMutate changes one file in place, appends to one, truncates one,
// deletes one and adds one, chosen from gen among the current files.
func mergeMutate(t *testing.T, src string, gen int) mutation {
	t.Helper()
	var files []string
	filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, p)
		}
		return err
	})
	sort.Strings(files)
	n := len(files)
	if n < 4 {
		t.Fatalf("%d files left", n)
	}
	pick := func(i int) string { return files[(gen+i)%n] }
	m := mutation{changed: pick(0), appended: pick(1), truncated: pick(2), deleted: pick(3),
		added: filepath.Join(src, "sub", fmt.Sprintf("new-%d.bin", gen))}
	f, err := os.OpenFile(m.changed, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	off := min(300<<10, st.Size()/2)
	if _, err := f.WriteAt(bytes.Repeat([]byte{byte('A' + gen)}, 100), off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	extra := filepath.Join(t.TempDir(), "extra")
	writeMixed(t, extra, uint64(100+gen), mergeBlock+17)
	b, _ := os.ReadFile(extra)
	f, err = os.OpenFile(m.appended, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
	st, _ = os.Stat(m.truncated)
	if err := os.Truncate(m.truncated, st.Size()/3); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.deleted); err != nil {
		t.Fatal(err)
	}
	writeMixed(t, m.added, uint64(200+gen), 600<<10+int64(gen))
	rel := func(p *string) { *p, _ = filepath.Rel(src, *p) }
	for _, p := range []*string{&m.changed, &m.appended, &m.truncated, &m.deleted, &m.added} {
		rel(p)
	}
	return m
}

// rawRecords returns each record of a file as stored (header and payload).
func rawRecords(t *testing.T, path string) map[format.BlockKey][]byte {
	t.Helper()
	f, fd, err := format.OpenPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	out := map[format.BlockKey][]byte{}
	for _, e := range f.Entries {
		b := make([]byte, e.Length)
		if _, err := fd.ReadAt(b, e.Offset); err != nil {
			t.Fatal(err)
		}
		out[e.Key()] = b
	}
	return out
}

// pointCatalog opens a point's catalog as the controller does, with the
// keys (pw nil for an unencrypted file).
func pointCatalog(t *testing.T, r *repo.Repo, p *repo.Point, pw []byte) *format.Catalog {
	t.Helper()
	f, fd, err := format.OpenPath(r.Path("m", p))
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	var meta *keys.Session
	if f.Header.Encrypted() {
		if meta, err = keyring.New(pw).Session(f, f.CatalogKeyID()); err != nil {
			t.Fatal(err)
		}
	}
	cat, err := f.Catalog(metaAEAD(meta))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func objectID(t *testing.T, cat *format.Catalog, path string) uint64 {
	t.Helper()
	for _, o := range cat.Objects {
		if o.Path == path {
			return o.ID
		}
	}
	t.Fatalf("no object %s", path)
	return 0
}

func mergeChain(t *testing.T, r *repo.Repo) *repo.Chain {
	t.Helper()
	ix, err := r.Index("m")
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Chains) != 1 {
		t.Fatalf("%d chains", len(ix.Chains))
	}
	return &ix.Chains[0]
}

// checkPoints restores every listed point and compares it with its
// snapshot, and verifies the backup keyless and with the keys.
func checkPoints(t *testing.T, r *repo.Repo, snaps map[format.ID]string, pw []byte, what string) {
	t.Helper()
	ix, err := r.Index("m")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ix.Points() {
		snap, ok := snaps[p.FileID]
		if !ok {
			t.Fatalf("%s: point %s was never made", what, p.FileID)
		}
		to := filepath.Join(t.TempDir(), "restored")
		mustRestore(t, r, "m", p.FileID.String(), to, pw)
		datagen.SameTree(t, snap, to)
	}
	files := len(mergeChain(t, r).Points)
	for _, keyless := range []bool{true, false} {
		res, err := Verify(context.Background(), r, "m", VerifyOptions{Keyless: keyless, Keys: keyring.New(pw)})
		if err != nil {
			t.Fatalf("%s: verify (keyless %v): %v %v", what, keyless, err, res.Problems)
		}
		if res.Files != files {
			t.Errorf("%s: verify (keyless %v) checked %d files, the chain has %d", what, keyless, res.Files, files)
		}
	}
}

// TestMergeRetention makes a chain of five points with the backup code
// (changed, appended, truncated, added and deleted files), then merges its
// oldest two files again and again, with no key, until one point remains,
// adding a point on the way. After each merge every remaining point
// restores byte-identical and verifies, the merged file holds exactly the
// records it should, byte for byte, and lists exactly the session secrets
// it uses.
func TestMergeRetention(t *testing.T) {
	for _, tc := range []struct {
		name    string
		pw      []byte
		extents string // "controller": from the sealed catalog; "target": repo.Extents; "": none
	}{
		{"encrypted-controller-extents", testPassword, "controller"},
		{"encrypted-no-extents", testPassword, ""},
		{"plain-target-extents", nil, "target"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "src")
			mergeTree(t, src)
			r := newRepo(t)
			o := testOptions(tc.pw)
			o.BlockSize = mergeBlock
			snaps := map[format.ID]string{}
			var muts []mutation
			point := func(gen int) {
				if gen > 0 {
					muts = append(muts, mergeMutate(t, src, gen))
				}
				res := mustBackup(t, r, "m", src, o)
				snap := filepath.Join(dir, fmt.Sprintf("snap%d", gen))
				copyTree(t, src, snap)
				snaps[res.FileID] = snap
			}
			for gen := range 5 {
				point(gen)
			}
			if c := mergeChain(t, r); len(c.Points) != 5 || c.Points[4].Sequence != 5 {
				t.Fatalf("chain: %+v", c.Points)
			}
			checkPoints(t, r, snaps, tc.pw, "before merging")
			// What the first mutation deleted and truncated, by object id.
			c0 := mergeChain(t, r)
			fullCat, p1Cat := pointCatalog(t, r, &c0.Points[0], tc.pw), pointCatalog(t, r, &c0.Points[1], tc.pw)
			delID := objectID(t, fullCat, filepath.ToSlash(muts[0].deleted))
			truncID := objectID(t, fullCat, filepath.ToSlash(muts[0].truncated))
			truncBlocks := repo.CatalogExtents(p1Cat)[truncID]
			if full := repo.CatalogExtents(fullCat)[truncID]; truncBlocks >= full {
				t.Fatalf("the truncated file keeps its %d blocks", full)
			}

			for merges := 1; ; merges++ {
				c := mergeChain(t, r)
				if len(c.Points) < 2 {
					break
				}
				first, second := c.Points[0], c.Points[1]
				firstRecs, secondRecs := rawRecords(t, r.Path("m", &first)), rawRecords(t, r.Path("m", &second))
				var extents map[uint64]uint64
				var err error
				switch tc.extents {
				case "controller":
					extents = repo.CatalogExtents(pointCatalog(t, r, &second, tc.pw))
				case "target":
					if extents, err = r.Extents("m", &second); err != nil {
						t.Fatal(err)
					}
				}
				if tc.pw != nil {
					if _, err := r.Extents("m", &second); err == nil {
						t.Error("the target computed extents from a sealed catalog")
					}
				}
				l, err := r.Lock("m")
				if err != nil {
					t.Fatal(err)
				}
				res, err := r.Merge("m", c, extents) // no key: Merge takes none
				l.Unlock()
				if err != nil {
					t.Fatalf("merge %d: %v", merges, err)
				}
				what := fmt.Sprintf("after merge %d", merges)
				t.Logf("%s: %d secrets, %d+%d records kept, %d superseded, %d outside the extents, %d -> %d bytes",
					what, res.SecretsKept, res.FromFull, res.FromInc, res.Superseded, res.Outside, res.BytesBefore, res.BytesAfter)

				// The merged file: the incremental's identity, kind 3.
				mergedPath := r.Path("m", &second)
				if _, err := os.Stat(r.Path("m", &first)); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("%s: the old full is still there", what)
				}
				mf, fd, err := format.OpenPath(mergedPath)
				if err != nil {
					t.Fatal(err)
				}
				fd.Close()
				h := mf.Header
				if h.Kind != format.KindMerged || h.FileID != second.FileID || h.Sequence != second.Sequence || !h.ParentID.IsZero() {
					t.Fatalf("%s: header %v %s seq %d parent %s", what, h.Kind, h.FileID, h.Sequence, h.ParentID)
				}
				if res.Removed != first.FileID || res.Merged == nil || res.Merged.FileID != second.FileID || res.BytesAfter != mf.Size {
					t.Errorf("%s: result %+v", what, res)
				}
				delete(snaps, first.FileID)

				// Its records: byte-exact copies of the incremental's and of
				// the full's that the incremental does not replace, within the
				// extents when given.
				want := map[format.BlockKey][]byte{}
				for k, b := range firstRecs {
					if _, ok := secondRecs[k]; ok {
						continue
					}
					if n, ok := extents[k.Object]; extents != nil && (!ok || k.Block >= n) {
						continue
					}
					want[k] = b
				}
				maps.Copy(want, secondRecs)
				got := rawRecords(t, mergedPath)
				if len(got) != len(want) || res.FromFull+res.FromInc != len(want) || res.FromInc != len(secondRecs) {
					t.Errorf("%s: merged file holds %d records, want %d (result %+v)", what, len(got), len(want), res)
				}
				for k, b := range want {
					if !bytes.Equal(got[k], b) {
						t.Errorf("%s: record %v is not a byte-exact copy", what, k)
					}
				}
				if res.Superseded+res.Outside+res.FromFull != len(firstRecs) {
					t.Errorf("%s: counts do not add up: %+v, full has %d", what, res, len(firstRecs))
				}

				// Exactly the secrets its records and catalog are sealed with.
				used := map[keys.KeyID]bool{}
				for _, b := range got {
					rh, _ := format.ParseRecordHeader(b)
					if !rh.KeyID.IsZero() {
						used[rh.KeyID] = true
					}
				}
				if h.Encrypted() {
					used[mf.CatalogKeyID()] = true
				}
				if len(h.Secrets) != len(used) {
					t.Errorf("%s: the header lists %d secrets, %d are used", what, len(h.Secrets), len(used))
				}
				for _, s := range h.Secrets {
					if !used[s] {
						t.Errorf("%s: the header lists secret %x, which seals nothing", what, s[:4])
					}
				}

				// The first merge drops the first mutation's deleted file and
				// the blocks cut off its truncated file when given extents, and
				// keeps them without.
				if merges == 1 {
					hasDel, hasTruncTail := false, false
					for k := range got {
						hasDel = hasDel || k.Object == delID
						hasTruncTail = hasTruncTail || (k.Object == truncID && k.Block >= truncBlocks)
					}
					if tc.extents != "" && (hasDel || hasTruncTail || res.Outside == 0) {
						t.Errorf("%s: with extents, deleted (%v) or truncated (%v) blocks are kept; %d dropped", what, hasDel, hasTruncTail, res.Outside)
					}
					if tc.extents == "" && (!hasDel || !hasTruncTail || res.Outside != 0) {
						t.Errorf("%s: without extents, deleted (%v) or truncated (%v) blocks are dropped", what, hasDel, hasTruncTail)
					}
				}
				c = mergeChain(t, r)
				if c.Points[0].FileID != second.FileID || c.Points[0].Kind != format.KindMerged {
					t.Fatalf("%s: the chain starts at %s (%v)", what, c.Points[0].FileID, c.Points[0].Kind)
				}
				checkPoints(t, r, snaps, tc.pw, what)
				if merges == 2 {
					// A merged chain goes on with incrementals.
					point(5)
					c = mergeChain(t, r)
					if last := c.Points[len(c.Points)-1]; last.Kind != format.KindIncremental || last.Sequence != 6 {
						t.Fatalf("new point after merging: %v sequence %d", last.Kind, last.Sequence)
					}
					checkPoints(t, r, snaps, tc.pw, "after a new point")
				}
			}
			c := mergeChain(t, r)
			if len(c.Points) != 1 || c.Points[0].Sequence != 6 || c.Points[0].Kind != format.KindMerged {
				t.Fatalf("final chain: %+v", c.Points)
			}
		})
	}
}

// TestMergeCrashRecovery stages a merge of a real encrypted chain cut off
// at each crash point: every point committed before it stays restorable
// and verifies, and the next Lock rolls the merge back (cut off before the
// rename: the partial is removed, the files are as they were) or completes
// it (cut off after: the superseded full is deleted).
func TestMergeCrashRecovery(t *testing.T) {
	build := func(t *testing.T) (*repo.Repo, map[format.ID]string, *repo.Chain) {
		dir := t.TempDir()
		src := filepath.Join(dir, "src")
		mergeTree(t, src)
		r := newRepo(t)
		o := testOptions(testPassword)
		o.BlockSize = mergeBlock
		snaps := map[format.ID]string{}
		for gen := range 3 {
			if gen > 0 {
				mergeMutate(t, src, gen)
			}
			res := mustBackup(t, r, "m", src, o)
			snaps[res.FileID] = filepath.Join(dir, fmt.Sprintf("snap%d", gen))
			copyTree(t, src, snaps[res.FileID])
		}
		return r, snaps, mergeChain(t, r)
	}
	stage := func(t *testing.T, r *repo.Repo, c *repo.Chain, renamed bool) {
		l, err := r.Lock("m")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		if _, err := r.MergeStagedForTest("m", c, nil, renamed); err != nil {
			t.Fatal(err)
		}
	}
	relock := func(t *testing.T, r *repo.Repo) {
		l, err := r.Lock("m")
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
	}
	partials := func(t *testing.T, r *repo.Repo) []string {
		m, _ := filepath.Glob(filepath.Join(r.Dir, "backups", "m", "*", "*.partial"))
		return m
	}

	for _, torn := range []bool{false, true} {
		t.Run(map[bool]string{false: "before-rename", true: "mid-write"}[torn], func(t *testing.T) {
			r, snaps, c := build(t)
			before := snapshotDir(t, filepath.Join(r.Dir, "backups", "m", c.ID.String()))
			stage(t, r, c, false)
			ps := partials(t, r)
			if len(ps) != 1 || !strings.HasSuffix(ps[0], ".merge.partial") {
				t.Fatalf("partials: %v", ps)
			}
			if torn {
				st, _ := os.Stat(ps[0])
				os.Truncate(ps[0], st.Size()/2)
			}
			if got := mergeChain(t, r); len(got.Points) != 3 || got.Points[0].Kind != format.KindFull {
				t.Fatalf("a merge partial changed the listing: %+v", got.Points)
			}
			checkPoints(t, r, snaps, testPassword, "merge cut off before the rename")
			relock(t, r)
			if ps := partials(t, r); len(ps) != 0 {
				t.Fatalf("the lock left %v", ps)
			}
			// Rolled back: the chain's files are exactly what they were.
			sameSnapshot(t, "after rolling back", before, snapshotDir(t, filepath.Join(r.Dir, "backups", "m", c.ID.String())))
			checkPoints(t, r, snaps, testPassword, "after rolling back")
			// And the merge can be done again.
			l, _ := r.Lock("m")
			if _, err := r.Merge("m", mergeChain(t, r), nil); err != nil {
				t.Fatal(err)
			}
			l.Unlock()
			delete(snaps, c.Points[0].FileID)
			checkPoints(t, r, snaps, testPassword, "after merging again")
		})
	}

	t.Run("after-rename", func(t *testing.T) {
		r, snaps, c := build(t)
		fullPath, incPath := r.Path("m", &c.Points[0]), r.Path("m", &c.Points[1])
		stage(t, r, c, true)
		merged, err := os.ReadFile(incPath)
		if err != nil {
			t.Fatal(err)
		}
		// The old full and the merged full are both on disk and listed:
		// the first point restores from the old full alone, the others
		// from the merged full on.
		got := mergeChain(t, r)
		if len(got.Points) != 3 || got.Points[0].Kind != format.KindFull || got.Points[1].Kind != format.KindMerged {
			t.Fatalf("listing after the rename: %+v", got.Points)
		}
		for _, p := range got.Points {
			to := filepath.Join(t.TempDir(), "restored")
			mustRestore(t, r, "m", p.FileID.String(), to, testPassword)
			datagen.SameTree(t, snaps[p.FileID], to)
		}
		for _, keyless := range []bool{true, false} {
			if res, err := Verify(context.Background(), r, "m", VerifyOptions{Keyless: keyless, Keys: keyring.New(testPassword)}); err != nil {
				t.Fatalf("verify (keyless %v): %v %v", keyless, err, res.Problems)
			}
		}
		relock(t, r)
		// Completed: the superseded full is gone, the merged full untouched.
		if _, err := os.Stat(fullPath); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the superseded full survived the lock: %v", err)
		}
		if b, err := os.ReadFile(incPath); err != nil || !bytes.Equal(b, merged) {
			t.Fatalf("recovery changed the merged full: %v", err)
		}
		delete(snaps, c.Points[0].FileID)
		checkPoints(t, r, snaps, testPassword, "after completing the merge")
	})
}

// countSink is a FileSink that counts what a copy sends.
type countSink struct{ records int }

func (s *countSink) Open(header, keyTable []byte) error { return nil }
func (s *countSink) Record(header, payload []byte, sum format.Checksum) error {
	s.records++
	return nil
}
func (s *countSink) Finish(catalog []byte) error { return nil }

// TestCopyFromMergedChain copies the latest point of a chain whose first
// file is a merged full as an incremental over the merged point: the base
// is found in a chain that no longer starts at sequence 1.
func TestCopyFromMergedChain(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	mergeTree(t, src)
	r := newRepo(t)
	o := testOptions(testPassword)
	o.BlockSize = mergeBlock
	for gen := range 3 {
		if gen > 0 {
			mergeMutate(t, src, gen)
		}
		mustBackup(t, r, "m", src, o)
	}
	l, _ := r.Lock("m")
	if _, err := r.Merge("m", mergeChain(t, r), nil); err != nil {
		t.Fatal(err)
	}
	l.Unlock()
	c := mergeChain(t, r)
	base, last := c.Points[0], c.Points[1]
	spec := CopySpec{Point: last.FileID.String(), Base: base.FileID.String(), SourceKeys: keyring.New(testPassword),
		FileID: format.ID{1, 15: 1}, BackupID: format.ID{2, 15: 1}, ChainID: format.ID{3, 15: 1}, ParentID: format.ID{4, 15: 1},
		Sequence: 2, BackupName: "copy"}
	var sink countSink
	res, err := Copy(context.Background(), r, "m", spec, &sink)
	if err != nil {
		t.Fatalf("copy over a merged base: %v", err)
	}
	if res.Kind != format.KindIncremental || uint64(sink.records) != last.Records {
		t.Fatalf("copy sent a %v of %d records; the point's own file stores %d", res.Kind, sink.records, last.Records)
	}
}
