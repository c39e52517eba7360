package datagen

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
)

// The golden values pin the generator: benchmark numbers are comparable
// across releases only while the data stays the same. A change here means
// the data changed; update the values only on purpose, and say so.
const (
	goldenMixed64MiB       = "5ed86a940066b843f041327424dde1047527cc7d3eb0fc2a7086a2fd279ea461"
	goldenRandom8MiB       = "9b603f0f74aefdc81a2c6a0671d7e7d75276a48a9a31d83ad02e105aad35b0f4"
	goldenCompressible8MiB = "8eb13c38974583094a1b4ed30d40020922518ad68845f2937b24071fff0473dc"
)

var goldenReads = []struct {
	off int64
	hex string
}{
	{0, "8a56fdb5721d421fde2a56e846224a07"},
	{cellSize - 7, "e0f6e9d054ed5cdddd698718148a1937"},
	{RegionSize - 8, "14136bdf29221cb2323032342d30332d"},
	{123456789, "48656c656e612c42726f776e2c68656c"},
	{1 << 40, "3ff465f5cdc47c9216a9c3b13a49969c"},
}

func sum(t testing.TB, r io.Reader) string {
	t.Helper()
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestGoldenStreams(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *Mixed
		want string
	}{
		{"mixed", NewMixed(1, 64<<20), goldenMixed64MiB},
		{"random", NewRandom(1, 8<<20), goldenRandom8MiB},
		{"compressible", NewCompressible(1, 8<<20), goldenCompressible8MiB},
	} {
		if got := sum(t, tc.m); got != tc.want {
			t.Errorf("%s: sha256 = %s, want %s", tc.name, got, tc.want)
		}
	}
	m := NewMixed(1, 1<<41)
	for _, g := range goldenReads {
		buf := make([]byte, 16)
		if _, err := m.ReadAt(buf, g.off); err != nil {
			t.Fatalf("ReadAt(%d): %v", g.off, err)
		}
		if got := hex.EncodeToString(buf); got != g.hex {
			t.Errorf("ReadAt(%d) = %s, want %s", g.off, got, g.hex)
		}
	}
}

