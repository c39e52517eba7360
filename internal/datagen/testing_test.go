package datagen

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// recorder is a testing.TB that keeps what an assertion reports instead of
// failing the test; only the methods SameTree and SameFile call are
// overridden.
type recorder struct {
	testing.TB
	mu    sync.Mutex
	errs  []string
	fatal bool
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.mu.Lock()
	r.fatal = true
	r.mu.Unlock()
	runtime.Goexit()
}

// record runs f with a recorder, in its own goroutine so that Fatalf can
// end it the way it ends a test.
func record(t *testing.T, f func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r
}

// keepTimes runs change on root and then puts back the mtimes of paths (and
// their parent directories), so that a case changes only what it means to.
func keepTimes(t *testing.T, root string, change func(), paths ...string) {
	t.Helper()
	saved := map[string]time.Time{}
	for _, p := range paths {
		for _, q := range []string{p, filepath.Dir(p)} {
			q = filepath.Join(root, q)
			if fi, err := os.Lstat(q); err == nil {
				saved[q] = fi.ModTime()
			}
		}
	}
	change()
	for q, mt := range saved {
		if _, err := os.Lstat(q); err == nil && !isLink(q) {
			if err := os.Chtimes(q, mt, mt); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func isLink(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestSameTreeDetects(t *testing.T) {
	want := t.TempDir()
	must(t, Tree(want, 4, TreeOptions{Size: 1}))
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, got string)
		errs   []string // substrings, one per expected difference, in order
	}{
		{"same", func(t *testing.T, got string) {}, nil},
		{"changed byte", func(t *testing.T, got string) {
			keepTimes(t, got, func() {
				f, err := os.OpenFile(filepath.Join(got, "data/big.bin"), os.O_WRONLY, 0)
				must(t, err)
				_, err = f.WriteAt([]byte{'x'}, 3_000_001)
				must(t, err)
				must(t, f.Close())
			}, "data/big.bin")
		}, []string{"data/big.bin: content: differs from offset 3000001"}},
		{"changed size", func(t *testing.T, got string) {
			keepTimes(t, got, func() {
				must(t, os.Truncate(filepath.Join(got, "docs/block.txt"), BlockSize-1))
			}, "docs/block.txt")
		}, []string{"docs/block.txt: size: want 1048576, got 1048575"}},
		{"changed mode", func(t *testing.T, got string) {
			must(t, os.Chmod(filepath.Join(got, "docs/readme.txt"), 0o600))
		}, []string{"docs/readme.txt: mode: want 0644, got 0600"}},
		{"changed directory mode", func(t *testing.T, got string) {
			must(t, os.Chmod(filepath.Join(got, "private"), 0o755))
		}, []string{"private: mode: want 0700, got 0755"}},
		{"changed mtime", func(t *testing.T, got string) {
			p := filepath.Join(got, "bin/tool")
			fi, err := os.Stat(p)
			must(t, err)
			mt := fi.ModTime().Add(time.Nanosecond)
			must(t, os.Chtimes(p, mt, mt))
		}, []string{"bin/tool: mtime: want "}},
		{"missing file", func(t *testing.T, got string) {
			keepTimes(t, got, func() { must(t, os.Remove(filepath.Join(got, "docs/notes.md"))) }, "docs/notes.md")
		}, []string{"docs/notes.md: missing (want regular file)"}},
		{"extra file", func(t *testing.T, got string) {
			keepTimes(t, got, func() { must(t, os.WriteFile(filepath.Join(got, "docs/extra"), nil, 0o644)) }, "docs/extra")
		}, []string{"docs/extra: unexpected regular file"}},
		{"missing subtree", func(t *testing.T, got string) {
			keepTimes(t, got, func() { must(t, os.RemoveAll(filepath.Join(got, "deep/a/b"))) }, "deep/a/b")
		}, []string{"deep/a/b: missing (want directory)"}},
		{"symlink target", func(t *testing.T, got string) {
			keepTimes(t, got, func() {
				p := filepath.Join(got, "links/to-file")
				must(t, os.Remove(p))
				must(t, os.Symlink("../docs/notes.md", p))
			}, "links/to-file")
		}, []string{`links/to-file: target: want "../docs/readme.txt", got "../docs/notes.md"`}},
		{"type", func(t *testing.T, got string) {
			keepTimes(t, got, func() {
				p := filepath.Join(got, "one")
				must(t, os.Remove(p))
				must(t, os.Symlink("empty", p))
			}, "one")
		}, []string{"one: type: want regular file, got symlink"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := t.TempDir()
			must(t, Tree(got, 4, TreeOptions{Size: 1}))
			tc.change(t, got)
			r := record(t, func(tb testing.TB) { SameTree(tb, want, got) })
			if len(r.errs) != len(tc.errs) {
				t.Fatalf("reported %d differences, want %d:\n%s", len(r.errs), len(tc.errs), strings.Join(r.errs, "\n"))
			}
			for i, e := range tc.errs {
				if !strings.Contains(r.errs[i], e) {
					t.Errorf("reported %q, want %q", r.errs[i], e)
				}
			}
		})
	}
}

func TestSameTreeLimitsReport(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	must(t, Tree(a, 1, TreeOptions{Size: 1}))
	must(t, Tree(b, 2, TreeOptions{Size: 1}))
	r := record(t, func(tb testing.TB) { SameTree(tb, a, b) })
	if len(r.errs) != maxReported+1 || !strings.Contains(r.errs[maxReported], "more differences") {
		t.Errorf("reported %d differences, last %q; want %d and a count", len(r.errs), r.errs[len(r.errs)-1], maxReported+1)
	}
	r = record(t, func(tb testing.TB) { SameTree(tb, a, filepath.Join(b, "nowhere")) })
	if !r.fatal {
		t.Error("SameTree with a missing tree did not fail fatally")
	}
}

func TestSameFile(t *testing.T) {
	dir := t.TempDir()
	must(t, Tree(dir, 4, TreeOptions{Size: 1}))
	other := t.TempDir()
	must(t, Tree(other, 4, TreeOptions{Size: 1}))
	file := func(d string) string { return filepath.Join(d, "data/two-blocks.bin") }

	if r := record(t, func(tb testing.TB) { SameFile(tb, file(dir), file(other)) }); len(r.errs) != 0 {
		t.Errorf("equal files: %v", r.errs)
	}
	if r := record(t, func(tb testing.TB) {
		SameFile(tb, filepath.Join(dir, "links/to-dir"), filepath.Join(other, "links/to-dir"))
	}); len(r.errs) != 0 {
		t.Errorf("equal symlinks: %v", r.errs)
	}

	keepTimes(t, other, func() {
		f, err := os.OpenFile(file(other), os.O_WRONLY, 0)
		must(t, err)
		_, err = f.WriteAt([]byte("changed"), BlockSize)
		must(t, err)
		must(t, f.Close())
	}, "data/two-blocks.bin")
	must(t, os.Chmod(file(other), 0o600))
	r := record(t, func(tb testing.TB) { SameFile(tb, file(dir), file(other)) })
	want := []string{"content: differs from offset 1048576", "mode: want 0644, got 0600"}
	if len(r.errs) != len(want) {
		t.Fatalf("reported %q, want %q", r.errs, want)
	}
	for i, w := range want {
		if !strings.Contains(r.errs[i], w) || !strings.HasPrefix(r.errs[i], file(other)+": ") {
			t.Errorf("reported %q, want %q", r.errs[i], w)
		}
	}

	r = record(t, func(tb testing.TB) { SameFile(tb, file(dir), file(dir)+".missing") })
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "missing (want regular file)") {
		t.Errorf("missing file: reported %q", r.errs)
	}
}
