package repo

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

// Retention drops a chain's oldest point by merging the chain's first file
// (a full) with the incremental after it into one merged full that is the
// incremental's point, without any key: records move between files of a
// backup byte for byte (their AAD does not bind the file), and the
// incremental's catalog section is kept as it is, so the merged file keeps
// the incremental's file id and sequence, which the catalog is bound to.
//
// Crash safety needs no journal. The merged file is written as
// NAME.merge.partial next to the incremental NAME and fsynced; it then
// replaces the incremental by rename (one atomic step: before it the old
// pair is on disk, after it the merged full, either restores the point),
// the directory is fsynced, and the old full is deleted. A merge cut off
// before the rename leaves a partial that RecoverMerges (at the next Lock)
// and RemovePartials delete: the merge is rolled back. A merge cut off
// after it leaves the old full next to the merged full; RecoverMerges
// deletes every file of a chain older than a merged full: the merge is
// completed.

const mergePartialExt = ".merge" + partialExt

// ErrCannotMerge is returned when a chain's first two files cannot be
// merged: they are not a full and its incremental, or they disagree.
var ErrCannotMerge = errors.New("cannot merge")

// MergeResult says what a merge did.
type MergeResult struct {
	Removed     format.ID // the point that is gone: the old full's
	Merged      *Point    // the merged full, which is the incremental's point
	BytesBefore int64     // of the two files
	BytesAfter  int64     // of the merged file
	FromFull    int       // records taken over from the full
	FromInc     int       // records taken over from the incremental (all of them)
	Superseded  int       // records of the full dropped: the incremental has a newer one
	Outside     int       // records of the full dropped: outside the point's extents
	SecretsKept int       // session secrets the merged file lists
	Partials    []string  // stale partial files removed first
}

// Merge merges the first two files of chain (a full or merged full, and
// the incremental whose parent it is) into one merged full that is the
// incremental's point, and deletes the full. It takes no key and opens
// nothing sealed. Call it with the backup's lock held.
//
// extents, when not nil, holds for each object of the incremental's point
// how many blocks it has there; a record of the full outside them (a
// deleted object, blocks cut off by truncation) is dropped instead of
// carried forward. It must come from the point's own catalog (for an
// unencrypted file, Extents computes it): extents that leave out a block
// the point needs make that point unrestorable. Merge refuses extents that
// leave out a record of the incremental, and, for an unencrypted file,
// extents that do not cover its catalog. nil keeps every record.
//
// Dropping is sound because each incremental stores every block whose
// digest differs from its parent's catalog: a later point that does not
// store a block shares it with the point before it, so a record a later
// point resolves to is one the merged point resolves to, which is inside
// its extents.
func (r *Repo) Merge(backup string, chain *Chain, extents map[uint64]uint64) (*MergeResult, error) {
	return r.merge(backup, chain, extents, mergeDone)
}

// mergeStep is where a merge stops: mergeDone for a whole merge, the
// others to stage a crash in tests.
type mergeStep int

const (
	mergeWritten mergeStep = iota + 1 // merged file durable as a partial
	mergeRenamed                      // merged file replaced the incremental, full still there
	mergeDone
)

