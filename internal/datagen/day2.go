package datagen

import (
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"os"
	"slices"
)

// Day2Change is what Day2 does to a file of a given size with a given
// seed; Day2Plan computes it without touching a file, so that a benchmark
// or test can tell which blocks an incremental backup has to send.
type Day2Change struct {
	// Blocks are the indices of the BlockSize blocks rewritten, ascending:
	// 5% of the file's blocks, rounded, and at least one for a non-empty
	// file. The last block may be short; it is rewritten without changing
	// the file's size.
	Blocks []int64
	// Append is the number of bytes appended: 1% of the size, rounded down.
	Append int64
}

// Day2Plan returns the change Day2(path, seed) makes to a file of size
// bytes. It depends on size and seed only, never on the file's content.
func Day2Plan(size int64, seed uint64) Day2Change {
	nblocks := (size + BlockSize - 1) / BlockSize
	k := (nblocks*5 + 50) / 100
	if k == 0 && nblocks > 0 {
		k = 1
	}
	rng := rand.NewChaCha8(cellKey(seed, domainDay2Plan, uint64(size)))
	// A partial Fisher-Yates shuffle of the block indices; the index
	// arithmetic is ours (bits.Mul64), not a math/rand helper, so the choice
	// is fixed.
	idx := make([]int64, nblocks)
	for i := range idx {
		idx[i] = int64(i)
	}
	for i := int64(0); i < k; i++ {
		j, _ := bits.Mul64(rng.Uint64(), uint64(nblocks-i))
		idx[i], idx[i+int64(j)] = idx[i+int64(j)], idx[i]
	}
	chosen := idx[:k:k]
	slices.Sort(chosen)
	return Day2Change{Blocks: chosen, Append: size / 100}
}

// Day2 turns the file at path into its "next day" version in place, as an
// incremental or WAN benchmark needs: the blocks of Day2Plan(size, seed)
// are overwritten with new content, each block at random either random
// bytes or text, and Day2Plan's Append bytes of a new mixed stream are
// appended. The result depends only on the file's content before, its size
// and seed. A later "day 3" is Day2 again with another seed.
func Day2(path string, seed uint64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("day2: %w", err)
	}
	err = day2(f, seed)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("day2: %w", cerr)
	}
	return err
}

func day2(f *os.File, seed uint64) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("day2: %w", err)
	}
	size := fi.Size()
	plan := Day2Plan(size, seed)
	// Which kind each block gets comes from its own stream, so that the plan
	// (which blocks) and the content (what goes there) are independent.
	kinds := rand.NewChaCha8(cellKey(seed, domainDay2Kind, uint64(size)))
	random := NewRandom(derive(seed, domainDay2Random, 0), 1<<62)
	text := NewCompressible(derive(seed, domainDay2Text, 0), 1<<62)
	buf := make([]byte, BlockSize)
	for _, b := range plan.Blocks {
		off := b * BlockSize
		n := min(BlockSize, size-off)
		src := random
		if kinds.Uint64()&1 == 1 {
			src = text
		}
		// Taking the block at its own offset of the source stream makes the
		// new content of one block independent of which others were chosen.
		if _, err := src.ReadAt(buf[:n], off); err != nil {
			return fmt.Errorf("day2: generate block %d: %w", b, err)
		}
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("day2: rewrite block %d: %w", b, err)
		}
	}
	if plan.Append > 0 {
		// The appended bytes are the tail of a new mixed stream, so the
		// region pattern continues at the same offsets as in the original.
		tail := NewMixed(derive(seed, domainDay2Append, 0), size+plan.Append)
		if _, err := tail.Seek(size, io.SeekStart); err != nil {
			return fmt.Errorf("day2: %w", err)
		}
		if _, err := f.Seek(size, io.SeekStart); err != nil {
			return fmt.Errorf("day2: %w", err)
		}
		if _, err := tail.WriteTo(f); err != nil {
			return fmt.Errorf("day2: append: %w", err)
		}
	}
	return nil
}
