package repo

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/format"
)

// writePoint commits a minimal unencrypted backup file with no records.
func writePoint(t *testing.T, r *Repo, backup string, chain, parent format.ID, seq uint32) format.ID {
	t.Helper()
	id := format.ID{byte(seq), 0xf0}
	id[15] = chain[0]
	h := format.Header{FileID: id, BackupID: format.ID{9}, ChainID: chain, ParentID: parent, Sequence: seq,
		Kind: format.KindFull, BlockSize: 1 << 20, Created: time.Unix(int64(1000+seq), 0).UTC(), BackupName: backup}
	if seq > 1 {
		h.Kind = format.KindIncremental
	}
	p, err := r.NewFile(backup, chain, seq, id)
	if err != nil {
		t.Fatal(err)
	}
	w, err := format.NewWriter(p.File(), h, format.KeyTable{})
	if err != nil {
		t.Fatal(err)
	}
	cat := &format.Catalog{SourceKind: format.SourceDir, SourcePath: "/x", Objects: []format.Object{{ID: 1, Type: format.ObjectDir, Path: "."}}}
	if _, err := w.Finish(format.SealCatalog(cat.Marshal(), &h, [16]byte{}, nil, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Commit(); err != nil {
		t.Fatal(err)
	}
	return id
}

func TestIndexRebuiltFromFiles(t *testing.T) {
	r, err := Create(filepath.Join(t.TempDir(), "r"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Lock("b")
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := format.ID{1}, format.ID{2}
	a := writePoint(t, r, "b", c1, format.ID{}, 1)
	writePoint(t, r, "b", c1, a, 2)
	writePoint(t, r, "b", c2, format.ID{}, 1)
	l.Unlock()

	ix, err := r.Index("b")
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Chains) != 2 || len(ix.Chains[0].Points) != 2 || ix.Chains[0].ID != c1 || ix.Chains[1].ID != c2 {
		t.Fatalf("index: %+v", ix)
	}
	cache := filepath.Join(r.Dir, backupsDir, "b", indexFile)
	if _, err := os.Stat(cache); err != nil {
		t.Fatalf("no cache written: %v", err)
	}
	// A cache that lies is not believed: it no longer matches the files.
	if err := os.WriteFile(cache, []byte(`{"backup":"b","chains":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if ix, err = r.Index("b"); err != nil || len(ix.Points()) != 3 {
		t.Fatalf("stale cache was used: %v %d points", err, len(ix.Points()))
	}
	// Garbage in the cache, and a missing cache, are rebuilt too.
	os.WriteFile(cache, []byte("{not json"), 0o600)
	if ix, err = r.Index("b"); err != nil || len(ix.Points()) != 3 {
		t.Fatalf("garbage cache: %v", err)
	}
	os.Remove(cache)
	// A removed file disappears from the listing.
	os.Remove(r.Path("b", &ix.Chains[1].Points[0]))
	if ix, err = r.Index("b"); err != nil || len(ix.Points()) != 2 {
		t.Fatalf("after removing a file: %v %d points", err, len(ix.Points()))
	}
	// A partial file is never a point.
	os.WriteFile(filepath.Join(r.Dir, backupsDir, "b", c1.String(), FileName(3, format.ID{3})+partialExt), []byte("half"), 0o600)
	if ix, err = r.Index("b"); err != nil || len(ix.Points()) != 2 {
		t.Fatalf("partial listed: %v %d points", err, len(ix.Points()))
	}
	p, c, err := ix.Find("")
	if err != nil || p.Sequence != 2 || c.ID != c1 {
		t.Fatalf("latest point: %+v %v", p, err)
	}
	pts, err := c.ChainUpTo(p)
	if err != nil || len(pts) != 2 {
		t.Fatalf("chain up to latest: %v", err)
	}
	if _, _, err := ix.Find("ffff"); !errors.Is(err, ErrNoPoint) {
		t.Fatalf("unknown point: %v", err)
	}
}

func TestLockIsExclusive(t *testing.T) {
	r, err := Create(filepath.Join(t.TempDir(), "r"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := r.Lock("b")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock("b"); !errors.Is(err, ErrLocked) {
		t.Fatalf("second lock: want ErrLocked, got %v", err)
	}
	l.Unlock()
	l2, err := r.Lock("b")
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	l2.Unlock()
}

func TestCreateRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o600)
	if _, err := Create(dir); err == nil {
		t.Fatal("a non-empty directory became a repository")
	}
	if _, err := Open(dir); !errors.Is(err, ErrNotRepository) {
		t.Fatalf("open: %v", err)
	}
	if err := ValidateName("../x"); err == nil {
		t.Fatal("a name with a slash was accepted")
	}
}

func TestPendingAbortRemovesPartial(t *testing.T) {
	r, _ := Create(filepath.Join(t.TempDir(), "r"))
	p, err := r.NewFile("b", format.ID{1}, 1, format.ID{2})
	if err != nil {
		t.Fatal(err)
	}
	p.File().Write([]byte("x"))
	p.Abort()
	if _, err := os.Stat(p.Name()); !os.IsNotExist(err) {
		t.Fatalf("partial file still there: %v", err)
	}
}
