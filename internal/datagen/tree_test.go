package datagen

import (
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// listTree describes every entry under dir, one line each, with what
// SameTree compares: type, mode, size, mtime, content hash, link target.
func listTree(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		mt := fi.ModTime().UTC().Format(time.RFC3339Nano)
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "f %04o %9d %s %s %s\n", fi.Mode().Perm(), fi.Size(), mt, hex.EncodeToString(h.Sum(nil))[:16], rel)
		case fi.IsDir():
			fmt.Fprintf(&b, "d %04o %9s %s %16s %s/\n", fi.Mode().Perm(), "", mt, "", rel)
		case fi.Mode().Type() == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, "l %4s %9s %30s %16s %s -> %s\n", "", "", "", "", rel, target)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func checkGolden(t *testing.T, name, got string) {
	t.Helper()
	p := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("%s differs (run with -update if the change is intended):\n%s", p, lineDiff(string(want), got))
	}
}

// lineDiff shows the lines of want and got that are not in the other.
func lineDiff(want, got string) string {
	in := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(s, "\n") {
			m[l] = true
		}
		return m
	}
	w, g := in(want), in(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if !g[l] {
			fmt.Fprintf(&b, "-%s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if !w[l] {
			fmt.Fprintf(&b, "+%s\n", l)
		}
	}
	return b.String()
}

func TestTreeGolden(t *testing.T) {
	dir := t.TempDir()
	if err := Tree(dir, 1, TreeOptions{}); err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "tree-seed1.golden", listTree(t, dir))

	m, err := MutateTree(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	checkGolden(t, "tree-seed1-mutated.golden", fmt.Sprintf("%+v\n\n", m)+listTree(t, dir))
}

func TestTreeSize(t *testing.T) {
	for _, size := range []int64{0, 1, 100 << 20} {
		want := size
		if size == 0 {
			want = DefaultTreeSize
		}
		var total int64
		for _, n := range treeNodes(1, size) {
			total += n.size
		}
		if size > 1 && total != want {
			t.Errorf("Size %d: files total %d", size, total)
		}
		if size == 1 && total > 20<<20 {
			t.Errorf("Size 1: files total %d, want the fixed part only", total)
		}
	}
}

func TestTreeDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		if err := Tree(d, 9, TreeOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	SameTree(t, a, b)
	if err := Tree(c, 10, TreeOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	if r := record(t, func(tb testing.TB) { SameTree(tb, a, c) }); len(r.errs) == 0 {
		t.Error("trees of seeds 9 and 10 are the same")
	}
	if err := Tree(a, 9, TreeOptions{}); err == nil {
		t.Error("Tree wrote into a non-empty directory")
	}

	ma, err := MutateTree(a, 3)
	if err != nil {
		t.Fatal(err)
	}
	mb, err := MutateTree(b, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ma, mb) {
		t.Errorf("MutateTree reports differ: %+v and %+v", ma, mb)
	}
	SameTree(t, a, b)
	// A second generation on top of the first.
	if _, err := MutateTree(a, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := MutateTree(a, 4); err == nil {
		t.Error("MutateTree with the same seed twice succeeded")
	}
}

// TestMutateTree checks that MutateTree does what it says and nothing else.
func TestMutateTree(t *testing.T) {
	orig, dir := t.TempDir(), t.TempDir()
	for _, d := range []string{orig, dir} {
		if err := Tree(d, 2, TreeOptions{Size: 1}); err != nil {
			t.Fatal(err)
		}
	}
	m, err := MutateTree(dir, 5)
	if err != nil {
		t.Fatal(err)
	}
	r := record(t, func(tb testing.TB) { SameTree(tb, orig, dir) })
	got := strings.Join(r.errs, "\n")
	expect := []string{
		m.Rewritten + ": content: differs",
		m.Rewritten + ": mtime",
		m.Appended + ": size",
		m.Appended + ": mtime",
		m.Truncated + ": size",
		m.Truncated + ": mtime",
		m.Deleted[0] + ": missing",
		m.Deleted[1] + ": missing",
		m.DeletedDir + ": missing (want directory)",
		m.ModeChanged + ": mode",
		m.MtimeChanged + ": mtime",
	}
	for _, a := range m.Added {
		// SameTree reports a new directory once, not its entries.
		if !strings.HasPrefix(a, "added-5/") {
			expect = append(expect, a+": unexpected")
		}
	}
	for _, e := range expect {
		if !strings.Contains(got, e) {
			t.Errorf("no %q in the differences:\n%s", e, got)
		}
	}
	// The rest are directory mtimes.
	if n := len(r.errs) - len(expect); n < 1 || n > 6 {
		t.Errorf("%d differences besides the expected ones:\n%s", n, got)
	}
	for _, e := range r.errs {
		if !strings.Contains(e, ": mtime:") && !containsAny(e, expect) {
			t.Errorf("unexpected difference %q", e)
		}
	}
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}
