package backup

import (
	"fmt"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

// BenchmarkSealBlock measures turning one 1 MiB block into a record, per
// core (run with -cpu 1): digest, zstd level 1, AES-256-GCM, checksum.
func BenchmarkSealBlock(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		for _, comp := range []format.Compression{format.CompressionNone, format.CompressionZstd} {
			b.Run(fmt.Sprintf("%s/%s", kind, comp), func(b *testing.B) {
				plain := benchBlock(b, kind)
				s, _ := keys.NewSession()
				sl, err := newSealer(Compression{Algorithm: comp, Level: 1}, s, format.ID{1}, 1)
				if err != nil {
					b.Fatal(err)
				}
				defer sl.close()
				out := make([]byte, outCap(1<<20))
				j := &job{plain: plain, out: out}
				b.SetBytes(int64(len(plain)))
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					j.seq = uint64(i)
					work(sl, j)
				}
			})
		}
	}
}

// BenchmarkOpenBlock measures the reverse: checksum, AES-256-GCM open,
// zstd decode, digest.
func BenchmarkOpenBlock(b *testing.B) {
	for _, kind := range []string{"random", "text"} {
		b.Run(kind, func(b *testing.B) {
			plain := benchBlock(b, kind)
			s, _ := keys.NewSession()
			sl, err := newSealer(Compression{Algorithm: format.CompressionZstd, Level: 1}, s, format.ID{1}, 1)
			if err != nil {
				b.Fatal(err)
			}
			defer sl.close()
			out := make([]byte, outCap(1<<20))
			rh, payload := sl.seal(1, 0, plain, out, 0)
			h := &format.Header{BackupID: format.ID{1}, BlockSize: 1 << 20, Encryption: format.EncryptionAES256GCM, Secrets: []keys.KeyID{s.ID()}}
			f := &format.File{Name: "bench", Header: h}
			op := &opener{sessions: map[keys.KeyID]*keys.Session{s.ID(): s}}
			e := &format.MapEntry{}
			dst := make([]byte, 1<<20)
			scratch := make([]byte, 1<<20+format.TagSize)
			var hdr [format.RecordHeaderSize]byte
			want := digest(plain)
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			for b.Loop() {
				format.RecordChecksum(rh.Marshal(hdr[:0]), payload)
				got, err := op.open(f, e, &rh, payload, dst, scratch)
				if err != nil {
					b.Fatal(err)
				}
				if digest(got) != want {
					b.Fatal("digest mismatch")
				}
			}
		})
	}
}

func benchBlock(b *testing.B, kind string) []byte {
	plain := make([]byte, 1<<20)
	var src interface {
		ReadAt([]byte, int64) (int, error)
	}
	if kind == "random" {
		src = datagen.NewRandom(1, 1<<20)
	} else {
		src = datagen.NewCompressible(1, 1<<20)
	}
	if _, err := src.ReadAt(plain, 0); err != nil {
		b.Fatal(err)
	}
	return plain
}
