package datagen

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// maxReported bounds the differences reported one by one: past it the
// copy is broken wholesale and a count says more than a wall of lines.
const maxReported = 30

// modeBits are the mode bits a restore must reproduce.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// SameTree fails t unless the tree at got matches the tree at want: the
// same relative paths, each of the same type; regular files with the same
// size, content, permission bits (with setuid, setgid and sticky) and mtime
// to the nanosecond; directories with the same permission bits and mtime;
// symlinks with the same target. The two roots themselves are not compared
// (a restore target's root belongs to the caller), nor are owners, atimes
// or the times of symlinks. Each difference is reported with t.Errorf as
// "path: field: want ..., got ..."; an entry missing from got is reported
// once for its whole subtree. Files are compared while streaming them, so
// their size does not matter.
func SameTree(t testing.TB, want, got string) {
	t.Helper()
	w, err := scan(want)
	if err != nil {
		t.Fatalf("same tree: %v", err)
	}
	g, err := scan(got)
	if err != nil {
		t.Fatalf("same tree: %v", err)
	}
	paths := make([]string, 0, len(w))
	for p := range w {
		paths = append(paths, p)
	}
	for p := range g {
		if _, ok := w[p]; !ok {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	var diffs []string
	// A missing or extra directory is one difference, not one per entry.
	reported := map[string]bool{}
	under := func(p string) bool {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if reported[d] {
				return true
			}
		}
		return false
	}
	for _, p := range paths {
		wi, inWant := w[p]
		gi, inGot := g[p]
		switch {
		case under(p):
		case !inGot:
			diffs = append(diffs, fmt.Sprintf("%s: missing (want %s)", p, typeName(wi.Mode())))
			reported[p] = true
		case !inWant:
			diffs = append(diffs, fmt.Sprintf("%s: unexpected %s", p, typeName(gi.Mode())))
			reported[p] = true
		default:
			for _, d := range compareEntry(filepath.Join(want, p), filepath.Join(got, p), wi, gi) {
				diffs = append(diffs, p+": "+d)
			}
		}
	}
	report(t, diffs)
}

// SameFile fails t unless got matches want as SameTree would compare them:
// type, and size, content, permission bits and mtime of a regular file, or
// the target of a symlink. Differences are reported with t.Errorf as
// "got: field: want ..., got ...".
func SameFile(t testing.TB, want, got string) {
	t.Helper()
	wi, err := os.Lstat(want)
	if err != nil {
		t.Fatalf("same file: %v", err)
	}
	gi, err := os.Lstat(got)
	if err != nil {
		t.Errorf("%s: missing (want %s): %v", got, typeName(wi.Mode()), err)
		return
	}
	var diffs []string
	for _, d := range compareEntry(want, got, wi, gi) {
		diffs = append(diffs, got+": "+d)
	}
	report(t, diffs)
}

func report(t testing.TB, diffs []string) {
	t.Helper()
	for i, d := range diffs {
		if i == maxReported {
			t.Errorf("... and %d more differences", len(diffs)-i)
			break
		}
		t.Errorf("%s", d)
	}
}

// scan lists the entries under root, without root, by slash-separated
// relative path, as Lstat sees them.
func scan(root string) (map[string]fs.FileInfo, error) {
	entries := map[string]fs.FileInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			if !d.IsDir() {
				return fmt.Errorf("%s is not a directory", root)
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		entries[filepath.ToSlash(rel)] = fi
		return nil
	})
	return entries, err
}

// compareEntry returns the differences between two entries as
// "field: want ..., got ..." strings.
func compareEntry(want, got string, wi, gi fs.FileInfo) []string {
	wt, gt := wi.Mode().Type(), gi.Mode().Type()
	if wt != gt {
		return []string{fmt.Sprintf("type: want %s, got %s", typeName(wi.Mode()), typeName(gi.Mode()))}
	}
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	switch {
	case wt == fs.ModeSymlink:
		wl, err := os.Readlink(want)
		if err != nil {
			add("target: %v", err)
			break
		}
		gl, err := os.Readlink(got)
		if err != nil {
			add("target: %v", err)
			break
		}
		if wl != gl {
			add("target: want %q, got %q", wl, gl)
		}
		return diffs
	case wt.IsRegular():
		if wi.Size() != gi.Size() {
			add("size: want %d, got %d", wi.Size(), gi.Size())
		} else if d := compareContent(want, got); d != "" {
			add("content: %s", d)
		}
	case wt == fs.ModeDir:
	default:
		// Devices, pipes and sockets: the type is all there is to compare.
		return nil
	}
	if wm, gm := wi.Mode()&modeBits, gi.Mode()&modeBits; wm != gm {
		add("mode: want %04o, got %04o", unixMode(wm), unixMode(gm))
	}
	if wm, gm := wi.ModTime(), gi.ModTime(); !wm.Equal(gm) {
		add("mtime: want %s, got %s", wm.UTC().Format(time.RFC3339Nano), gm.UTC().Format(time.RFC3339Nano))
	}
	return diffs
}

// compareContent streams two files of equal size and describes the first
// difference, or returns "" when there is none. Comparing the bytes rather
// than hashes costs the same reads and can say where they differ.
func compareContent(want, got string) string {
	wf, err := os.Open(want)
	if err != nil {
		return err.Error()
	}
	defer wf.Close()
	gf, err := os.Open(got)
	if err != nil {
		return err.Error()
	}
	defer gf.Close()
	const chunk = 256 << 10
	wb, gb := make([]byte, chunk), make([]byte, chunk)
	var off int64
	for {
		wn, werr := io.ReadFull(wf, wb)
		gn, gerr := io.ReadFull(gf, gb)
		for _, err := range []error{werr, gerr} {
			if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
				return err.Error()
			}
		}
		if i := firstDiff(wb[:wn], gb[:gn]); i >= 0 {
			return fmt.Sprintf("differs from offset %d", off+int64(i))
		}
		if werr != nil {
			// Equal lengths short of a chunk: both ended here.
			return ""
		}
		off += chunk
	}
}

// firstDiff returns the index of the first differing byte of a and b, or
// -1 when they are equal.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// unixMode returns the permission bits as chmod takes them, since
// fs.FileMode keeps setuid, setgid and sticky in bits of its own.
func unixMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

func typeName(m fs.FileMode) string {
	switch t := m.Type(); {
	case t.IsRegular():
		return "regular file"
	case t == fs.ModeDir:
		return "directory"
	case t == fs.ModeSymlink:
		return "symlink"
	default:
		return "special file " + t.String()
	}
}
