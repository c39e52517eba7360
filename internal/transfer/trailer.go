package transfer

import (
	"crypto/sha256"
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
