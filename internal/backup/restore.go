package backup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/repo"
)

// RestoreOptions configure a restore.
type RestoreOptions struct {
	Point    string // file id or a unique prefix; empty means the latest point
	Keys     *keyring.Keyring
	Workers  int
	Logger   hclog.Logger
	Progress func(done int64)
}

// RestoreResult describes a finished restore.
type RestoreResult struct {
	Point    *repo.Point
	Objects  int
	Bytes    int64
	Duration time.Duration
}

const partialSuffix = ".ferry-partial"

// ErrTargetNotEmpty is returned when a restore would mix with existing files.
var ErrTargetNotEmpty = errors.New("restore target exists and is not empty")

// Restore brings a restore point back to the path to: a directory for a
// point of a directory, a file or block device for a point of a file or
// device. Every block is checked against the catalog's digest before it
// is written, and files appear under their names only once complete.
func Restore(ctx context.Context, r *repo.Repo, backup, to string, o RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Keys == nil {
		o.Keys = keyring.New()
	}
	v, err := openPoint(r, backup, o.Point, o.Keys)
	if err != nil {
		return nil, err
	}
	defer v.close()
	files, cat, p := v.files, v.cat, v.point
	last := files[len(files)-1]
	rs := &restorer{files: files, bix: v.bix, blockSize: last.f.Header.BlockSize, o: o}
	switch cat.SourceKind {
	case format.SourceDir:
		err = rs.restoreDir(ctx, cat, to)
	default:
		err = rs.restoreSingle(ctx, cat, to)
	}
	if err != nil {
		return nil, err
	}
	return &RestoreResult{Point: p, Objects: len(cat.Objects), Bytes: rs.bytes.Load(), Duration: time.Since(start)}, nil
}

type restorer struct {
	files     []*chainFile
	bix       map[format.BlockKey]loc
	blockSize uint32
	o         RestoreOptions
	bytes     atomic.Int64
}

// target is one object being written.
type target struct {
	obj   *format.Object
	f     *os.File
	tmp   string // partial name, "" when writing in place (a device)
	final string
	left  atomic.Int64
	meta  bool // apply mode, owner and mtime when done
}

type restoreJob struct {
	t     *target
	block uint64
}

func (rs *restorer) restoreDir(ctx context.Context, cat *format.Catalog, to string) error {
	if err := prepareDir(to); err != nil {
		return err
	}
	var targets []*target
	var dirs []*format.Object
	cleanup := func() {
		for _, t := range targets {
			if t.f != nil {
				t.f.Close()
			}
			if t.tmp != "" {
				os.Remove(t.tmp)
			}
		}
	}
	for i := range cat.Objects {
		obj := &cat.Objects[i]
		p := to
		if obj.Path != "." {
			p = filepath.Join(to, filepath.FromSlash(obj.Path))
		}
		if !filepath.IsLocal(filepath.FromSlash(obj.Path)) && obj.Path != "." {
			cleanup()
			return fmt.Errorf("restore: catalog path %q leaves the target directory", obj.Path)
		}
		switch obj.Type {
		case format.ObjectDir:
			if obj.Path != "." {
				if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					cleanup()
					return fmt.Errorf("restore: %w", err)
				}
			}
			dirs = append(dirs, obj)
		case format.ObjectSymlink:
			if err := os.Symlink(obj.Target, p); err != nil {
				cleanup()
				return fmt.Errorf("restore: %w", err)
			}
			setOwner(p, obj, true)
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{unix.NsecToTimespec(obj.MTime), unix.NsecToTimespec(obj.MTime)}, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				cleanup()
				return fmt.Errorf("restore: times of %s: %w", p, err)
			}
		case format.ObjectFile, format.ObjectDevice:
			t, err := newFileTarget(obj, p)
			if err != nil {
				cleanup()
				return err
			}
			targets = append(targets, t)
		}
	}
	if err := rs.run(ctx, targets); err != nil {
		cleanup()
		return err
	}
	// Directories last, deepest first, so their mtimes are not disturbed by
	// their children and a read-only directory did not block them.
	sort.Slice(dirs, func(i, j int) bool { return dirs[i].Path > dirs[j].Path })
	for _, d := range dirs {
		p := to
		if d.Path != "." {
			p = filepath.Join(to, filepath.FromSlash(d.Path))
		}
		if err := applyMeta(p, d); err != nil {
			return err
		}
	}
	return nil
}

// prepareDir creates to, or accepts it when it is an empty directory.
func prepareDir(to string) error {
	st, err := os.Stat(to)
	if errors.Is(err, fs.ErrNotExist) {
		return os.MkdirAll(to, 0o700)
	}
	if err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("restore target %s is not a directory, and the point is of a directory", to)
	}
	ents, err := os.ReadDir(to)
	if err != nil {
		return fmt.Errorf("restore target: %w", err)
	}
	if len(ents) > 0 {
		return fmt.Errorf("restore target %s: %w; restore into a new or empty directory", to, ErrTargetNotEmpty)
	}
	return nil
}

func newFileTarget(obj *format.Object, final string) (*target, error) {
	tmp := final + partialSuffix
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	t := &target{obj: obj, f: f, tmp: tmp, final: final, meta: true}
	t.left.Store(int64(len(obj.Digests)))
	return t, nil
}

