package repo

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

const mbs = format.MinBlockSize

// mfile is an object of a hand-made point: its blocks' contents.
type mfile struct {
	id     uint64
	path   string
	blocks [][]byte
}

func block(tag string, n int) []byte {
	return bytes.Repeat([]byte(tag), n/len(tag)+1)[:n]
}

// spec is one hand-made, unencrypted backup file: the point's objects, and
// which of their blocks the file stores.
type spec struct {
	h      format.Header
	files  []mfile
	stored []format.BlockKey
}

// commitSpec writes s as a committed file and returns its file id.
func commitSpec(t *testing.T, r *Repo, backup string, s spec) format.ID {
	t.Helper()
	cat := &format.Catalog{SourceKind: format.SourceDir, SourcePath: "/src",
		Objects: []format.Object{{ID: 1, Type: format.ObjectDir, Mode: 0o755, Path: "."}}}
	data := map[format.BlockKey][]byte{}
	for _, f := range s.files {
		o := format.Object{ID: f.id, Type: format.ObjectFile, Mode: 0o644, Path: f.path}
		for b, d := range f.blocks {
			o.Size += uint64(len(d))
			o.Digests = append(o.Digests, sha256.Sum256(d))
			data[format.BlockKey{Object: f.id, Block: uint64(b)}] = d
		}
		cat.Objects = append(cat.Objects, o)
	}
	var kt format.KeyTable
	var sess *keys.Session
	if s.h.Encrypted() {
		var err error
		if sess, err = keys.SessionFromSecret(bytes.Repeat([]byte{byte(s.h.Sequence)}, keys.SecretSize)); err != nil {
			t.Fatal(err)
		}
		s.h.Secrets = []keys.KeyID{sess.ID()}
		kt.Entries = []format.KeyEntry{{Secret: sess.ID(), Type: format.EntryRecovery, Data: []byte("opaque")}}
	}
	p, err := r.NewFile(backup, s.h.ChainID, s.h.Sequence, s.h.FileID)
	if err != nil {
		t.Fatal(err)
	}
	w, err := format.NewWriter(p.File(), s.h, kt)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range s.stored {
		d := data[k]
		if d == nil {
			t.Fatalf("spec stores %v, which the point does not have", k)
		}
		rh := format.RecordHeader{Object: k.Object, Block: k.Block, PlainLen: uint32(len(d)), StoredLen: uint32(len(d)), SealedLen: uint32(len(d))}
		payload := d
		if sess != nil {
			rh.KeyID, rh.Nonce, rh.SealedLen = sess.ID(), format.Nonce(1, k.Object<<8|k.Block), rh.SealedLen+format.TagSize
			payload = sess.Data().Seal(nil, rh.Nonce[:], d, format.RecordAAD(nil, s.h.BackupID, &rh))
		}
		if err := w.WriteRecord(&rh, payload, nil); err != nil {
			t.Fatal(err)
		}
	}
	var section []byte
	if sess != nil {
		section = format.SealCatalog(cat.Marshal(), w.Header(), sess.ID(), sess.Meta(), 1)
	} else {
		section = format.SealCatalog(cat.Marshal(), w.Header(), keys.KeyID{}, nil, 0)
	}
	if _, err := w.Finish(section); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	return s.h.FileID
}

var (
	mBackup = format.ID{0xb0, 15: 1}
	mChain  = format.ID{0xc0, 15: 1}
)

func mHeader(seq uint32, parent format.ID) format.Header {
	h := format.Header{FileID: format.ID{0xf0, byte(seq), 15: 1}, BackupID: mBackup, ChainID: mChain, ParentID: parent,
		Sequence: seq, Kind: format.KindIncremental, BlockSize: mbs, Created: time.Unix(int64(1000+seq), 0).UTC(), BackupName: "m"}
	if parent.IsZero() {
		h.Kind = format.KindFull
	}
	return h
}

