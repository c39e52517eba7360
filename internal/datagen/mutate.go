package datagen

import (
	"cmp"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mutation says what MutateTree changed. Paths are relative to the tree
// root and slash-separated.
type Mutation struct {
	Rewritten    string   // one block and 100 bytes of another overwritten, size kept
	Appended     string   // BlockSize+17 bytes appended
	Truncated    string   // cut to half its size
	Deleted      []string // two files removed
	DeletedDir   string   // a directory removed with everything in it
	ModeChanged  string   // group and other read bits toggled, nothing else
	MtimeChanged string   // mtime moved, content untouched
	Added        []string // new directory, files and symlink
}

// MutateTree changes the tree in dir, as an incremental backup test needs,
// deterministically from seed and the tree's current state. It works on any
// tree with a subdirectory and at least seven regular files outside the
// deepest one, so it can be applied again, with another seed, for a third
// generation. Exactly:
//
//  1. DeletedDir: the deepest directory (ties: first in lexical order) is
//     removed with all it holds.
//  2. Among the regular files outside it, by size descending (ties: path),
//     the largest is Rewritten: one whole block (BlockSize, or less at the
//     end) is overwritten with random bytes and 100 bytes inside another
//     block with text, both chosen from seed; the second largest is
//     Appended to with BlockSize+17 bytes of mixed data; the third is
//     Truncated to half its size, rounded down.
//  3. From the other files, four are chosen by seed: two are Deleted, one
//     is ModeChanged (mode XOR 0044), one is MtimeChanged.
//  4. Added: directory "added-<seed>" (mode 0755) with new.txt (20011
//     bytes of text, 0644), new.bin (5 MiB+3 of mixed data, 0644) and a
//     symlink "link" to new.txt; and, next to the Rewritten file,
//     "added-<seed>.bin" (BlockSize+1 random bytes, 0600).
//
// Every file written, MtimeChanged and every directory whose entries
// changed, except dir itself, get fixed mtimes from seed, from 2025 on,
// after all of Tree's, so that the result is deterministic too. It fails
// if "added-<seed>" exists.
func MutateTree(dir string, seed uint64) (Mutation, error) {
	var m Mutation
	added := "added-" + strconv.FormatUint(seed, 10)
	// Checked first so that a repeated seed fails before changing anything.
	if _, err := os.Lstat(filepath.Join(dir, added)); err == nil {
		return m, fmt.Errorf("mutate tree: %s already has %s: mutated with seed %d before", dir, added, seed)
	}
	var dirs []string
	var files []fileInfo
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		switch {
		case rel == ".":
		case d.IsDir():
			dirs = append(dirs, rel)
		case d.Type().IsRegular():
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, fileInfo{rel, fi.Size(), fi.Mode().Perm()})
		}
		return nil
	})
	if err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	if len(dirs) == 0 {
		return m, fmt.Errorf("mutate tree: no subdirectory in %s", dir)
	}
	m.DeletedDir = slices.MinFunc(dirs, func(a, b string) int {
		return cmp.Or(-cmp.Compare(depth(a), depth(b)), cmp.Compare(a, b))
	})
	files = slices.DeleteFunc(files, func(f fileInfo) bool {
		return strings.HasPrefix(f.path, m.DeletedDir+"/")
	})
	if len(files) < 7 {
		return m, fmt.Errorf("mutate tree: %d regular files outside %s in %s, need 7", len(files), m.DeletedDir, dir)
	}
	slices.SortFunc(files, func(a, b fileInfo) int {
		return cmp.Or(-cmp.Compare(a.size, b.size), cmp.Compare(a.path, b.path))
	})
	big, rest := files[:3], files[3:]
	slices.SortFunc(rest, func(a, b fileInfo) int { return cmp.Compare(a.path, b.path) })

	rng := rand.NewChaCha8(cellKey(seed, domainMutate, 0))
	for i := range 4 {
		j := i + int(uniform(rng, uint64(len(rest)-i)))
		rest[i], rest[j] = rest[j], rest[i]
	}
	m.Rewritten, m.Appended, m.Truncated = big[0].path, big[1].path, big[2].path
	m.Deleted = []string{rest[0].path, rest[1].path}
	m.ModeChanged, m.MtimeChanged = rest[2].path, rest[3].path

	abs := func(rel string) string { return filepath.Join(dir, filepath.FromSlash(rel)) }
	// next hands out the fixed mtimes, one per change, a minute apart and
	// in a fixed order, starting at a day chosen by seed.
	start := mutateEpoch + int64(uniform(rng, 365*86400))
	tick := int64(0)
	next := func() time.Time {
		tick++
		return time.Unix(start+60*tick, int64(uniform(rng, 1e9))).UTC()
	}
	touched := map[string]bool{} // directories whose entries change

	if err := rewrite(abs(big[0].path), big[0], seed, rng); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	if err := appendTo(abs(big[1].path), big[1], seed); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	if err := writable(abs(big[2].path), big[2].mode, func() error {
		return os.Truncate(abs(big[2].path), big[2].size/2)
	}); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	for _, f := range big {
		mt := next()
		if err := os.Chtimes(abs(f.path), mt, mt); err != nil {
			return m, fmt.Errorf("mutate tree: %w", err)
		}
	}
	for _, p := range m.Deleted {
		if err := os.Remove(abs(p)); err != nil {
			return m, fmt.Errorf("mutate tree: %w", err)
		}
		touched[path.Dir(p)] = true
	}
	if err := os.RemoveAll(abs(m.DeletedDir)); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	touched[path.Dir(m.DeletedDir)] = true
	if err := os.Chmod(abs(m.ModeChanged), rest[2].mode^0o044); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	mt := next()
	if err := os.Chtimes(abs(m.MtimeChanged), mt, mt); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}

	if err := os.Mkdir(abs(added), 0o700); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	newFiles := []struct {
		path string
		mode fs.FileMode
		src  *Mixed
	}{
		{added + "/new.txt", 0o644, NewCompressible(derive(seed, domainMutate, 1), 20011)},
		{added + "/new.bin", 0o644, NewMixed(derive(seed, domainMutate, 2), 5<<20+3)},
		{path.Join(path.Dir(m.Rewritten), added+".bin"), 0o600, NewRandom(derive(seed, domainMutate, 3), BlockSize+1)},
	}
	for _, f := range newFiles {
		if err := createFile(abs(f.path), f.src, f.mode, next()); err != nil {
			return m, fmt.Errorf("mutate tree: %w", err)
		}
		m.Added = append(m.Added, f.path)
	}
	touched[path.Dir(m.Rewritten)] = true
	if err := os.Symlink("new.txt", abs(added+"/link")); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}
	m.Added = append(m.Added, added, added+"/link")
	slices.Sort(m.Added)
	if err := setMeta(abs(added), 0o755, next()); err != nil {
		return m, fmt.Errorf("mutate tree: %w", err)
	}

	delete(touched, ".")
	for _, d := range slices.Sorted(maps.Keys(touched)) {
		mt := next()
		if err := os.Chtimes(abs(d), mt, mt); err != nil {
			return m, fmt.Errorf("mutate tree: %w", err)
		}
	}
	return m, nil
}

