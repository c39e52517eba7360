package datagen

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// goldenDay2 is the sha256 of WriteFile(_, 1, 10 MiB+7) after Day2(_, 1).
const goldenDay2 = "d6cd715c62906c358d9d098f59aa39df0789d366fe676162ba976ffd60f318df"

func TestDay2Plan(t *testing.T) {
	for _, tc := range []struct {
		size         int64
		blocks       int
		appendLength int64
	}{
		{0, 0, 0},
		{1, 1, 0},
		{BlockSize + 10, 1, BlockSize / 100},
		{200 * BlockSize, 10, 2 * BlockSize},
		{2<<30 + 5, 102, (2<<30 + 5) / 100},
	} {
		p := Day2Plan(tc.size, 1)
		if len(p.Blocks) != tc.blocks || p.Append != tc.appendLength {
			t.Errorf("Day2Plan(%d): %d blocks, append %d; want %d, %d", tc.size, len(p.Blocks), p.Append, tc.blocks, tc.appendLength)
		}
		nblocks := (tc.size + BlockSize - 1) / BlockSize
		for i, b := range p.Blocks {
			if b < 0 || b >= nblocks || (i > 0 && b <= p.Blocks[i-1]) {
				t.Errorf("Day2Plan(%d): blocks %v not ascending, distinct and in range", tc.size, p.Blocks)
				break
			}
		}
		if q := Day2Plan(tc.size, 1); !slices.Equal(p.Blocks, q.Blocks) {
			t.Errorf("Day2Plan(%d) is not deterministic", tc.size)
		}
	}
	if a, b := Day2Plan(200*BlockSize, 1), Day2Plan(200*BlockSize, 2); slices.Equal(a.Blocks, b.Blocks) {
		t.Error("seeds 1 and 2 choose the same blocks")
	}
}

func TestDay2(t *testing.T) {
	const size = 60*BlockSize + 12345
	dir := t.TempDir()
	p, q := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	must(t, WriteFile(p, 1, size))
	before, err := os.ReadFile(p)
	must(t, err)
	must(t, os.WriteFile(q, before, 0o644))
	must(t, Day2(p, 1))
	must(t, Day2(q, 1))
	after, err := os.ReadFile(p)
	must(t, err)
	again, err := os.ReadFile(q)
	must(t, err)
	if !bytes.Equal(after, again) {
		t.Fatal("Day2 is not deterministic")
	}

	plan := Day2Plan(size, 1)
	if got, want := int64(len(after)), int64(size+size/100); got != want {
		t.Errorf("size after Day2 = %d, want %d", got, want)
	}
	var changed []int64
	for off := int64(0); off < size; off += BlockSize {
		end := min(off+BlockSize, size)
		if !bytes.Equal(before[off:end], after[off:end]) {
			changed = append(changed, off/BlockSize)
		}
	}
	if !slices.Equal(changed, plan.Blocks) {
		t.Errorf("changed blocks %v, want %v", changed, plan.Blocks)
	}
	if len(changed) != 3 { // 5% of 61
		t.Errorf("%d blocks changed, want 3", len(changed))
	}
	tail, _ := readAll(NewMixed(1, size+size/100))
	if bytes.Equal(after[size:], tail[size:]) {
		t.Error("the appended bytes continue the original stream")
	}
}

func TestDay2LastBlock(t *testing.T) {
	// Find a seed that picks the short last block of a two-block file.
	const size = BlockSize + 10
	seed := uint64(0)
	for Day2Plan(size, seed).Blocks[0] != 1 {
		seed++
	}
	p := filepath.Join(t.TempDir(), "f")
	must(t, WriteFile(p, 1, size))
	before, _ := os.ReadFile(p)
	must(t, Day2(p, seed))
	after, _ := os.ReadFile(p)
	if len(after) != size+size/100 {
		t.Fatalf("size after Day2 = %d, want %d", len(after), size+size/100)
	}
	if !bytes.Equal(before[:BlockSize], after[:BlockSize]) || bytes.Equal(before[BlockSize:], after[BlockSize:size]) {
		t.Error("Day2 did not rewrite exactly the last block")
	}
}

func TestDay2Golden(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	must(t, WriteFile(p, 1, 10*BlockSize+7))
	must(t, Day2(p, 1))
	f, err := os.Open(p)
	must(t, err)
	defer f.Close()
	if got := sum(t, f); got != goldenDay2 {
		t.Errorf("sha256 after Day2 = %s, want %s", got, goldenDay2)
	}
}

func TestDay2Errors(t *testing.T) {
	if err := Day2(filepath.Join(t.TempDir(), "missing"), 1); err == nil {
		t.Error("Day2 of a missing file succeeded")
	}
}

func readAll(m *Mixed) ([]byte, error) {
	b := make([]byte, m.Size())
	_, err := m.ReadAt(b, 0)
	return b, err
}