// threePoints writes a chain of three unencrypted points:
//
//	1 full: a = a0 a1 a2, b = b0 b1, c = c0
//	2 inc:  a truncated to 2 blocks, a1 changed; b deleted; d = d0 added
//	3 inc:  c changed; a appended to 3 blocks
func threePoints(t *testing.T, r *Repo) (points [3][]mfile, ids [3]format.ID) {
	t.Helper()
	a0, a1, a2 := block("a0", mbs), block("a1", mbs), block("a2", 100)
	b0, b1 := block("b0", mbs), block("b1", 7)
	c0, d0 := block("c0", 33), block("d0", mbs)
	a1x, c0x, a2x := block("A1", mbs), block("C0", 40), block("A2", 9)
	points[0] = []mfile{{2, "a", [][]byte{a0, a1, a2}}, {3, "b", [][]byte{b0, b1}}, {4, "c", [][]byte{c0}}}
	points[1] = []mfile{{2, "a", [][]byte{a0, a1x}}, {4, "c", [][]byte{c0}}, {5, "d", [][]byte{d0}}}
	points[2] = []mfile{{2, "a", [][]byte{a0, a1x, a2x}}, {4, "c", [][]byte{c0x}}, {5, "d", [][]byte{d0}}}
	k := func(o, b uint64) format.BlockKey { return format.BlockKey{Object: o, Block: b} }
	l, err := r.Lock("m")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock()
	ids[0] = commitSpec(t, r, "m", spec{mHeader(1, format.ID{}), points[0], []format.BlockKey{k(2, 0), k(2, 1), k(2, 2), k(3, 0), k(3, 1), k(4, 0)}})
	ids[1] = commitSpec(t, r, "m", spec{mHeader(2, ids[0]), points[1], []format.BlockKey{k(2, 1), k(5, 0)}})
	ids[2] = commitSpec(t, r, "m", spec{mHeader(3, ids[1]), points[2], []format.BlockKey{k(4, 0), k(2, 2)}})
	return points, ids
}

func theChain(t *testing.T, r *Repo) *Chain {
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

// rawRecords returns every record of the file at path, as stored.
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

// restorable checks, as a restore does, that every block of the point
// with file id want resolves to the newest record of its chain at or
// before it, with the digest of the point's catalog, and that the
// point's contents are those given.
func restorable(t *testing.T, r *Repo, id format.ID, files []mfile) {
	t.Helper()
	ix, err := r.Index("m")
	if err != nil {
		t.Fatal(err)
	}
	var p *Point
	var c *Chain
	for i := range ix.Chains {
		for j := range ix.Chains[i].Points {
			if ix.Chains[i].Points[j].FileID == id {
				p, c = &ix.Chains[i].Points[j], &ix.Chains[i]
			}
		}
	}
	if p == nil {
		t.Fatalf("point %s is not listed", id)
	}
	pts, err := c.ChainUpTo(p)
	if err != nil {
		t.Fatalf("point %s: %v", id, err)
	}
	newest := map[format.BlockKey][]byte{}
	for _, q := range pts {
		f, fd, err := format.OpenPath(r.Path("m", q))
		if err != nil {
			t.Fatal(err)
		}
		for i := range f.Entries {
			_, payload, err := f.ReadRecord(&f.Entries[i], nil)
			if err != nil {
				t.Fatal(err)
			}
			newest[f.Entries[i].Key()] = bytes.Clone(payload)
		}
		if q == p {
			cat, err := f.Catalog(nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range cat.Objects {
				for b, d := range o.Digests {
					got, ok := newest[format.BlockKey{Object: o.ID, Block: uint64(b)}]
					if !ok || sha256.Sum256(got) != d {
						t.Errorf("point %s: block %d of %s does not restore", id, b, o.Path)
					}
				}
			}
		}
		fd.Close()
	}
	for _, mf := range files {
		for b, d := range mf.blocks {
			if !bytes.Equal(newest[format.BlockKey{Object: mf.id, Block: uint64(b)}], d) {
				t.Errorf("point %s: block %d of %s has other contents", id, b, mf.path)
			}
		}
	}
}

func keysOf(m map[format.BlockKey][]byte) []format.BlockKey {
	var out []format.BlockKey
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b format.BlockKey) int {
		if a.Object != b.Object {
			return int(a.Object) - int(b.Object)
		}
		return int(a.Block) - int(b.Block)
	})
	return out
}

