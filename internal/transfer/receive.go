package transfer

import (
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/repo"
)

// ErrRefused matches every transfer the receiver refuses.
var ErrRefused = errors.New("transfer refused")

func refuse(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Receiver writes one received backup file into a repository.
type Receiver struct {
	r       *repo.Repo
	backup  string
	h       *format.Header
	lock    *repo.Lock
	pending *repo.Pending
	w       *format.Writer
	tr      *trailer
	Records int
	Bytes   int64

	hb, kb []byte // the header and key table as received
	// The last durable checkpoint, where a cut-off transfer resumes.
	cp      format.Checkpoint
	cpTr    []byte // trailer hash state at cp
	cpBytes int64
	Session string // the grant's session, which a resume must name
}

// Expect is what the receiver checks the new file against: what the
// controller's grant names, and the target repository's policy.
type Expect struct {
	Backup            string
	BackupID          format.ID
	ChainID           format.ID
	FileID            format.ID
	Sequence          uint32
	RequireEncryption bool
}

// NewReceiver checks a file's header and key table against what was
// granted and what the repository holds, and starts writing it. It holds
// the backup's lock until Commit or Abort.
func NewReceiver(r *repo.Repo, hb, kb []byte, want Expect) (*Receiver, error) {
	h, err := format.ParseHeader("(received)", hb)
	if err != nil {
		return nil, refuse("header: %v", err)
	}
	switch {
	case h.BackupName != want.Backup:
		return nil, refuse("the file is for backup %q, the grant for %q", h.BackupName, want.Backup)
	case h.BackupID != want.BackupID || h.ChainID != want.ChainID || h.FileID != want.FileID || h.Sequence != want.Sequence:
		return nil, refuse("the file's backup, chain, file id or sequence is not the one granted")
	case want.RequireEncryption && !h.Encrypted():
		return nil, refuse("repository requires encryption and the file is not encrypted")
	}
	kt, err := format.ParseKeyTable("(received)", int64(len(hb)), kb, h.KeyTableCap)
	if err != nil {
		return nil, refuse("key table: %v", err)
	}
	if err := format.CheckKeyTable("(received)", int64(len(hb)), kt, h); err != nil {
		return nil, refuse("key table: %v", err)
	}
	lock, err := r.Lock(want.Backup)
	if err != nil {
		return nil, err
	}
	rc := &Receiver{r: r, backup: want.Backup, h: h, lock: lock, tr: newTrailer()}
	if err := rc.checkChain(); err != nil {
		lock.Unlock()
		return nil, err
	}
	if _, err := r.RemovePartials(want.Backup); err != nil {
		lock.Unlock()
		return nil, err
	}
	if rc.pending, err = r.NewFile(want.Backup, h.ChainID, h.Sequence, h.FileID); err != nil {
		lock.Unlock()
		return nil, err
	}
	if rc.w, err = format.NewWriter(rc.pending, *h, *kt); err != nil {
		rc.Abort()
		return nil, refuse("%v", err)
	}
	// What the writer puts down must be exactly what was sent, or the
	// trailer and the sender's idea of the file disagree.
	hb2, _ := format.MarshalHeader(rc.w.Header())
	kb2, _ := format.MarshalKeyTable(kt, h.KeyTableCap)
	if subtle.ConstantTimeCompare(hb, hb2) != 1 || subtle.ConstantTimeCompare(kb, kb2) != 1 {
		rc.Abort()
		return nil, refuse("header or key table is not in canonical form")
	}
	rc.tr.part(hb)
	rc.tr.part(kb)
	rc.hb, rc.kb = bytes.Clone(hb), bytes.Clone(kb)
	if _, err := rc.Checkpoint(); err != nil {
		rc.Abort()
		return nil, err
	}
	return rc, nil
}

// FileID is the id of the file being received.
func (rc *Receiver) FileID() format.ID { return rc.h.FileID }

// SinceCheckpoint is how many record bytes arrived after the last
// checkpoint.
func (rc *Receiver) SinceCheckpoint() int64 { return rc.Bytes - rc.cpBytes }

// Checkpoint makes everything received so far durable and remembers it as
// the point to resume from; it returns how many records that is.
func (rc *Receiver) Checkpoint() (int, error) {
	cp, err := rc.w.Flush()
	if err != nil {
		return 0, fmt.Errorf("write to repository %s: %w", rc.r.Dir, err)
	}
	if err := rc.pending.Sync(); err != nil {
		return 0, fmt.Errorf("write to repository %s: %w", rc.r.Dir, err)
	}
	st, err := rc.tr.state()
	if err != nil {
		return 0, err
	}
	rc.cp, rc.cpTr, rc.cpBytes = cp, st, rc.Bytes
	return cp.Records, nil
}

// Rewind returns to the last checkpoint, dropping what arrived after it,
// for a resumed transfer of the same file: hb and kb, as sent again, must
// be the bytes the file began with. It returns the records to resume after.
func (rc *Receiver) Rewind(hb, kb []byte) (int, error) {
	if !bytes.Equal(hb, rc.hb) || !bytes.Equal(kb, rc.kb) {
		return 0, refuse("a resumed transfer must send the same header and key table")
	}
	if err := rc.pending.Rewind(rc.cp.Offset); err != nil {
		return 0, err
	}
	if err := rc.w.Rewind(rc.cp); err != nil {
		return 0, err
	}
	if err := rc.tr.restore(rc.cpTr); err != nil {
		return 0, err
	}
	rc.Records, rc.Bytes = rc.cp.Records, rc.cpBytes
	return rc.cp.Records, nil
}

// checkChain makes sure the file continues the chain as the repository
// holds it: a full starts a chain that does not exist; an incremental
// follows the chain's newest point, in the same backup.
func (rc *Receiver) checkChain() error {
	h := rc.h
	ix, err := rc.r.Index(rc.backup)
	if err != nil && !errors.Is(err, repo.ErrNoBackup) {
		return err
	}
	var chain *repo.Chain
	if ix != nil {
		for _, p := range ix.Points() {
			if p.Damaged == "" && p.BackupID != h.BackupID {
				return refuse("backup %s in this repository has another backup id", rc.backup)
			}
			if p.FileID == h.FileID {
				return refuse("file %s exists already", h.FileID)
			}
		}
		for i := range ix.Chains {
			if ix.Chains[i].ID == h.ChainID {
				chain = &ix.Chains[i]
			}
		}
	}
	if h.Kind.IsFull() {
		if chain != nil {
			return refuse("chain %s exists already; a full starts a new chain", h.ChainID)
		}
		return nil
	}
	if chain == nil {
		return refuse("chain %s does not exist here", h.ChainID)
	}
	last := &chain.Points[len(chain.Points)-1]
	if last.Damaged != "" || last.FileID != h.ParentID || last.Sequence+1 != h.Sequence {
		return refuse("the file does not follow the newest point of chain %s (sequence %d)", h.ChainID, last.Sequence)
	}
	return nil
}

// Record writes one record. The receiver computes its checksum itself.
func (rc *Receiver) Record(hdr, payload []byte) error {
	if len(hdr) != format.RecordHeaderSize {
		return refuse("record header of %d bytes", len(hdr))
	}
	rh, ok := format.ParseRecordHeader(hdr)
	if !ok {
		return refuse("malformed record header")
	}
	sum := format.RecordChecksum(hdr, payload)
	if err := rc.w.WriteRecord(&rh, payload, &sum); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			// The disk, not the sender: say which repository and why.
			return fmt.Errorf("write to repository %s: %w", rc.r.Dir, err)
		}
		return refuse("%v", err)
	}
	rc.tr.record(sum)
	rc.Records++
	rc.Bytes += int64(len(hdr) + len(payload))
	return nil
}