// mutateEpoch is 2025-01-01T00:00:00Z, after all of Tree's mtimes.
const mutateEpoch = 1_735_689_600

// rewrite overwrites one whole block of the file with random bytes and 100
// bytes inside another block with text, the blocks and the offset chosen by
// rng: a whole-block change and one a block-level differ must not miss.
func rewrite(p string, f fileInfo, seed uint64, rng *rand.ChaCha8) error {
	nblocks := (f.size + BlockSize - 1) / BlockSize
	if nblocks == 0 {
		return fmt.Errorf("largest file %s is empty", p)
	}
	b1 := int64(uniform(rng, uint64(nblocks)))
	b2 := b1
	if nblocks > 1 {
		b2 = (b1 + 1 + int64(uniform(rng, uint64(nblocks-1)))) % nblocks
	}
	len2 := min(BlockSize, f.size-b2*BlockSize)
	patch := min(100, len2)
	off2 := b2*BlockSize + int64(uniform(rng, uint64(len2-patch+1)))

	block := make([]byte, min(BlockSize, f.size-b1*BlockSize))
	NewRandom(derive(seed, domainMutate, 4), 1<<62).ReadAt(block, b1*BlockSize)
	text := make([]byte, patch)
	NewCompressible(derive(seed, domainMutate, 5), 1<<62).ReadAt(text, off2)
	return writable(p, f.mode, func() error {
		fh, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		_, err = fh.WriteAt(block, b1*BlockSize)
		if err == nil {
			_, err = fh.WriteAt(text, off2)
		}
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// appendTo appends BlockSize+17 bytes of mixed data, so that the file
// gains a full block and a partial one.
func appendTo(p string, f fileInfo, seed uint64) error {
	src := NewMixed(derive(seed, domainMutate, 6), f.size+BlockSize+17)
	if _, err := src.Seek(f.size, io.SeekStart); err != nil {
		return err
	}
	return writable(p, f.mode, func() error {
		fh, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		_, err = src.WriteTo(fh)
		if cerr := fh.Close(); err == nil {
			err = cerr
		}
		return err
	})
}

// writable runs fn with the owner write bit set on p, for read-only files,
// and puts mode back afterwards.
func writable(p string, mode fs.FileMode, fn func() error) error {
	if mode&0o200 != 0 {
		return fn()
	}
	if err := os.Chmod(p, mode|0o200); err != nil {
		return err
	}
	err := fn()
	if cerr := os.Chmod(p, mode); err == nil {
		err = cerr
	}
	return err
}

type fileInfo struct {
	path string
	size int64
	mode fs.FileMode
}

func depth(p string) int { return strings.Count(p, "/") }