// TestMergeUnencrypted merges a hand-made chain of three points down to
// one, with the extents the target computes itself from the unencrypted
// catalog and without extents, and checks the merged files record by
// record and that every remaining point restores.
func TestMergeUnencrypted(t *testing.T) {
	for _, withExtents := range []bool{true, false} {
		t.Run(map[bool]string{true: "extents", false: "no-extents"}[withExtents], func(t *testing.T) {
			r, err := Create(filepath.Join(t.TempDir(), "r"))
			if err != nil {
				t.Fatal(err)
			}
			points, ids := threePoints(t, r)
			c := theChain(t, r)
			fullPath, incPath := r.Path("m", &c.Points[0]), r.Path("m", &c.Points[1])
			fullRecs, incRecs := rawRecords(t, fullPath), rawRecords(t, incPath)
			incFile, fd, err := format.OpenPath(incPath)
			if err != nil {
				t.Fatal(err)
			}
			fd.Close()
			var extents map[uint64]uint64
			if withExtents {
				if extents, err = r.Extents("m", &c.Points[1]); err != nil {
					t.Fatal(err)
				}
				if want := map[uint64]uint64{2: 2, 4: 1, 5: 1}; !equalMaps(extents, want) {
					t.Fatalf("extents %v, want %v", extents, want)
				}
			}
			l, err := r.Lock("m")
			if err != nil {
				t.Fatal(err)
			}
			res, err := r.Merge("m", c, extents)
			l.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			// Expected: the incremental's records, and the full's that it
			// does not replace, inside the extents when given.
			want := map[format.BlockKey][]byte{}
			for k, b := range fullRecs {
				if _, ok := incRecs[k]; ok {
					continue
				}
				if extents != nil && k.Block >= extents[k.Object] {
					continue
				}
				want[k] = b
			}
			for k, b := range incRecs {
				want[k] = b
			}
			got := rawRecords(t, incPath)
			if !slices.Equal(keysOf(got), keysOf(want)) {
				t.Fatalf("merged file stores %v, want %v", keysOf(got), keysOf(want))
			}
			for k := range want {
				if !bytes.Equal(got[k], want[k]) {
					t.Errorf("record %v is not a byte-exact copy", k)
				}
			}
			wantOutside, wantFromFull := 3, 2 // a2, b0, b1 dropped; a0, c0 kept
			if !withExtents {
				wantOutside, wantFromFull = 0, 5
			}
			if res.Superseded != 1 || res.Outside != wantOutside || res.FromFull != wantFromFull || res.FromInc != 2 ||
				res.Removed != ids[0] || res.Merged == nil || res.Merged.FileID != ids[1] || res.Merged.Kind != format.KindMerged ||
				res.BytesAfter <= 0 || res.BytesBefore <= res.BytesAfter {
				t.Errorf("result %+v", res)
			}
			if _, err := os.Stat(fullPath); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the old full is still there: %v", err)
			}
			mf, fd, err := format.OpenPath(incPath)
			if err != nil {
				t.Fatal(err)
			}
			fd.Close()
			h := mf.Header
			if h.Kind != format.KindMerged || h.Sequence != 2 || !h.ParentID.IsZero() || h.FileID != ids[1] || h.ChainID != mChain || !h.Created.Equal(incFile.Header.Created) {
				t.Errorf("merged header %+v", h)
			}
			if !bytes.Equal(mf.CatalogSection(), incFile.CatalogSection()) {
				t.Error("the catalog section is not the incremental's, byte for byte")
			}
			c = theChain(t, r)
			if len(c.Points) != 2 || c.Points[0].Kind != format.KindMerged || c.Points[0].Sequence != 2 || c.Points[1].Sequence != 3 {
				t.Fatalf("chain after merge: %+v", c.Points)
			}
			restorable(t, r, ids[1], points[1])
			restorable(t, r, ids[2], points[2])

			// Merge the merged full with the last incremental.
			if extents != nil {
				if extents, err = r.Extents("m", &c.Points[1]); err != nil {
					t.Fatal(err)
				}
			}
			l, err = r.Lock("m")
			if err != nil {
				t.Fatal(err)
			}
			res, err = r.Merge("m", c, extents)
			l.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			c = theChain(t, r)
			if len(c.Points) != 1 || c.Points[0].Kind != format.KindMerged || c.Points[0].Sequence != 3 || c.Points[0].FileID != ids[2] || res.Removed != ids[1] {
				t.Fatalf("chain after second merge: %+v", c.Points)
			}
			restorable(t, r, ids[2], points[2])
			got = rawRecords(t, r.Path("m", &c.Points[0]))
			_, hasB := got[format.BlockKey{Object: 3, Block: 0}]
			if hasB == withExtents {
				t.Errorf("with extents %v, a block of the deleted file is kept: %v", withExtents, hasB)
			}
			// A merged chain continues with incrementals; it cannot be merged
			// further alone.
			if _, err := r.Merge("m", c, nil); !errors.Is(err, ErrCannotMerge) {
				t.Errorf("merge of a one-point chain: %v", err)
			}
		})
	}
}