func (r *Repo) merge(backup string, chain *Chain, extents map[uint64]uint64, stop mergeStep) (*MergeResult, error) {
	res := &MergeResult{}
	if chain == nil || len(chain.Points) < 2 {
		return nil, fmt.Errorf("merge in backup %s: %w: the chain has fewer than two points", backup, ErrCannotMerge)
	}
	fp, ip := &chain.Points[0], &chain.Points[1]
	switch {
	case fp.Damaged != "":
		return nil, fmt.Errorf("merge in backup %s: %w: the first file of chain %s is damaged: %s", backup, ErrCannotMerge, chain.ID, fp.Damaged)
	case ip.Damaged != "":
		return nil, fmt.Errorf("merge in backup %s: %w: the second file of chain %s is damaged: %s", backup, ErrCannotMerge, chain.ID, ip.Damaged)
	}
	var err error
	if res.Partials, err = r.RemovePartials(backup); err != nil {
		return nil, err
	}
	full, ffd, err := format.OpenPath(r.Path(backup, fp))
	if err != nil {
		return nil, fmt.Errorf("merge in backup %s: %w", backup, err)
	}
	defer ffd.Close()
	inc, ifd, err := format.OpenPath(r.Path(backup, ip))
	if err != nil {
		return nil, fmt.Errorf("merge in backup %s: %w", backup, err)
	}
	defer ifd.Close()
	if err := mergeable(full, inc, fp, ip, chain.ID); err != nil {
		return nil, fmt.Errorf("merge %s into %s: %w: %v", full.Name, inc.Name, ErrCannotMerge, err)
	}
	if err := checkExtents(inc, extents); err != nil {
		return nil, fmt.Errorf("merge %s into %s: %w", full.Name, inc.Name, err)
	}

	// The records: all of the incremental's, and the full's that it does
	// not replace and that the point still has.
	type src struct {
		f *format.File
		e *format.MapEntry
	}
	have := make(map[format.BlockKey]struct{}, len(inc.Entries))
	recs := make([]src, 0, len(inc.Entries)+len(full.Entries))
	for i := range inc.Entries {
		have[inc.Entries[i].Key()] = struct{}{}
		recs = append(recs, src{inc, &inc.Entries[i]})
	}
	res.FromInc = len(inc.Entries)
	var fromFull []*format.MapEntry
	for i := range full.Entries {
		e := &full.Entries[i]
		if _, ok := have[e.Key()]; ok {
			res.Superseded++
			continue
		}
		if extents != nil {
			if n, ok := extents[e.Object]; !ok || e.Block >= n {
				res.Outside++
				continue
			}
		}
		fromFull = append(fromFull, e)
		recs = append(recs, src{full, e})
	}
	res.FromFull = len(fromFull)
	// Block order, so that a restore, which goes object by object, reads
	// the merged file mostly front to back.
	slices.SortFunc(recs, func(a, b src) int {
		return cmp.Or(cmp.Compare(a.e.Object, b.e.Object), cmp.Compare(a.e.Block, b.e.Block))
	})

	// The session secrets: the incremental's, and those of the full that
	// seal a record carried over. A secret that seals nothing is left out,
	// so a merged full never needs a key it does not use and its list
	// does not grow with every merge.
	h := *inc.Header
	h.Kind, h.ParentID, h.KeyTableCap = format.KindMerged, format.ID{}, 0
	h.Secrets = slices.Clone(inc.Header.Secrets)
	if h.Encrypted() {
		used, err := recordKeyIDs(ffd, full, fromFull)
		if err != nil {
			return nil, err
		}
		for _, id := range full.Header.Secrets {
			if used[id] && !h.HasSecret(id) {
				h.Secrets = append(h.Secrets, id)
			}
		}
	}
	res.SecretsKept = len(h.Secrets)
	var kt format.KeyTable
	for _, e := range append(slices.Clone(inc.KeyTable.Entries), full.KeyTable.Entries...) {
		if !h.HasSecret(e.Secret) || slices.ContainsFunc(kt.Entries, func(k format.KeyEntry) bool {
			return k.Secret == e.Secret && k.Type == e.Type && bytes.Equal(k.Data, e.Data)
		}) {
			continue
		}
		kt.Entries = append(kt.Entries, e)
	}

	final := r.Path(backup, ip)
	tmp := final + mergePartialExt
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("merge into %s: %w", final, err)
	}
	written := false
	defer func() {
		if !written {
			out.Close()
			os.Remove(tmp)
		}
	}()
	w, err := format.NewWriter(out, h, kt)
	if err != nil {
		return nil, fmt.Errorf("merge into %s: %w", final, err)
	}
	buf := make([]byte, 0, format.RecordHeaderSize+int(h.BlockSize)+format.TagSize)
	for _, s := range recs {
		// ReadRecord checks the record against its checksum and its
		// header against the file's: the keyless verify of each record.
		rh, payload, err := s.f.ReadRecord(s.e, buf)
		if err != nil {
			return nil, fmt.Errorf("merge into %s: %w", final, err)
		}
		// The writer encodes rh again; the encoding of a record header is
		// unique, so the bytes and the checksum carry over unchanged.
		if err := w.WriteRecord(&rh, payload, &s.e.Checksum); err != nil {
			return nil, fmt.Errorf("merge into %s: %w", final, err)
		}
	}
	if _, err := w.Finish(inc.CatalogSection()); err != nil {
		return nil, fmt.Errorf("merge into %s: %w", final, err)
	}
	if err := out.Sync(); err != nil {
		return nil, fmt.Errorf("merge into %s: fsync: %w", final, err)
	}
	if err := out.Close(); err != nil {
		return nil, fmt.Errorf("merge into %s: %w", final, err)
	}
	// Read back what was written before it replaces anything.
	mf, mfd, err := format.OpenPath(tmp)
	if err != nil {
		return nil, fmt.Errorf("merged file does not open: %w", err)
	}
	res.BytesAfter = mf.Size
	mfd.Close()
	if len(mf.Entries) != len(recs) {
		return nil, fmt.Errorf("merged file %s holds %d records, %d were written", tmp, len(mf.Entries), len(recs))
	}
	res.BytesBefore = full.Size + inc.Size
	res.Removed = full.Header.FileID
	written = true // from here on a failure leaves files for RecoverMerges
	if stop == mergeWritten {
		return res, nil
	}

	dir := filepath.Dir(final)
	if err := os.Rename(tmp, final); err != nil {
		os.Remove(tmp)
		return nil, fmt.Errorf("merge into %s: %w", final, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("merge into %s: fsync directory: %w", final, err)
	}
	if stop == mergeRenamed {
		return res, nil
	}
	if err := os.Remove(full.Name); err != nil {
		return nil, fmt.Errorf("merge into %s: remove the merged full %s: %w", final, full.Name, err)
	}
	if err := syncDir(dir); err != nil {
		return nil, fmt.Errorf("merge into %s: fsync directory: %w", final, err)
	}
	ix, err := r.Index(backup)
	if err != nil {
		return nil, err
	}
	for _, p := range ix.Points() {
		if p.FileID == h.FileID {
			res.Merged = p
			return res, nil
		}
	}
	return nil, fmt.Errorf("merged file %s is not listed", final)
}

