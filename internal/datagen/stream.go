package datagen

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"sync"
)

const (
	// RegionSize is the length of each run of one kind in the mixed stream:
	// large enough that a compressor sees a long run of one kind, small
	// enough that any file of a few MiB holds both.
	RegionSize = 4 << 20

	// BlockSize is the unit Day2 rewrites and that Tree's awkward file sizes
	// sit around (BlockSize-1, BlockSize, BlockSize+1).
	BlockSize = 1 << 20

	// cellSize is the unit generated from one ChaCha8 key. A read at any
	// offset costs at most one cell of generation before its first byte.
	cellSize = 64 << 10
)

type kind uint8

const (
	kindMixed kind = iota
	kindRandom
	kindText
)

// Domain tags keep the ChaCha8 keys of different uses apart, so that, for
// example, the random cells and the text cells of one seed are unrelated.
const (
	domainRandom uint64 = 1 + iota
	domainText
	domainDay2Plan
	domainDay2Kind
	domainDay2Random
	domainDay2Text
	domainDay2Append
	domainTreeFile
	domainTreePlan
	domainMutate
)

// Mixed is a deterministic byte stream of a fixed size: alternating
// RegionSize regions of random bytes (first) and text, or one kind alone
// (see NewRandom and NewCompressible). Byte i depends only on the seed, the
// kind and i, so a shorter stream of the same seed is a prefix of a longer
// one.
//
// ReadAt may be called concurrently. Read, Seek and WriteTo share an
// offset and must not be.
type Mixed struct {
	seed uint64
	size int64
	kind kind
	off  int64 // for Read and Seek
}

var (
	_ io.ReaderAt   = (*Mixed)(nil)
	_ io.ReadSeeker = (*Mixed)(nil)
	_ io.WriterTo   = (*Mixed)(nil)
)

// NewMixed returns the mixed stream of seed, size bytes long.
func NewMixed(seed uint64, size int64) *Mixed { return newStream(seed, size, kindMixed) }

// NewRandom returns the random bytes of seed alone; they equal the random
// regions of NewMixed(seed, ...) at the same offsets.
func NewRandom(seed uint64, size int64) *Mixed { return newStream(seed, size, kindRandom) }

// NewCompressible returns the text of seed alone; it equals the text
// regions of NewMixed(seed, ...) at the same offsets.
func NewCompressible(seed uint64, size int64) *Mixed { return newStream(seed, size, kindText) }

func newStream(seed uint64, size int64, k kind) *Mixed {
	if size < 0 {
		panic("datagen: negative size")
	}
	return &Mixed{seed: seed, size: size, kind: k}
}

// Size returns the length of the stream in bytes.
func (m *Mixed) Size() int64 { return m.size }

// ReadAt implements io.ReaderAt.
func (m *Mixed) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("datagen: read at negative offset %d", off)
	}
	if off >= m.size {
		return 0, io.EOF
	}
	var err error
	if rem := m.size - off; int64(len(p)) > rem {
		p = p[:rem]
		err = io.EOF
	}
	m.fill(p, off)
	return len(p), err
}

// Read implements io.Reader.
func (m *Mixed) Read(p []byte) (int, error) {
	n, err := m.ReadAt(p, m.off)
	m.off += int64(n)
	if err == io.EOF && n > 0 {
		// The next call reports EOF; returning it now with data is allowed
		// but trips up careless callers.
		err = nil
	}
	return n, err
}

// Seek implements io.Seeker. Seeking past the end is allowed; reads there
// return io.EOF.
func (m *Mixed) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += m.off
	case io.SeekEnd:
		offset += m.size
	default:
		return 0, fmt.Errorf("datagen: seek: invalid whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("datagen: seek to negative offset %d", offset)
	}
	m.off = offset
	return offset, nil
}

// WriteTo implements io.WriterTo, so io.Copy from a stream needs no
// intermediate buffer of the caller's choosing.
func (m *Mixed) WriteTo(w io.Writer) (int64, error) {
	buf := make([]byte, BlockSize)
	var total int64
	for m.off < m.size {
		n, _ := m.ReadAt(buf, m.off)
		m.off += int64(n)
		k, err := w.Write(buf[:n])
		total += int64(k)
		if err != nil {
			return total, err
		}
		if k != n {
			return total, io.ErrShortWrite
		}
	}
	return total, nil
}

// kindAt tells which generator produces the cell starting at off.
func (m *Mixed) kindAt(off int64) kind {
	if m.kind != kindMixed {
		return m.kind
	}
	if (off/RegionSize)%2 == 0 {
		return kindRandom
	}
	return kindText
}

var cellPool = sync.Pool{New: func() any { return new(textBuf) }}

// textBuf holds one cell plus room for the line that overruns it.
type textBuf struct{ b []byte }

// fill writes the stream bytes [off, off+len(p)) into p.
func (m *Mixed) fill(p []byte, off int64) {
	var rng *rand.ChaCha8
	var tb *textBuf
	defer func() {
		if tb != nil {
			cellPool.Put(tb)
		}
	}()
	for len(p) > 0 {
		cell := off / cellSize
		within := int(off % cellSize)
		n := min(len(p), cellSize-within)
		k := m.kindAt(off)
		key := cellKey(m.seed, domainOf(k), uint64(cell))
		if rng == nil {
			rng = rand.NewChaCha8(key)
		} else {
			rng.Seed(key)
		}
		switch k {
		case kindRandom:
			if within == 0 {
				rng.Read(p[:n])
			} else {
				// ChaCha8 cannot skip ahead, so generate the prefix and
				// drop it; at most one cell per call is wasted.
				if tb == nil {
					tb = cellPool.Get().(*textBuf)
				}
				buf := grow(tb, within+n)
				rng.Read(buf)
				copy(p, buf[within:])
			}
		case kindText:
			if tb == nil {
				tb = cellPool.Get().(*textBuf)
			}
			tb.b = genText(tb.b[:0], rng, uint64(cell), cellSize)
			copy(p[:n], tb.b[within:])
		}
		p = p[n:]
		off += int64(n)
	}
}

func grow(tb *textBuf, n int) []byte {
	if cap(tb.b) < n {
		tb.b = make([]byte, n, cellSize+textSlack)
	}
	return tb.b[:n]
}

func domainOf(k kind) uint64 {
	if k == kindText {
		return domainText
	}
	return domainRandom
}

// cellKey is the ChaCha8 key of one cell. Plain concatenation is enough:
// distinct keys give independent ChaCha8 streams, and the magic keeps
// datagen's keys apart from any other use of the same numbers.
func cellKey(seed, domain, cell uint64) [32]byte {
	var k [32]byte
	copy(k[:8], "ferrydg1")
	binary.LittleEndian.PutUint64(k[8:], seed)
	binary.LittleEndian.PutUint64(k[16:], domain)
	binary.LittleEndian.PutUint64(k[24:], cell)
	return k
}

// derive turns a seed, a purpose and a number into an unrelated seed, so
// that for example the content Day2 writes differs from the content it
// replaces.
func derive(seed, domain, n uint64) uint64 {
	return rand.NewChaCha8(cellKey(seed, domain, n)).Uint64()
}

// WriteFile creates or truncates the file at path and writes the mixed
// stream of seed, size bytes long, to it.
func WriteFile(path string, seed uint64, size int64) error {
	if size < 0 {
		return fmt.Errorf("write %s: negative size %d", path, size)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create data file: %w", err)
	}
	_, err = NewMixed(seed, size).WriteTo(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write data file: %w", err)
	}
	return nil
}