// TestReadAtMatchesStream checks the property that makes the generator
// useful: any range read directly equals the same range of the stream.
func TestReadAtMatchesStream(t *testing.T) {
	const size = 2*RegionSize + 3*cellSize + 12345
	for _, m := range []*Mixed{NewMixed(7, size), NewRandom(7, size), NewCompressible(7, size)} {
		all, err := io.ReadAll(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != size {
			t.Fatalf("read %d bytes, want %d", len(all), size)
		}
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range 300 {
			off := rng.Int64N(size)
			n := rng.IntN(3 * cellSize)
			if i%3 == 0 {
				n = rng.IntN(100)
			}
			buf := make([]byte, n)
			got, err := m.ReadAt(buf, off)
			want := min(int64(n), size-off)
			if int64(got) != want {
				t.Fatalf("ReadAt(%d, len %d) = %d bytes, want %d", off, n, got, want)
			}
			if (err == io.EOF) != (int64(n) > size-off) || (err != nil && err != io.EOF) {
				t.Fatalf("ReadAt(%d, len %d): err = %v", off, n, err)
			}
			if !bytes.Equal(buf[:got], all[off:off+int64(got)]) {
				t.Fatalf("ReadAt(%d, len %d) differs from the stream", off, n)
			}
		}
		if n, err := m.ReadAt(make([]byte, 1), size); n != 0 || err != io.EOF {
			t.Errorf("ReadAt(size) = %d, %v; want 0, EOF", n, err)
		}
		if _, err := m.ReadAt(make([]byte, 1), -1); err == nil {
			t.Error("ReadAt(-1) succeeded")
		}
	}
}

// TestConcurrentReadAt checks that ReadAt keeps no state between calls.
func TestConcurrentReadAt(t *testing.T) {
	const size = 2 * RegionSize
	m := NewMixed(11, size)
	all, _ := io.ReadAll(NewMixed(11, size))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			buf := make([]byte, 3*cellSize/2)
			for off := int64(g * 1000); off+int64(len(buf)) <= size; off += 5 * cellSize {
				m.ReadAt(buf, off)
				if !bytes.Equal(buf, all[off:off+int64(len(buf))]) {
					t.Errorf("concurrent ReadAt(%d) differs", off)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestKindsAgree(t *testing.T) {
	const size = 3 * RegionSize
	mixed, _ := io.ReadAll(NewMixed(3, size))
	random, _ := io.ReadAll(NewRandom(3, size))
	text, _ := io.ReadAll(NewCompressible(3, size))
	for r := 0; r < 3; r++ {
		lo, hi := r*RegionSize, (r+1)*RegionSize
		want := random
		if r%2 == 1 {
			want = text
		}
		if !bytes.Equal(mixed[lo:hi], want[lo:hi]) {
			t.Errorf("region %d of the mixed stream is not the expected kind", r)
		}
	}
	if bytes.Equal(random[:cellSize], text[:cellSize]) {
		t.Error("random and text cells are equal")
	}
}

func TestPrefixAndSeeds(t *testing.T) {
	short, _ := io.ReadAll(NewMixed(5, 100000))
	long, _ := io.ReadAll(NewMixed(5, 5<<20))
	if !bytes.Equal(short, long[:len(short)]) {
		t.Error("a shorter stream is not a prefix of a longer one")
	}
	other, _ := io.ReadAll(NewMixed(6, 100000))
	if bytes.Equal(short[:64], other[:64]) {
		t.Error("seeds 5 and 6 give the same bytes")
	}
}

func TestSeek(t *testing.T) {
	m := NewMixed(1, 1000)
	all, _ := io.ReadAll(m)
	for _, tc := range []struct {
		off    int64
		whence int
		want   int64
	}{
		{10, io.SeekStart, 10},
		{5, io.SeekCurrent, 15},
		{-100, io.SeekEnd, 900},
	} {
		got, err := m.Seek(tc.off, tc.whence)
		if err != nil || got != tc.want {
			t.Fatalf("Seek(%d, %d) = %d, %v; want %d", tc.off, tc.whence, got, err, tc.want)
		}
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(m, buf); err != nil || !bytes.Equal(buf, all[900:910]) {
		t.Errorf("read after seek: %v", err)
	}
	if _, err := m.Seek(-1, io.SeekStart); err == nil {
		t.Error("seek to -1 succeeded")
	}
	m.Seek(2000, io.SeekStart)
	if _, err := m.Read(buf); !errors.Is(err, io.EOF) {
		t.Errorf("read past end: %v, want EOF", err)
	}
}

// TestCompressibility checks the kinds with flate, the nearest compressor
// in the standard library; zstd -1 does a little better on the text.
func TestCompressibility(t *testing.T) {
	ratio := func(m *Mixed) float64 {
		var c countWriter
		w, _ := flate.NewWriter(&c, flate.BestSpeed)
		io.Copy(w, m)
		w.Close()
		return float64(m.Size()) / float64(c)
	}
	if r := ratio(NewRandom(1, RegionSize)); r > 1.0 {
		t.Errorf("random data compresses %.2fx", r)
	}
	if r := ratio(NewCompressible(1, RegionSize)); r < 2.5 || r > 6 {
		t.Errorf("text compresses %.2fx with flate, want 2.5x to 6x", r)
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) {
	*c += countWriter(len(p))
	return len(p), nil
}

func benchmarkStream(b *testing.B, m *Mixed) {
	buf := make([]byte, BlockSize)
	b.SetBytes(int64(len(buf)))
	var off int64
	for b.Loop() {
		m.ReadAt(buf, off)
		off = (off + int64(len(buf))) % m.Size()
	}
}

func BenchmarkMixed(b *testing.B)        { benchmarkStream(b, NewMixed(1, 1<<40)) }
func BenchmarkRandom(b *testing.B)       { benchmarkStream(b, NewRandom(1, 1<<40)) }
func BenchmarkCompressible(b *testing.B) { benchmarkStream(b, NewCompressible(1, 1<<40)) }

// BenchmarkWriteFile includes the file system; compare with BenchmarkMixed
// to see what the disk costs.
func BenchmarkWriteFile(b *testing.B) {
	const size = 256 << 20
	p := b.TempDir() + "/data"
	b.SetBytes(size)
	for b.Loop() {
		if err := WriteFile(p, 1, size); err != nil {
			b.Fatal(err)
		}
	}
}