// Commit checks the catalog section and the trailer, finishes the file,
// checks it opens, and commits it. It returns the committed point.
func (rc *Receiver) Commit(catalog, trailerHash []byte) (*repo.Point, error) {
	defer rc.lock.Unlock()
	rc.tr.part(catalog)
	want := rc.tr.sum()
	if subtle.ConstantTimeCompare(want[:], trailerHash) != 1 {
		rc.pending.Abort()
		return nil, refuse("trailer hash does not match what arrived")
	}
	if _, err := rc.w.Finish(catalog); err != nil {
		rc.pending.Abort()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return nil, fmt.Errorf("write to repository %s: %w", rc.r.Dir, err)
		}
		return nil, refuse("%v", err)
	}
	// Structure, footer hash and block map, read back before commit.
	f, fd, err := format.OpenPath(rc.pending.Name())
	if err != nil {
		rc.pending.Abort()
		return nil, fmt.Errorf("written file does not open: %w", err)
	}
	fd.Close()
	_ = f
	if _, err := rc.pending.Commit(); err != nil {
		return nil, err
	}
	ix, err := rc.r.Index(rc.backup)
	if err != nil {
		return nil, err
	}
	for _, p := range ix.Points() {
		if p.FileID == rc.h.FileID {
			return p, nil
		}
	}
	return nil, fmt.Errorf("committed file %s is not listed", rc.h.FileID)
}

// Abort removes the partial file and releases the lock.
func (rc *Receiver) Abort() {
	if rc.pending != nil {
		rc.pending.Abort()
	}
	rc.lock.Unlock()
}
