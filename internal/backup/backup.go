package backup

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// DefaultBlockSize is the block size of new backups.
const DefaultBlockSize = 1 << 20

// BlockSizes are the block sizes a backup may use.
var BlockSizes = []uint32{256 << 10, 512 << 10, 1 << 20, 4 << 20}

// Options configure a backup.
type Options struct {
	BlockSize   uint32 // one of BlockSizes; 0 means DefaultBlockSize
	Compression Compression
	// Password turns encryption on (offline use): each file gets a new
	// session secret wrapped under the password's Argon2id key.
	Password []byte
	Hint     string
	KDF      keys.KDFParams // zero means keys.DefaultKDF
	// Session and KeyTable turn encryption on with a session secret and
	// its wrapped forms made by the controller (agent use).
	Session  *keys.Session
	KeyTable format.KeyTable
	// Keys opens the previous point of the chain when it is encrypted;
	// nil means the Password.
	Keys *keyring.Keyring
	// FileID is the new file's id; zero means a random one.
	FileID format.ID
	// FullScan reads every file, even those whose size and mtime match
	// the previous point.
	FullScan bool
	// NewChain starts a new chain with a full (an active full).
	NewChain bool
	// AllowUnencrypted lets a backup without a password start a new,
	// unencrypted chain after an encrypted one instead of failing.
	AllowUnencrypted bool
	Workers          int // 0 means GOMAXPROCS
	Logger           hclog.Logger
	// Progress, when set, is called from one goroutine with the bytes of
	// source data done so far.
	Progress func(done int64)
}

// Result describes a committed restore point.
type Result struct {
	Path       string
	FileID     format.ID
	ChainID    format.ID
	Sequence   uint32
	Kind       format.Kind
	Encrypted  bool
	Objects    int
	SourceSize int64 // bytes of file contents in the point
	ReadBytes  int64 // bytes actually read (unchanged files are skipped)
	Records    int
	StoredSize int64 // bytes of the committed file
	Duration   time.Duration
	Warnings   []string
	Removed    []string // stale partial files cleaned up first
}

// ErrEncryptedChain is returned for a backup without a password whose
// latest chain is encrypted.
var ErrEncryptedChain = errors.New("the backup's latest chain is encrypted")

func newID() format.ID {
	var id format.ID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return id
}

