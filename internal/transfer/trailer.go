package transfer

import (
	"crypto/sha256"
	"encoding"
	"hash"

	"github.com/ferrybackup/ferry/internal/format"
)

// trailer accumulates the trailer hash of a file.
type trailer struct{ h hash.Hash }

func newTrailer() *trailer {
	t := &trailer{h: sha256.New()}
	t.h.Write([]byte("ferry/v1/transfer"))
	return t
}

func (t *trailer) part(b []byte)              { t.h.Write(b) }
func (t *trailer) record(sum format.Checksum) { t.h.Write(sum[:]) }
func (t *trailer) sum() (s [32]byte)          { t.h.Sum(s[:0]); return s }

// state and restore save and load the hash state at a checkpoint.
func (t *trailer) state() ([]byte, error) {
	return t.h.(encoding.BinaryMarshaler).MarshalBinary()
}

func (t *trailer) restore(b []byte) error {
	return t.h.(encoding.BinaryUnmarshaler).UnmarshalBinary(b)
}
