package wancache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func testKey(b byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = b
	}
	return k
}

// randomBlock is n incompressible bytes determined by seed.
func randomBlock(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(b[i:], r.Uint64())
	}
	for i := n &^ 7; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// textBlock is n compressible bytes determined by seed.
func textBlock(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 0x7e87))
	words := []string{"ferry ", "block ", "cache ", "target ", "source ", "digest ", "wan "}
	b := make([]byte, 0, n)
	for len(b) < n {
		b = append(b, words[r.IntN(len(words))]...)
	}
	return b[:n]
}

var testEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))

func compress(plain []byte) []byte { return testEncoder.EncodeAll(plain, nil) }

func openT(t testing.TB, dir string, maxBytes int64, key []byte) *Cache {
	t.Helper()
	c, err := Open(dir, maxBytes, key)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// putRaw stores plain uncompressed and returns its digest.
func putRaw(t testing.TB, c *Cache, plain []byte) [32]byte {
	t.Helper()
	d := sha256.Sum256(plain)
	if err := c.Put(d, plain, false, len(plain)); err != nil {
		t.Fatalf("Put: %v", err)
	}
	return d
}

func entryPath(dir string, d [32]byte) string {
	h := hex.EncodeToString(d[:])
	return filepath.Join(dir, h[:2], h)
}

// entryFiles lists the entry files under dir with their sizes.
func entryFiles(t testing.TB, dir string) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	matches, err := filepath.Glob(filepath.Join(dir, "[0-9a-f][0-9a-f]", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range matches {
		fi, err := os.Stat(m)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(m)] = fi.Size()
	}
	return files
}

// entrySize is the file size of an entry whose stored form is n bytes.
func entrySize(n int) int64 { return int64(headerLen + n + tagLen) }
