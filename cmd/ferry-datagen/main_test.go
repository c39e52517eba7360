package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"12345", 12345, true},
		{"10B", 10, true},
		{"4KiB", 4 << 10, true},
		{"64MiB", 64 << 20, true},
		{"2GiB", 2 << 30, true},
		{"2gib", 2 << 30, true},
		{"1TiB", 1 << 40, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"2GB", 0, false},
		{"10000000TiB", 0, false},
	} {
		got, err := parseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(args, &out, &out)
	return code, out.String()
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "data")
	if code, out := runCmd(t, "mixed", "-seed", "3", "-size", "5MiB", "-out", file); code != 0 {
		t.Fatalf("mixed: exit %d: %s", code, out)
	}
	got, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(datagen.NewMixed(3, 5<<20))
	if !bytes.Equal(got, want) {
		t.Error("mixed wrote something other than NewMixed(3, 5MiB)")
	}

	if code, out := runCmd(t, "day2", "-seed", "3", file); code != 0 {
		t.Fatalf("day2: exit %d: %s", code, out)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() != 5<<20+(5<<20)/100 {
		t.Errorf("day2: size after = %v, %v", fi.Size(), err)
	}

	tree := filepath.Join(dir, "tree")
	if code, out := runCmd(t, "tree", "-seed", "2", "-size", "1", "-out", tree); code != 0 {
		t.Fatalf("tree: exit %d: %s", code, out)
	}
	ref := filepath.Join(dir, "ref")
	if err := datagen.Tree(ref, 2, datagen.TreeOptions{Size: 1}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, ref, tree)

	code, out := runCmd(t, "mutate", "-seed", "7", "-dir", tree)
	if code != 0 {
		t.Fatalf("mutate: exit %d: %s", code, out)
	}
	for _, w := range []string{"rewritten ", "appended ", "truncated ", "deleted ", "deleted-dir ", "mode ", "mtime ", "added added-7\n"} {
		if !strings.Contains(out, w) {
			t.Errorf("mutate printed no %q:\n%s", w, out)
		}
	}
}

func TestUsage(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{"help"}, 0},
		{[]string{"mixed", "-h"}, 0},
		{[]string{"mixed", "-size", "1MiB"}, 2},
		{[]string{"mixed", "-out", filepath.Join(dir, "x")}, 2},
		{[]string{"mixed", "-size", "lots", "-out", filepath.Join(dir, "x")}, 2},
		{[]string{"mixed", "-seed", "-1", "-size", "1", "-out", filepath.Join(dir, "x")}, 2},
		{[]string{"mixed", "-size", "1", "-out", filepath.Join(dir, "x"), "extra"}, 2},
		{[]string{"day2"}, 2},
		{[]string{"day2", "a", "b"}, 2},
		{[]string{"tree"}, 2},
		{[]string{"mutate"}, 2},
		{[]string{"mutate", dir}, 2},
		// Failures that are not usage errors.
		{[]string{"day2", filepath.Join(dir, "missing")}, 1},
		{[]string{"mixed", "-size", "1", "-out", filepath.Join(dir, "no", "such", "dir")}, 1},
	} {
		if code, out := runCmd(t, tc.args...); code != tc.code {
			t.Errorf("%q: exit %d, want %d:\n%s", tc.args, code, tc.code, out)
		}
	}
}
