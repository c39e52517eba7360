package backup

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ferrybackup/ferry/internal/format"
)

// source is what a backup reads: the catalog objects (metadata) and how
// to open the contents of each.
type source struct {
	root     string
	kind     format.SourceKind
	objects  []format.Object
	warnings []string
}

// scan walks path and returns its objects in path order, without reading
// any contents. skip, when set, is a directory (the repository itself)
// that is left out.
func scan(path, skip string) (*source, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs) // the source itself may be a symlink to what to back up
	if err != nil {
		return nil, fmt.Errorf("backup source: %w", err)
	}
	src := &source{root: abs}
	switch {
	case st.Mode().IsRegular():
		src.kind = format.SourceFile
		o := objectFromInfo(".", st)
		src.objects = []format.Object{o}
		return src, nil
	case st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		src.kind = format.SourceDevice
		size, err := deviceSize(abs)
		if err != nil {
			return nil, err
		}
		o := objectFromInfo(".", st)
		o.Type, o.Size = format.ObjectDevice, uint64(size)
		src.objects = []format.Object{o}
		return src, nil
	case st.IsDir():
		src.kind = format.SourceDir
	default:
		return nil, fmt.Errorf("backup source %s is a %s: back up a regular file, a block device or a directory", path, st.Mode().Type())
	}
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == abs {
				return err
			}
			src.warnings = append(src.warnings, fmt.Sprintf("skipped %s: %v", p, err))
			if d != nil && d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if skip != "" && p == skip {
			src.warnings = append(src.warnings, fmt.Sprintf("skipped %s: it is the repository being written", p))
			return fs.SkipDir
		}
		rel, err := filepath.Rel(abs, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			src.warnings = append(src.warnings, fmt.Sprintf("skipped %s: %v", p, err))
			return nil
		}
		var o format.Object
		switch {
		case info.IsDir(), info.Mode().IsRegular():
			o = objectFromInfo(filepath.ToSlash(rel), info)
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				src.warnings = append(src.warnings, fmt.Sprintf("skipped %s: %v", p, err))
				return nil
			}
			o = objectFromInfo(filepath.ToSlash(rel), info)
			o.Target = target
		default:
			src.warnings = append(src.warnings, fmt.Sprintf("skipped %s: a %s is not backed up", p, info.Mode().Type()))
			return nil
		}
		src.objects = append(src.objects, o)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup source %s: %w", path, err)
	}
	return src, nil
}

func objectFromInfo(rel string, info fs.FileInfo) format.Object {
	o := format.Object{Path: rel, MTime: info.ModTime().UnixNano(), Mode: unixMode(info.Mode())}
	switch {
	case info.IsDir():
		o.Type = format.ObjectDir
	case info.Mode()&fs.ModeSymlink != 0:
		o.Type = format.ObjectSymlink
	default:
		o.Type = format.ObjectFile
		o.Size = uint64(info.Size())
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		o.UID, o.GID = st.Uid, st.Gid
	}
	return o
}

// unixMode converts Go's mode bits to the Unix ones the catalog stores.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= syscall.S_ISUID
	}
	if m&fs.ModeSetgid != 0 {
		u |= syscall.S_ISGID
	}
	if m&fs.ModeSticky != 0 {
		u |= syscall.S_ISVTX
	}
	return u
}

// goMode is the inverse of unixMode.
func goMode(u uint32) fs.FileMode {
	m := fs.FileMode(u & 0o777)
	if u&syscall.S_ISUID != 0 {
		m |= fs.ModeSetuid
	}
	if u&syscall.S_ISGID != 0 {
		m |= fs.ModeSetgid
	}
	if u&syscall.S_ISVTX != 0 {
		m |= fs.ModeSticky
	}
	return m
}

func deviceSize(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("open device: %w", err)
	}
	defer f.Close()
	n, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("size of device %s: %w", path, err)
	}
	return n, nil
}

// open returns the contents of object o.
func (s *source) open(o *format.Object) (*os.File, error) {
	p := s.root
	if o.Path != "." {
		p = filepath.Join(s.root, filepath.FromSlash(o.Path))
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