// mergeable checks that full and inc are the first two files of a chain,
// as listed, and can share one file.
func mergeable(full, inc *format.File, fp, ip *Point, chain format.ID) error {
	fh, ih := full.Header, inc.Header
	switch {
	case fh.FileID != fp.FileID || ih.FileID != ip.FileID || fh.ChainID != chain || ih.ChainID != chain:
		return errors.New("the files changed since the chain was listed")
	case !fh.Kind.IsFull():
		return fmt.Errorf("the first file is a %s, not a full", fh.Kind)
	case ih.Kind != format.KindIncremental:
		return fmt.Errorf("the second file is a %s, not an incremental", ih.Kind)
	case ih.ParentID != fh.FileID || ih.Sequence != fh.Sequence+1:
		return fmt.Errorf("the incremental (sequence %d, parent %s) does not follow the full (sequence %d, %s)", ih.Sequence, ih.ParentID, fh.Sequence, fh.FileID)
	case fh.BackupID != ih.BackupID:
		return fmt.Errorf("backup ids differ (%s, %s)", fh.BackupID, ih.BackupID)
	case fh.Encryption != ih.Encryption:
		return fmt.Errorf("encryption differs (%s, %s)", fh.Encryption, ih.Encryption)
	case fh.BlockSize != ih.BlockSize:
		return fmt.Errorf("block sizes differ (%d, %d)", fh.BlockSize, ih.BlockSize)
	}
	return nil
}

// checkExtents refuses extents that cannot be the incremental's point's:
// every block the incremental stores is one of its point's blocks, and,
// when the catalog is readable without a key, every block of it must be
// inside them.
func checkExtents(inc *format.File, extents map[uint64]uint64) error {
	if extents == nil {
		return nil
	}
	for _, e := range inc.Entries {
		if n, ok := extents[e.Object]; !ok || e.Block >= n {
			return fmt.Errorf("extents leave out block %d of object %d, which the incremental stores: they are not its point's", e.Block, e.Object)
		}
	}
	if inc.Header.Encrypted() {
		return nil
	}
	cat, err := inc.Catalog(nil)
	if err != nil {
		return err
	}
	for i := range cat.Objects {
		o := &cat.Objects[i]
		if n := uint64(len(o.Digests)); n > 0 && extents[o.ID] < n {
			return fmt.Errorf("extents give object %d (%s) %d blocks, the point has %d", o.ID, o.Path, extents[o.ID], n)
		}
	}
	return nil
}

// recordKeyIDs reads the record headers of entries (64 bytes each, no
// checksum: the copy that follows checks every record, and the writer
// refuses a record whose key the new header does not list).
func recordKeyIDs(fd *os.File, f *format.File, entries []*format.MapEntry) (map[keys.KeyID]bool, error) {
	used := map[keys.KeyID]bool{}
	var b [format.RecordHeaderSize]byte
	for _, e := range entries {
		if _, err := fd.ReadAt(b[:], e.Offset); err != nil {
			return nil, fmt.Errorf("read backup file %s: record at offset %d: %w", f.Name, e.Offset, err)
		}
		rh, ok := format.ParseRecordHeader(b[:])
		if !ok {
			return nil, &format.CorruptError{File: f.Name, Region: format.RegionRecordHeader, Offset: e.Offset, Reason: "malformed record header of " + e.String()}
		}
		used[rh.KeyID] = true
	}
	return used, nil
}

