package wancache

import (
	"crypto/sha256"
	"encoding/binary"
	"testing"
)

// BenchmarkPutGet puts and gets 1 MiB blocks (Get checks the digest) in a
// 64 MiB cache, so eviction runs in steady state. The bytes counted are
// the block's plaintext, once per Put+Get.
func BenchmarkPutGet(b *testing.B) {
	const size = 1 << 20
	for _, mode := range []string{"raw", "zstd"} {
		b.Run(mode, func(b *testing.B) {
			c := openT(b, b.TempDir(), 64<<20, testKey(1))
			var plain []byte
			if mode == "raw" {
				plain = randomBlock(1, size)
			} else {
				plain = textBlock(1, size)
			}
			b.SetBytes(size)
			for i := 0; b.Loop(); i++ {
				binary.LittleEndian.PutUint64(plain, uint64(i)) // a new block each time
				d := sha256.Sum256(plain)
				stored, compressed := plain, false
				if mode == "zstd" {
					b.StopTimer()
					stored, compressed = compress(plain), true
					b.StartTimer()
				}
				if err := c.Put(d, stored, compressed, size); err != nil {
					b.Fatal(err)
				}
				if _, _, _, err := c.Get(d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
