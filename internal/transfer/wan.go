package transfer

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"

	"github.com/ferrybackup/ferry/internal/format"
)

// WAN mode
//
// In WAN mode the source never holds the copy's session key: it announces
// the blocks of the new file (object, block, SHA-256 of the plaintext,
// plaintext length) in numbered batches, many in flight; the target
// answers each batch with the entries it lacks (not in its WAN cache, nor
// promised earlier in the transfer); the source sends those blocks,
// zstd-compressed, in file order, while it keeps announcing. The target
// takes every entry in order from its cache or from the block data, checks
// the plaintext against the digest, keeps new blocks in its cache, seals
// each one into a record under the session key the controller handed it,
// and writes it through the Receiver (checkpoints, acks, resume). A cache
// entry that cannot be read back when its turn comes is asked for again
// (refetch). The finish carries the catalog plaintext, which the target
// seals, and the WAN trailer hash.
//
// The WAN trailer is SHA-256 over "ferry/v1/wan-transfer", the header and
// key table bytes, (object u64, block u64, digest) of every block of the
// file in order (little-endian), and the catalog plaintext. The source
// computes it from what it announced; the target recomputes it from the
// block map of the file it wrote and the digests of the catalog it is
// about to seal. Since the target checked each record's plaintext against
// the announced digest, equal hashes mean the catalog describes exactly
// the blocks the file holds. It needs no state across a resume.

// Defaults of the WAN negotiation: batches of WANBatch digests, WANWindow
// batches in flight ahead of the blocks being sent.
const (
	WANBatch  = 256
	WANWindow = 64
	// maxWANBatch bounds a batch the target accepts.
	maxWANBatch = 4096
)

type wanTrailer struct{ h hash.Hash }

func newWANTrailer(hb, kb []byte) *wanTrailer {
	t := &wanTrailer{h: sha256.New()}
	t.h.Write([]byte("ferry/v1/wan-transfer"))
	t.h.Write(hb)
	t.h.Write(kb)
	return t
}

func (t *wanTrailer) block(k format.BlockKey, d format.Digest) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], k.Object)
	binary.LittleEndian.PutUint64(b[8:], k.Block)
	t.h.Write(b[:])
	t.h.Write(d[:])
}

func (t *wanTrailer) sum(catalog []byte) (s [32]byte) {
	t.h.Write(catalog)
	t.h.Sum(s[:0])
	return s
}