// CatalogExtents returns the extents of a point from its catalog: for each
// object with data, its number of blocks. The controller, which can open a
// sealed catalog, computes them for Merge this way.
func CatalogExtents(c *format.Catalog) map[uint64]uint64 {
	out := make(map[uint64]uint64, len(c.Objects))
	for i := range c.Objects {
		if n := len(c.Objects[i].Digests); n > 0 {
			out[c.Objects[i].ID] = uint64(n)
		}
	}
	return out
}

// Extents returns the extents of point p from its catalog, which must be
// unencrypted: a target holds no key to open a sealed one.
func (r *Repo) Extents(backup string, p *Point) (map[uint64]uint64, error) {
	f, fd, err := format.OpenPath(r.Path(backup, p))
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	if f.Header.Encrypted() {
		return nil, fmt.Errorf("extents of %s: the catalog is encrypted; the controller computes them from the catalog it opens", f.Name)
	}
	cat, err := f.Catalog(nil)
	if err != nil {
		return nil, err
	}
	return CatalogExtents(cat), nil
}

// RecoverMerges finishes or undoes merges cut off by a crash: a merge
// partial is deleted (rolled back), and in a chain whose file of sequence
// k is a merged full that opens, every file of sequence below k is deleted
// (completed: the merged full supersedes them). Call it with the backup's
// lock held (Lock does). It returns what it did.
func (r *Repo) RecoverMerges(backup string) ([]string, error) {
	dir := r.backupDir(backup)
	chains, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recover merges of backup %s: %w", backup, err)
	}
	var done []string
	for _, c := range chains {
		if !c.IsDir() {
			continue
		}
		cdir := filepath.Join(dir, c.Name())
		d, err := recoverChain(cdir)
		done = append(done, d...)
		if err != nil {
			return done, fmt.Errorf("recover merges of backup %s: %w", backup, err)
		}
	}
	return done, nil
}

func recoverChain(cdir string) ([]string, error) {
	ents, err := os.ReadDir(cdir)
	if err != nil {
		return nil, err
	}
	type file struct {
		path string
		seq  uint32
	}
	var files []file
	var done []string
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() {
			continue
		}
		if strings.HasSuffix(name, mergePartialExt) {
			if err := os.Remove(filepath.Join(cdir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return done, err
			}
			done = append(done, "rolled back an unfinished merge: removed "+filepath.Join(cdir, name))
			continue
		}
		if seq, ok := nameSequence(name); ok {
			files = append(files, file{filepath.Join(cdir, name), seq})
		}
	}
	slices.SortFunc(files, func(a, b file) int { return cmp.Compare(b.seq, a.seq) }) // newest first
	var cut uint32
	for i, f := range files {
		if i == len(files)-1 || files[len(files)-1].seq >= f.seq {
			break // nothing older than f to supersede
		}
		if isMergedFull(f.path, f.seq) {
			cut = f.seq
			break
		}
	}
	for _, f := range files {
		if f.seq < cut {
			if err := os.Remove(f.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return done, err
			}
			done = append(done, fmt.Sprintf("completed an unfinished merge: removed %s, superseded by the merged full of sequence %d", f.path, cut))
		}
	}
	if len(done) > 0 {
		return done, syncDir(cdir)
	}
	return done, nil
}

// nameSequence reads the sequence from a file name SSSSSSSS-FILEID.ferry.
func nameSequence(name string) (uint32, bool) {
	if !strings.HasSuffix(name, fileSuffix) {
		return 0, false
	}
	seq, _, ok := strings.Cut(name, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(seq, 10, 32)
	return uint32(n), err == nil
}

// isMergedFull reports whether the file at path is a whole merged full of
// sequence seq. Only its header is read unless it is one; then the whole
// file is checked (format.Open), so that a damaged file never causes the
// files before it to be deleted.
func isMergedFull(path string, seq uint32) bool {
	fd, err := os.Open(path)
	if err != nil {
		return false
	}
	defer fd.Close()
	st, err := fd.Stat()
	if err != nil {
		return false
	}
	h, _, err := format.ReadHeader(fd, st.Size(), path)
	if err != nil || h.Kind != format.KindMerged || h.Sequence != seq {
		return false
	}
	_, err = format.Open(fd, st.Size(), path)
	return err == nil
}

// MergeStagedForTest does the steps of Merge up to a crash point, for
// tests of recovery: the merged file durable as a partial (renamed false),
// or renamed over the incremental with the old full still there.
func (r *Repo) MergeStagedForTest(backup string, chain *Chain, extents map[uint64]uint64, renamed bool) (*MergeResult, error) {
	stop := mergeWritten
	if renamed {
		stop = mergeRenamed
	}
	return r.merge(backup, chain, extents, stop)
}
