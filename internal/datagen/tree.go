package datagen

import (
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math/bits"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

// DefaultTreeSize is the approximate total file size of a Tree when
// TreeOptions.Size is zero: big enough for multi-block files and a few
// dozen entries, small enough to write in well under a second.
const DefaultTreeSize = 48 << 20

// TreeOptions adjusts Tree.
type TreeOptions struct {
	// Size is the approximate total size of the files. The fixed entries
	// (about 14 MiB, listed at Tree) are always written; files of 3 to 9
	// MiB are added under data/large until the total reaches Size. Zero
	// means DefaultTreeSize.
	Size int64
}

type nodeType uint8

const (
	typeFile nodeType = iota
	typeDir
	typeLink
)

// node is one entry of a generated tree.
type node struct {
	path   string // relative, slash-separated
	typ    nodeType
	mode   fs.FileMode // permission bits
	size   int64
	kind   kind
	target string // of a symlink
}

// fixedNodes are written by every Tree, in this order; parents come before
// their children. The sizes sit on the edges a block-based backup gets wrong
// (0, 1, BlockSize-1, BlockSize, BlockSize+1, exact multiples, files that
// cross a RegionSize boundary), and the modes and names are the ones a
// restore gets wrong.
var fixedNodes = []node{
	{path: "empty", mode: 0o644},
	{path: "one", mode: 0o644, size: 1, kind: kindText},
	{path: "docs", typ: typeDir, mode: 0o755},
	{path: "docs/readme.txt", mode: 0o644, size: 2345, kind: kindText},
	{path: "docs/notes.md", mode: 0o644, size: 10007, kind: kindText},
	{path: "docs/readonly.txt", mode: 0o444, size: 777, kind: kindText},
	{path: "docs/block-minus-1.bin", mode: 0o644, size: BlockSize - 1, kind: kindRandom},
	{path: "docs/block.txt", mode: 0o644, size: BlockSize, kind: kindText},
	{path: "docs/block-plus-1.bin", mode: 0o644, size: BlockSize + 1, kind: kindRandom},
	{path: "bin", typ: typeDir, mode: 0o755},
	{path: "bin/tool", mode: 0o755, size: 150007, kind: kindRandom},
	{path: "bin/run.sh", mode: 0o755, size: 901, kind: kindText},
	{path: "bin/tool-link", typ: typeLink, target: "tool"},
	{path: "private", typ: typeDir, mode: 0o700},
	{path: "private/id_key", mode: 0o600, size: 419, kind: kindRandom},
	{path: "private/secrets", typ: typeDir, mode: 0o700},
	{path: "private/secrets/token", mode: 0o600, size: 32, kind: kindRandom},
	{path: "data", typ: typeDir, mode: 0o755},
	{path: "data/big.bin", mode: 0o644, size: 5*BlockSize + 12345, kind: kindMixed},
	{path: "data/two-blocks.bin", mode: 0o644, size: 2 * BlockSize, kind: kindRandom},
	{path: "data/app.log", mode: 0o640, size: 3*BlockSize/2 + 1, kind: kindText},
	{path: "data/medium", typ: typeDir, mode: 0o755},
	{path: "data/large", typ: typeDir, mode: 0o750},
	{path: "deep", typ: typeDir, mode: 0o755},
	{path: "deep/a", typ: typeDir, mode: 0o755},
	{path: "deep/a/b", typ: typeDir, mode: 0o755},
	{path: "deep/a/b/c", typ: typeDir, mode: 0o755},
	{path: "deep/a/b/c/d", typ: typeDir, mode: 0o700},
	{path: "deep/a/b/c/d/leaf.txt", mode: 0o600, size: 4096, kind: kindText},
	// Up the tree but not to an ancestor: a loop would trip diff -r, du -L
	// and the like in the scripts that use these trees.
	{path: "deep/a/b/c/d/up", typ: typeLink, target: "../../../../../docs"},
	{path: "empty-dir", typ: typeDir, mode: 0o755},
	{path: "odd names", typ: typeDir, mode: 0o755},
	{path: "odd names/with space.txt", mode: 0o644, size: 100, kind: kindText},
	{path: "odd names/ünïcødé-ファイル.txt", mode: 0o644, size: 200, kind: kindText},
	{path: "odd names/.hidden", mode: 0o600, size: 10, kind: kindRandom},
	{path: "links", typ: typeDir, mode: 0o755},
	{path: "links/to-file", typ: typeLink, target: "../docs/readme.txt"},
	{path: "links/to-dir", typ: typeLink, target: "../data"},
	{path: "links/dangling", typ: typeLink, target: "../nowhere/missing.txt"},
}

const mediumFiles = 12

// treeNodes lists the entries of Tree(_, seed, opts) in creation order.
func treeNodes(seed uint64, size int64) []node {
	if size == 0 {
		size = DefaultTreeSize
	}
	rng := rand.NewChaCha8(cellKey(seed, domainTreePlan, 0))
	nodes := append([]node(nil), fixedNodes...)
	var total int64
	for _, n := range nodes {
		total += n.size
	}
	for i := range mediumFiles {
		n := node{
			path: fmt.Sprintf("data/medium/file-%02d", i),
			mode: 0o644,
			size: 1<<10 + int64(uniform(rng, 511<<10)),
			kind: kindRandom,
		}
		if i%2 == 1 {
			n.path += ".txt"
			n.kind = kindText
		}
		nodes = append(nodes, n)
		total += n.size
	}
	for i := 0; total < size; i++ {
		n := node{
			path: fmt.Sprintf("data/large/large-%02d.bin", i),
			mode: 0o644,
			size: min(3<<20+int64(uniform(rng, 6<<20)), size-total),
			kind: kindMixed,
		}
		nodes = append(nodes, n)
		total += n.size
	}
	return nodes
}

// uniform returns a number in [0, n) from the ChaCha8 stream by
// multiply-shift, a method that is ours and so cannot change under us.
func uniform(rng *rand.ChaCha8, n uint64) uint64 {
	hi, _ := bits.Mul64(rng.Uint64(), n)
	return hi
}

// mtime is a fixed time with nanoseconds, so that a restore that drops
// sub-second precision is caught.
func mtime(rng *rand.ChaCha8, base int64) time.Time {
	return time.Unix(base+int64(uniform(rng, 365*86400)), int64(uniform(rng, 1e9))).UTC()
}

// Tree writes a deterministic directory tree into dir, which must be empty
// or not exist; the content depends only on seed and opts. Entries:
//
//   - files of awkward sizes: "empty" (0 bytes), "one" (1), in docs/ a
//     BlockSize-1, a BlockSize and a BlockSize+1 file, small text files and a
//     read-only one (0444);
//   - bin/ with executables (0755); private/ and private/secrets/ (0700)
//     with 0600 files; data/ with a 5 MiB mixed file crossing a RegionSize
//     boundary, an exact two-block file and a 0640 log; data/medium/ with 12
//     files of 1 to 512 KiB; data/large/ (0750) with files of 3 to 9 MiB up
//     to opts.Size;
//   - deep/a/b/c/d/ (the last 0700), an empty directory, "odd names/" with
//     a space, non-ASCII characters and a dot file;
//   - relative symlinks: to a file in the same directory, to a file and a
//     directory elsewhere, to a directory up the tree (not an ancestor, so
//     there is no loop), and one dangling.
//
// Files are random, text or mixed by kind. Every file and directory gets a
// fixed mtime with nanoseconds (set after everything inside it exists);
// atimes are set to the same value. Symlink times are not set, and dir
// itself is left as the file system makes it.
func Tree(dir string, seed uint64, opts TreeOptions) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tree: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("tree: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("tree: %s is not empty", dir)
	}
	nodes := treeNodes(seed, opts.Size)
	times := rand.NewChaCha8(cellKey(seed, domainTreePlan, 1))
	var dirs []node
	var dirTimes []time.Time
	for _, n := range nodes {
		p := filepath.Join(dir, filepath.FromSlash(n.path))
		switch n.typ {
		case typeDir:
			// Private until the end, when the final mode is set: a
			// restrictive final mode must not stop the children being made.
			if err := os.Mkdir(p, 0o700); err != nil {
				return fmt.Errorf("tree: %w", err)
			}
			dirs = append(dirs, n)
			dirTimes = append(dirTimes, mtime(times, treeEpoch))
		case typeLink:
			if err := os.Symlink(n.target, p); err != nil {
				return fmt.Errorf("tree: %w", err)
			}
		case typeFile:
			src := newStream(derive(seed, domainTreeFile, pathHash(n.path)), n.size, n.kind)
			if err := createFile(p, src, n.mode, mtime(times, treeEpoch)); err != nil {
				return fmt.Errorf("tree: %w", err)
			}
		}
	}
	// Children before parents, though only creating or removing entries
	// touches a directory's mtime, not setting its children's metadata.
	for i := len(dirs) - 1; i >= 0; i-- {
		p := filepath.Join(dir, filepath.FromSlash(dirs[i].path))
		if err := setMeta(p, dirs[i].mode, dirTimes[i]); err != nil {
			return fmt.Errorf("tree: %w", err)
		}
	}
	return nil
}

// treeEpoch is 2023-11-14T22:13:20Z; Tree's mtimes fall in the year after.
const treeEpoch = 1_700_000_000

// pathHash turns a tree path into the number its content seed is derived
// from, so a file's content does not depend on the entries before it.
func pathHash(p string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(p))
	return h.Sum64()
}

// createFile writes src to a new file at p and sets its mode and times.
func createFile(p string, src io.WriterTo, mode fs.FileMode, mt time.Time) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = src.WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return setMeta(p, mode, mt)
}

func setMeta(p string, mode fs.FileMode, mt time.Time) error {
	if err := os.Chmod(p, mode); err != nil {
		return err
	}
	return os.Chtimes(p, mt, mt)
}
