package format

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"github.com/ferrybackup/ferry/internal/keys"
)

// RecordHeaderSize is the fixed size of a record header.
const RecordHeaderSize = 64

// RecordMagic opens every record header.
var RecordMagic = [4]byte{'R', 'E', 'C', '1'}

// Compression of a record payload.
type Compression uint8

const (
	CompressionNone Compression = 0
	CompressionZstd Compression = 1
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionZstd:
		return "zstd"
	}
	return fmt.Sprintf("compression(%d)", uint8(c))
}

// TagSize is the AES-GCM tag appended to every sealed payload.
const TagSize = 16

// RecordHeader is the plaintext header of one stored block.
type RecordHeader struct {
	Object      uint64
	Block       uint64
	PlainLen    uint32 // bytes of the block
	StoredLen   uint32 // bytes after compression (== PlainLen when uncompressed)
	SealedLen   uint32 // bytes of payload on disk (StoredLen + TagSize when sealed)
	Compression Compression
	KeyID       keys.KeyID // zero when the file is not encrypted
	Nonce       [12]byte   // zero when the file is not encrypted
}

// Marshal appends the encoded header to dst.
func (h *RecordHeader) Marshal(dst []byte) []byte {
	dst = append(dst, RecordMagic[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, h.Object)
	dst = binary.LittleEndian.AppendUint64(dst, h.Block)
	dst = binary.LittleEndian.AppendUint32(dst, h.PlainLen)
	dst = binary.LittleEndian.AppendUint32(dst, h.StoredLen)
	dst = binary.LittleEndian.AppendUint32(dst, h.SealedLen)
	dst = append(dst, byte(h.Compression), 0, 0, 0) // flags and reserved
	dst = append(dst, h.KeyID[:]...)
	return append(dst, h.Nonce[:]...)
}

// ParseRecordHeader decodes a record header; Check validates it.
func ParseRecordHeader(b []byte) (RecordHeader, bool) {
	var h RecordHeader
	if len(b) < RecordHeaderSize || [4]byte(b[:4]) != RecordMagic || b[33] != 0 || b[34] != 0 || b[35] != 0 {
		return h, false
	}
	h.Object = binary.LittleEndian.Uint64(b[4:])
	h.Block = binary.LittleEndian.Uint64(b[12:])
	h.PlainLen = binary.LittleEndian.Uint32(b[20:])
	h.StoredLen = binary.LittleEndian.Uint32(b[24:])
	h.SealedLen = binary.LittleEndian.Uint32(b[28:])
	h.Compression = Compression(b[32])
	copy(h.KeyID[:], b[36:52])
	copy(h.Nonce[:], b[52:64])
	return h, true
}

// Check validates a record header against its file's header.
func (h *RecordHeader) Check(fh *Header) error {
	switch {
	case h.PlainLen == 0 || h.PlainLen > fh.BlockSize:
		return fmt.Errorf("block length %d out of range 1..%d", h.PlainLen, fh.BlockSize)
	case h.Compression != CompressionNone && h.Compression != CompressionZstd:
		return fmt.Errorf("unknown compression %d", h.Compression)
	case h.StoredLen == 0 || h.StoredLen > h.PlainLen:
		return fmt.Errorf("stored length %d out of range 1..%d", h.StoredLen, h.PlainLen)
	case h.Compression == CompressionNone && h.StoredLen != h.PlainLen:
		return fmt.Errorf("uncompressed record with stored length %d != block length %d", h.StoredLen, h.PlainLen)
	}
	if fh.Encrypted() {
		if h.SealedLen != h.StoredLen+TagSize {
			return fmt.Errorf("sealed length %d, want %d", h.SealedLen, h.StoredLen+TagSize)
		}
		if !fh.HasSecret(h.KeyID) {
			return fmt.Errorf("record sealed with key %x, which the file does not list", h.KeyID[:4])
		}
		return nil
	}
	if h.SealedLen != h.StoredLen {
		return fmt.Errorf("unsealed record with payload length %d != stored length %d", h.SealedLen, h.StoredLen)
	}
	if !h.KeyID.IsZero() || h.Nonce != [12]byte{} {
		return fmt.Errorf("unsealed record names a key")
	}
	return nil
}

// RecordAAD returns the associated data that binds a sealed record payload
// to its backup, object, block, lengths and compression — and not to the
// file, so records can move between files of a backup without keys.
func RecordAAD(dst []byte, backup ID, h *RecordHeader) []byte {
	dst = append(dst, "ferry/v1/record"...)
	dst = append(dst, backup[:]...)
	dst = binary.LittleEndian.AppendUint64(dst, h.Object)
	dst = binary.LittleEndian.AppendUint64(dst, h.Block)
	dst = binary.LittleEndian.AppendUint32(dst, h.PlainLen)
	dst = binary.LittleEndian.AppendUint32(dst, h.StoredLen)
	return append(dst, byte(h.Compression))
}

// Checksum is the SHA-256 of a record's header and payload bytes, kept in
// the block map so that records verify without keys.
type Checksum [32]byte

// RecordChecksum computes the checksum of an encoded record.
func RecordChecksum(header, payload []byte) Checksum {
	d := sha256.New()
	d.Write(header)
	d.Write(payload)
	var c Checksum
	d.Sum(c[:0])
	return c
}

// Nonce builds the nonce of a record or catalog chunk: a 4-byte prefix that
// is distinct for every writer of a session secret (its attempt number),
// then an 8-byte counter that the writer never repeats.
func Nonce(prefix uint32, counter uint64) [12]byte {
	var n [12]byte
	binary.BigEndian.PutUint32(n[:4], prefix)
	binary.BigEndian.PutUint64(n[4:], counter)
	return n
}