// restoreSingle restores a point of one file or device onto to: an
// existing block device is written in place; an existing directory gets
// the file under its original name; anything else is a new file.
func (rs *restorer) restoreSingle(ctx context.Context, cat *format.Catalog, to string) error {
	if len(cat.Objects) != 1 {
		return fmt.Errorf("restore: a point of a single file holds %d objects", len(cat.Objects))
	}
	obj := &cat.Objects[0]
	st, err := os.Stat(to)
	switch {
	case err == nil && st.IsDir():
		to = filepath.Join(to, filepath.Base(cat.SourcePath))
		if _, err := os.Lstat(to); err == nil {
			return fmt.Errorf("restore target %s exists already", to)
		}
	case err == nil && st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		size, err := deviceSize(to)
		if err != nil {
			return err
		}
		if uint64(size) < obj.Size {
			return fmt.Errorf("restore target device %s holds %d bytes, the point needs %d", to, size, obj.Size)
		}
		f, err := os.OpenFile(to, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		t := &target{obj: obj, f: f, final: to}
		t.left.Store(int64(len(obj.Digests)))
		if err := rs.run(ctx, []*target{t}); err != nil {
			f.Close()
			return err
		}
		return nil
	case err == nil:
		return fmt.Errorf("restore target %s exists already; remove it or restore elsewhere", to)
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("restore target: %w", err)
	}
	t, err := newFileTarget(obj, to)
	if err != nil {
		return err
	}
	if err := rs.run(ctx, []*target{t}); err != nil {
		if t.f != nil {
			t.f.Close()
		}
		os.Remove(t.tmp)
		return err
	}
	return nil
}

// run writes the blocks of targets on the workers, finishing each target
// as its last block lands.
func (rs *restorer) run(ctx context.Context, targets []*target) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &pipeline{ctx: ctx, cancel: cancel}
	jobs := make(chan restoreJob, 4*rs.o.Workers)
	var wg sync.WaitGroup
	var done atomic.Int64
	for range rs.o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := &opener{}
			maxRec := int(format.RecordHeaderSize + rs.blockSize + format.TagSize)
			rec := make([]byte, maxRec)
			dst := make([]byte, rs.blockSize)
			scratch := make([]byte, rs.blockSize+format.TagSize)
			for j := range jobs {
				if ctx.Err() != nil {
					continue
				}
				n, err := rs.block(op, j, rec, dst, scratch)
				if err != nil {
					p.fail(err)
					continue
				}
				rs.bytes.Add(int64(n))
				if rs.o.Progress != nil {
					rs.o.Progress(done.Add(int64(n)))
				}
				if j.t.left.Add(-1) == 0 {
					if err := finish(j.t); err != nil {
						p.fail(err)
					}
				}
			}
		}()
	}
	func() {
		defer close(jobs)
		for _, t := range targets {
			if len(t.obj.Digests) == 0 {
				if err := finish(t); err != nil {
					p.fail(err)
					return
				}
				continue
			}
			for b := range t.obj.Digests {
				select {
				case jobs <- restoreJob{t: t, block: uint64(b)}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	wg.Wait()
	if p.err != nil {
		return p.err
	}
	return ctx.Err()
}

// block restores one block: read and check the record, open it, compare
// the digest with the catalog, write it.
func (rs *restorer) block(op *opener, j restoreJob, rec, dst, scratch []byte) (int, error) {
	obj := j.t.obj
	l := rs.bix[format.BlockKey{Object: obj.ID, Block: j.block}]
	cf := rs.files[l.file]
	e := &cf.f.Entries[l.entry]
	rh, payload, err := cf.f.ReadRecord(e, rec)
	if err != nil {
		return 0, err
	}
	op.sessions = cf.sessions
	plain, err := op.open(cf.f, e, &rh, payload, dst, scratch)
	if err != nil {
		return 0, err
	}
	if digest(plain) != obj.Digests[j.block] {
		return 0, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
			Reason: fmt.Sprintf("block %d of %s does not match the digest in the catalog", j.block, obj.Path)}
	}
	if want := format.BlockLen(obj.Size, rs.blockSize, j.block); uint32(len(plain)) != want {
		return 0, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordHeader, Offset: e.Offset,
			Reason: fmt.Sprintf("block %d of %s is %d bytes, want %d", j.block, obj.Path, len(plain), want)}
	}
	if _, err := j.t.f.WriteAt(plain, int64(j.block)*int64(rs.blockSize)); err != nil {
		return 0, fmt.Errorf("restore %s: %w", j.t.final, err)
	}
	return len(plain), nil
}

// finish closes a complete target and gives it its name and metadata.
func finish(t *target) error {
	if t.tmp == "" { // a device, written in place
		if err := t.f.Sync(); err != nil {
			return fmt.Errorf("restore %s: %w", t.final, err)
		}
		err := t.f.Close()
		t.f = nil
		return err
	}
	if err := t.f.Close(); err != nil {
		return fmt.Errorf("restore %s: %w", t.final, err)
	}
	t.f = nil
	if err := os.Rename(t.tmp, t.final); err != nil {
		return fmt.Errorf("restore %s: %w", t.final, err)
	}
	t.tmp = ""
	return applyMeta(t.final, t.obj)
}

func applyMeta(p string, obj *format.Object) error {
	setOwner(p, obj, false)
	if err := os.Chmod(p, goMode(obj.Mode)); err != nil {
		return fmt.Errorf("restore: mode of %s: %w", p, err)
	}
	mt := time.Unix(0, obj.MTime)
	if err := os.Chtimes(p, mt, mt); err != nil {
		return fmt.Errorf("restore: times of %s: %w", p, err)
	}
	return nil
}

// setOwner restores ownership when running as root; anyone else gets the
// files as their own, as cp and tar do.
func setOwner(p string, obj *format.Object, link bool) {
	if os.Geteuid() != 0 {
		return
	}
	if link {
		_ = os.Lchown(p, int(obj.UID), int(obj.GID))
		return
	}
	_ = os.Chown(p, int(obj.UID), int(obj.GID))
}