// Backup makes a new restore point of path in backup name of r.
func Backup(ctx context.Context, r *repo.Repo, name, path string, o Options) (*Result, error) {
	start := time.Now()
	if o.BlockSize == 0 {
		o.BlockSize = DefaultBlockSize
	}
	if !validBlockSize(o.BlockSize) {
		return nil, fmt.Errorf("block size %d is not one of 256KiB, 512KiB, 1MiB, 4MiB", o.BlockSize)
	}
	if o.KDF == (keys.KDFParams{}) {
		o.KDF = keys.DefaultKDF
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	lock, err := r.Lock(name)
	if err != nil {
		return nil, err
	}
	defer lock.Unlock()
	res := &Result{}
	if res.Removed, err = r.RemovePartials(name); err != nil {
		return nil, err
	}
	for _, p := range res.Removed {
		log.Warn("removed a partial backup file left by an interrupted backup", "path", p)
	}
	ix, err := r.Index(name)
	if err != nil {
		return nil, err
	}

	// Decide what the new file continues, and check the password against
	// it before anything is written.
	plan, err := planFile(r, ix, o)
	if err != nil {
		return nil, err
	}
	if plan.note != "" {
		log.Info(plan.note)
		res.Warnings = append(res.Warnings, plan.note)
	}

	abs, _ := filepath.Abs(r.Dir)
	src, err := scan(path, abs)
	if err != nil {
		return nil, err
	}
	res.Warnings = append(res.Warnings, src.warnings...)
	assignIDs(src.objects, plan.prev)

	if o.FileID.IsZero() {
		o.FileID = newID()
	}
	h := format.Header{
		FileID: o.FileID, BackupID: plan.backupID, ChainID: plan.chainID, ParentID: plan.parentID,
		Sequence: plan.seq, Kind: format.KindFull, BlockSize: o.BlockSize, Created: time.Now().UTC(),
		BackupName: name,
	}
	if plan.seq > 1 {
		h.Kind = format.KindIncremental
	}
	kt := o.KeyTable
	session := o.Session
	if session != nil {
		h.Encryption = format.EncryptionAES256GCM
		h.Secrets = []keys.KeyID{session.ID()}
	} else if o.Password != nil {
		if session, err = keys.NewSession(); err != nil {
			return nil, err
		}
		pk := plan.passwordKey
		if pk == nil {
			if pk, err = keys.NewPasswordKey(o.Password, o.KDF, o.Hint); err != nil {
				return nil, err
			}
		} else if o.Hint != "" {
			cp := *pk
			cp.Hint = o.Hint
			pk = &cp
		}
		if kt, err = keyring.PasswordTable(pk, session); err != nil {
			return nil, err
		}
		h.Encryption = format.EncryptionAES256GCM
		h.Secrets = []keys.KeyID{session.ID()}
	}

	pending, err := r.NewFile(name, h.ChainID, h.Sequence, h.FileID)
	if err != nil {
		return nil, err
	}
	defer pending.Abort() // removes the partial file unless committed
	w, err := format.NewWriter(pending, h, kt)
	if err != nil {
		return nil, fmt.Errorf("write %s: %w", pending.Name(), err)
	}
	cat := &format.Catalog{SourceKind: src.kind, SourcePath: src.root, Objects: src.objects}
	log.Debug("starting pipeline")
	st, err := runBackupPipeline(ctx, src, cat, plan.prev, w, session, o)
	if err != nil {
		return nil, err
	}
	section, err := sealCatalog(cat, &h, session)
	if err != nil {
		return nil, err
	}
	if _, err := w.Finish(section); err != nil {
		return nil, fmt.Errorf("write %s: %w", pending.Name(), err)
	}
	log.Debug("records and catalog written; committing")
	final, err := pending.Commit()
	log.Debug("committed")
	if err != nil {
		return nil, err
	}
	info, err := os.Stat(final)
	if err != nil {
		return nil, err
	}
	// Refresh the metadata cache now, while we hold the lock, so readers
	// find it current instead of each rebuilding it.
	if _, err := r.Index(name); err != nil {
		log.Warn("could not refresh the repository index", "backup", name, "error", err)
	}
	res.Path, res.FileID, res.ChainID, res.Sequence, res.Kind = final, h.FileID, h.ChainID, h.Sequence, h.Kind
	res.Encrypted = session != nil
	res.Objects = len(cat.Objects)
	res.SourceSize, res.ReadBytes, res.Records = st.sourceSize, st.readBytes, w.Records()
	res.StoredSize = info.Size()
	res.Duration = time.Since(start)
	log.Info("backup committed", "backup", name, "point", h.FileID, "kind", h.Kind, "sequence", h.Sequence,
		"records", res.Records, "read_bytes", res.ReadBytes, "stored_bytes", res.StoredSize)
	return res, nil
}

func validBlockSize(b uint32) bool {
	for _, s := range BlockSizes {
		if s == b {
			return true
		}
	}
	return false
}

// plan is where a new file goes.
type plan struct {
	backupID, chainID, parentID format.ID
	seq                         uint32
	prev                        *format.Catalog // the parent's catalog; nil for a full
	passwordKey                 *keys.PasswordKey
	note                        string
}

func planFile(r *repo.Repo, ix *repo.Index, o Options) (*plan, error) {
	p := &plan{chainID: newID(), seq: 1}
	pts := ix.Points()
	for _, q := range pts {
		if q.Damaged == "" {
			p.backupID = q.BackupID
			break
		}
	}
	if p.backupID.IsZero() {
		p.backupID = newID()
	}
	c := ix.LatestChain()
	if c == nil {
		return p, nil
	}
	last := c.Latest()
	if last == nil {
		p.note = fmt.Sprintf("the latest chain %s has no undamaged point; starting a new chain", c.ID)
		return p, nil
	}
	encrypted := last.Encryption != format.EncryptionNone
	encrypting := o.Password != nil || o.Session != nil
	switch {
	case o.NewChain:
		p.note = "starting a new chain with a full, as asked"
		return p, nil
	case encrypted && !encrypting:
		if !o.AllowUnencrypted {
			return nil, fmt.Errorf("backup %s: %w (chain %s): give its password to continue the chain, or ask for an unencrypted new chain explicitly", ix.Backup, ErrEncryptedChain, last.ChainID)
		}
		p.note = "encryption turned off: starting a new, unencrypted chain with a full"
		return p, nil
	case !encrypted && encrypting:
		p.note = "encryption turned on: starting a new, encrypted chain with a full; the unencrypted chain stays as it is"
		return p, nil
	case last.BlockSize != o.BlockSize:
		p.note = fmt.Sprintf("block size changed from %d to %d: starting a new chain with a full", last.BlockSize, o.BlockSize)
		return p, nil
	}
	f, fd, err := format.OpenPath(r.Path(ix.Backup, last))
	if err != nil {
		return nil, fmt.Errorf("open the previous point: %w", err)
	}
	defer fd.Close()
	var meta *keys.Session
	if encrypted {
		kr := o.Keys
		if kr == nil {
			kr = keyring.New(o.Password)
		}
		if meta, err = kr.Session(f, f.CatalogKeyID()); err != nil {
			return nil, err
		}
		p.passwordKey = kr.PasswordKeyFor(meta.ID())
	}
	if p.prev, err = f.Catalog(metaAEAD(meta)); err != nil {
		return nil, fmt.Errorf("read the catalog of the previous point: %w", err)
	}
	p.chainID, p.parentID, p.seq = last.ChainID, last.FileID, last.Sequence+1
	return p, nil
}

// assignIDs gives each object the id it had in the previous point (same
// path and type), or a new one above every id the previous point used.
func assignIDs(objs []format.Object, prev *format.Catalog) {
	var next uint64 = 1
	old := map[string]*format.Object{}
	if prev != nil {
		for i := range prev.Objects {
			po := &prev.Objects[i]
			old[po.Path] = po
			next = max(next, po.ID+1)
		}
	}
	for i := range objs {
		if po, ok := old[objs[i].Path]; ok && po.Type == objs[i].Type {
			objs[i].ID = po.ID
			continue
		}
		objs[i].ID = next
		next++
	}
}

type pipelineStats struct {
	sourceSize int64
	readBytes  int64
}

func sameFile(a, b *format.Object) bool {
	return a.Type == format.ObjectFile && b.Type == format.ObjectFile && a.Size == b.Size && a.MTime == b.MTime
}

func readBlock(f io.ReaderAt, buf []byte, off int64) (int, error) {
	n, err := f.ReadAt(buf, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}