func equalMaps(a, b map[uint64]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestMergeRefuses checks that files that cannot share one file, and
// extents that are not the point's, are refused before anything is
// written.
func TestMergeRefuses(t *testing.T) {
	f1 := []mfile{{2, "a", [][]byte{block("x", mbs)}}}
	f2 := []mfile{{2, "a", [][]byte{block("y", mbs)}}}
	k := format.BlockKey{Object: 2, Block: 0}
	for _, c := range []struct {
		name    string
		inc     func(h *format.Header)
		extents map[uint64]uint64
		want    string
	}{
		{"backup id", func(h *format.Header) { h.BackupID = format.ID{0xee, 15: 1} }, nil, "backup ids differ"},
		{"encryption", func(h *format.Header) { h.Encryption = format.EncryptionAES256GCM }, nil, "encryption differs"},
		{"block size", func(h *format.Header) { h.BlockSize = 2 * mbs }, nil, "block sizes differ"},
		{"parent", func(h *format.Header) { h.ParentID = format.ID{0x99, 15: 1} }, nil, "does not follow the full"},
		{"merged second", func(h *format.Header) { h.Kind, h.ParentID = format.KindMerged, format.ID{} }, nil, "not an incremental"},
		{"extents without an incremental block", nil, map[uint64]uint64{2: 0}, "extents leave out block 0 of object 2"},
		{"extents short of the catalog", func(h *format.Header) {}, map[uint64]uint64{2: 1, 7: 1}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := Create(filepath.Join(t.TempDir(), "r"))
			if err != nil {
				t.Fatal(err)
			}
			l, err := r.Lock("m")
			if err != nil {
				t.Fatal(err)
			}
			defer l.Unlock()
			full := commitSpec(t, r, "m", spec{mHeader(1, format.ID{}), f1, []format.BlockKey{k}})
			h := mHeader(2, full)
			if c.inc != nil {
				c.inc(&h)
			}
			files := f2
			if c.name == "extents short of the catalog" {
				// The point has two blocks of a; the extents give it one.
				files = []mfile{{2, "a", [][]byte{block("y", mbs), block("z", 5)}}}
			}
			commitSpec(t, r, "m", spec{h, files, []format.BlockKey{k}})
			ch := theChain(t, r)
			if len(ch.Points) != 2 {
				t.Fatalf("%d points", len(ch.Points))
			}
			before := dirState(t, r.Dir)
			_, err = r.Merge("m", ch, c.extents)
			if err == nil {
				t.Fatal("merge succeeded")
			}
			if c.want != "" && !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not say %q", err, c.want)
			}
			if c.name == "extents short of the catalog" && !strings.Contains(err.Error(), "extents give object 2 (a) 1 blocks, the point has 2") {
				t.Errorf("error %q", err)
			}
			if c.extents == nil && !errors.Is(err, ErrCannotMerge) {
				t.Errorf("error %v is not ErrCannotMerge", err)
			}
			if after := dirState(t, r.Dir); !maps2Equal(before, after) {
				t.Errorf("a refused merge changed the repository:\n%v\n%v", before, after)
			}
		})
	}
	// A chain of one point, and a chain whose first file is damaged.
	r, _ := Create(filepath.Join(t.TempDir(), "r"))
	l, _ := r.Lock("m")
	defer l.Unlock()
	full := commitSpec(t, r, "m", spec{mHeader(1, format.ID{}), f1, []format.BlockKey{k}})
	if _, err := r.Merge("m", theChain(t, r), nil); !errors.Is(err, ErrCannotMerge) || !strings.Contains(err.Error(), "fewer than two points") {
		t.Errorf("one point: %v", err)
	}
	commitSpec(t, r, "m", spec{mHeader(2, full), f2, []format.BlockKey{k}})
	c := theChain(t, r)
	os.Truncate(r.Path("m", &c.Points[0]), 100)
	if _, err := r.Merge("m", theChain(t, r), nil); !errors.Is(err, ErrCannotMerge) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("damaged full: %v", err)
	}
}

// dirState maps every file under dir (but the index cache, which a
// listing rewrites) to its contents.
func dirState(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().IsRegular() && info.Name() != indexFile {
			b, _ := os.ReadFile(p)
			out[p] = string(b)
		}
		return nil
	})
	return out
}

