package backup

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

// Compression settings of a backup.
type Compression struct {
	Algorithm format.Compression
	Level     int // 1 (fastest) .. 4 (best); 0 means 1
}

func encoderLevel(l int) zstd.EncoderLevel {
	switch l {
	case 2:
		return zstd.SpeedDefault
	case 3:
		return zstd.SpeedBetterCompression
	case 4:
		return zstd.SpeedBestCompression
	}
	return zstd.SpeedFastest
}

// sealer turns plaintext blocks into records. It is safe for concurrent
// use: the zstd encoder pools its state and the AEAD is stateless.
type sealer struct {
	enc      *zstd.Encoder
	session  *keys.Session // nil: not encrypted
	backupID format.ID
	prefix   uint32
}

func newSealer(c Compression, s *keys.Session, backupID format.ID, workers int) (*sealer, error) {
	sl := &sealer{session: s, backupID: backupID}
	if c.Algorithm == format.CompressionZstd {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderLevel(encoderLevel(c.Level)),
			zstd.WithEncoderConcurrency(workers),
			zstd.WithEncoderCRC(false), // the record checksum and the AEAD cover it
			zstd.WithZeroFrames(true))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		sl.enc = enc
	}
	return sl, nil
}

func (sl *sealer) close() {
	if sl.enc != nil {
		sl.enc.Close()
	}
}

// outCap is the capacity of a record output buffer for a block size: room
// for zstd's worst case on incompressible input, and for the GCM tag.
func outCap(blockSize uint32) int { return int(blockSize) + int(blockSize)/128 + 4096 }

// seal builds the record of one block. out has outCap capacity; the payload is either in out or, for
// an unencrypted, uncompressed block, plain itself. counter must never
// repeat for this sealer's session secret.
func (sl *sealer) seal(obj, block uint64, plain, out []byte, counter uint64) (format.RecordHeader, []byte) {
	rh := format.RecordHeader{Object: obj, Block: block, PlainLen: uint32(len(plain))}
	stored := plain
	if sl.enc != nil {
		// EncodeAll appends; cap(out) bounds it so an incompressible block
		// costs no allocation: if the output would not fit, it is not smaller.
		c := sl.enc.EncodeAll(plain, out[:0])
		if len(c) > 0 && len(c) < len(plain) && &c[0] == &out[0] {
			stored = c
			rh.Compression = format.CompressionZstd
		}
	}
	return sealStored(sl.session, sl.backupID, sl.prefix, rh, stored, out, counter)
}

// sealStored finishes the record of a block in its stored form (rh has
// object, block, plain length and compression): it seals stored into out
// under s with the nonce (prefix, counter), or, without a session, returns
// stored as the payload.
func sealStored(s *keys.Session, backupID format.ID, prefix uint32, rh format.RecordHeader, stored, out []byte, counter uint64) (format.RecordHeader, []byte) {
	rh.StoredLen = uint32(len(stored))
	if s == nil {
		rh.SealedLen = rh.StoredLen
		return rh, stored
	}
	rh.KeyID = s.ID()
	rh.Nonce = format.Nonce(prefix, counter)
	rh.SealedLen = rh.StoredLen + format.TagSize
	var aad [64]byte
	payload := s.Data().Seal(out[:0], rh.Nonce[:], stored, format.RecordAAD(aad[:0], backupID, &rh))
	return rh, payload
}

// opener turns records back into plaintext blocks, checking digests.
type opener struct {
	sessions map[keys.KeyID]*keys.Session
}

var (
	decOnce sync.Once
	decoder *zstd.Decoder
)

// sharedDecoder is safe for concurrent DecodeAll and bounded in memory.
func sharedDecoder() *zstd.Decoder {
	decOnce.Do(func() {
		d, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(format.MaxBlockSize), zstd.WithDecoderConcurrency(0))
		if err != nil {
			panic(err) // only invalid options fail here
		}
		decoder = d
	})
	return decoder
}

// errKey marks a record whose key the caller did not supply.
var errKey = errors.New("no session key for record")

// open decrypts and decompresses a record's payload into dst (capacity at
// least PlainLen). scratch is used for decryption of compressed records.
// The result is checked only for its length; digests are the caller's.
func (op *opener) open(f *format.File, e *format.MapEntry, rh *format.RecordHeader, payload, dst, scratch []byte) ([]byte, error) {
	stored := payload
	if f.Header.Encrypted() {
		s := op.sessions[rh.KeyID]
		if s == nil {
			return nil, fmt.Errorf("%w %x", errKey, rh.KeyID[:4])
		}
		var aad [64]byte
		buf := dst
		if rh.Compression != format.CompressionNone {
			buf = scratch
		}
		var err error
		stored, err = s.Data().Open(buf[:0], rh.Nonce[:], payload, format.RecordAAD(aad[:0], f.Header.BackupID, rh))
		if err != nil {
			return nil, &format.CorruptError{File: f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
				Reason: fmt.Sprintf("%s does not authenticate (wrong key or altered data)", e)}
		}
	}
	var plain []byte
	switch rh.Compression {
	case format.CompressionNone:
		plain = stored
		if &stored[0] != &dst[0] {
			plain = append(dst[:0], stored...)
		}
	case format.CompressionZstd:
		var err error
		plain, err = sharedDecoder().DecodeAll(stored, dst[:0])
		if err != nil {
			return nil, &format.CorruptError{File: f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
				Reason: fmt.Sprintf("%s does not decompress: %v", e, err)}
		}
	}
	if len(plain) != int(rh.PlainLen) {
		return nil, &format.CorruptError{File: f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
			Reason: fmt.Sprintf("%s holds %d bytes, header says %d", e, len(plain), rh.PlainLen)}
	}
	return plain, nil
}

func digest(b []byte) format.Digest { return sha256.Sum256(b) }