func maps2Equal(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestRecoverMerges stages a merge cut off at each crash point and checks
// that every committed point stays restorable, and that the next Lock
// rolls the merge back (before the rename) or completes it (after).
func TestRecoverMerges(t *testing.T) {
	setup := func(t *testing.T) (*Repo, [3][]mfile, [3]format.ID, *Chain) {
		r, err := Create(filepath.Join(t.TempDir(), "r"))
		if err != nil {
			t.Fatal(err)
		}
		points, ids := threePoints(t, r)
		return r, points, ids, theChain(t, r)
	}
	stage := func(t *testing.T, r *Repo, c *Chain, renamed bool) {
		l, err := r.Lock("m")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Unlock()
		if _, err := r.MergeStagedForTest("m", c, nil, renamed); err != nil {
			t.Fatal(err)
		}
	}
	lock := func(t *testing.T, r *Repo) {
		l, err := r.Lock("m")
		if err != nil {
			t.Fatal(err)
		}
		l.Unlock()
	}
	allRestore := func(t *testing.T, r *Repo, points [3][]mfile, ids [3]format.ID, from int) {
		for i := from; i < 3; i++ {
			restorable(t, r, ids[i], points[i])
		}
	}

	for _, torn := range []bool{false, true} {
		t.Run(map[bool]string{false: "before-rename", true: "mid-write"}[torn], func(t *testing.T) {
			r, points, ids, c := setup(t)
			before := dirState(t, r.Dir)
			stage(t, r, c, false)
			partial := r.Path("m", &c.Points[1]) + mergePartialExt
			st, err := os.Stat(partial)
			if err != nil {
				t.Fatalf("no merge partial: %v", err)
			}
			if torn {
				os.Truncate(partial, st.Size()/2)
			}
			if got := theChain(t, r); len(got.Points) != 3 || got.Points[0].Kind != format.KindFull {
				t.Fatalf("the partial changed the listing: %+v", got.Points)
			}
			allRestore(t, r, points, ids, 0)
			lock(t, r) // rolls back
			if _, err := os.Stat(partial); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the merge partial survived the lock: %v", err)
			}
			if after := dirState(t, r.Dir); !maps2Equal(before, after) {
				t.Error("rolling back changed the committed files")
			}
			allRestore(t, r, points, ids, 0)
		})
	}

	t.Run("after-rename", func(t *testing.T) {
		r, points, ids, c := setup(t)
		fullPath := r.Path("m", &c.Points[0])
		stage(t, r, c, true)
		// Both the old full and the merged full are on disk and listed;
		// each point restores, the old full's on its own.
		got := theChain(t, r)
		if len(got.Points) != 3 || got.Points[0].Kind != format.KindFull || got.Points[1].Kind != format.KindMerged {
			t.Fatalf("listing after the rename: %+v", got.Points)
		}
		if pts, err := got.ChainUpTo(&got.Points[2]); err != nil || len(pts) != 2 || pts[0].FileID != ids[1] {
			t.Fatalf("the last point does not start at the merged full: %v %v", pts, err)
		}
		if pts, err := got.ChainUpTo(&got.Points[0]); err != nil || len(pts) != 1 {
			t.Fatalf("the old full: %v %v", pts, err)
		}
		allRestore(t, r, points, ids, 0)
		merged := dirState(t, filepath.Dir(fullPath))
		lock(t, r) // completes
		if _, err := os.Stat(fullPath); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the superseded full survived the lock: %v", err)
		}
		delete(merged, fullPath)
		if !maps2Equal(merged, dirState(t, filepath.Dir(fullPath))) {
			t.Error("completing the merge changed other files")
		}
		if got := theChain(t, r); len(got.Points) != 2 || got.Points[0].Kind != format.KindMerged {
			t.Fatalf("listing after recovery: %+v", got.Points)
		}
		allRestore(t, r, points, ids, 1)
	})

	t.Run("damaged-merged-full", func(t *testing.T) {
		// A merged full that does not open never gets files deleted.
		r, points, ids, c := setup(t)
		fullPath, mergedPath := r.Path("m", &c.Points[0]), r.Path("m", &c.Points[1])
		stage(t, r, c, true)
		st, _ := os.Stat(mergedPath)
		os.Truncate(mergedPath, st.Size()-1)
		lock(t, r)
		if _, err := os.Stat(fullPath); err != nil {
			t.Fatalf("a damaged merged full got the full deleted: %v", err)
		}
		restorable(t, r, ids[0], points[0])
	})
}
