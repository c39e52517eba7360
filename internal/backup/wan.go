package backup

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// WANCopy is a source point opened for a WAN-mode copy. In WAN mode the
// target seals the new file, so the source never holds the copy's session
// key: it announces the blocks of the new file by the digests its catalog
// already has (nothing is read or hashed for that), reads the stored form
// of the blocks the target asks for, and hands over the catalog plaintext.
type WANCopy struct {
	Source *repo.Point
	Kind   format.Kind
	// Header, HeaderBytes and KeyTableBytes describe the new file; the
	// header lists the key ids of the copy's key table.
	Header        *format.Header
	HeaderBytes   []byte
	KeyTableBytes []byte
	// Catalog is the new file's catalog plaintext, which the target seals.
	Catalog []byte

	v         *pointView
	blocks    []wanBlock
	enc       *zstd.Encoder
	readBytes atomic.Int64
}

type wanBlock struct {
	key    format.BlockKey
	digest format.Digest
	rawLen uint32
	loc    loc
}

// OpenWAN opens a point for a WAN-mode copy described by spec (whose
// Session must be nil: the key table's key ids go into the header). The
// new file holds the blocks whose digest changed since spec.Base, in
// catalog order, as Copy would send them.
func OpenWAN(r *repo.Repo, backup string, spec CopySpec) (*WANCopy, error) {
	if spec.Session != nil {
		return nil, fmt.Errorf("wan copy: the target seals a WAN copy; the source must not hold its session key")
	}
	if spec.SourceKeys == nil {
		spec.SourceKeys = keyring.New()
	}
	if spec.Workers <= 0 {
		spec.Workers = runtime.GOMAXPROCS(0)
	}
	v, err := openPoint(r, backup, spec.Point, spec.SourceKeys)
	if err != nil {
		return nil, err
	}
	w := &WANCopy{Source: v.point, Kind: format.KindFull, v: v}
	ok := false
	defer func() {
		if !ok {
			w.Close()
		}
	}()
	base, err := v.baseDigests(spec.Base)
	if err != nil {
		return nil, err
	}
	if base != nil {
		w.Kind = format.KindIncremental
	}
	var secrets []keys.KeyID
	for _, e := range spec.KeyTable.Entries {
		if !slices.Contains(secrets, e.Secret) {
			secrets = append(secrets, e.Secret)
		}
	}
	last := v.files[len(v.files)-1]
	bs := last.f.Header.BlockSize
	if w.Header, w.HeaderBytes, w.KeyTableBytes, err = copyHeader(spec, w.Kind, bs, secrets); err != nil {
		return nil, err
	}
	for i := range v.cat.Objects {
		o := &v.cat.Objects[i]
		for b, d := range o.Digests {
			k := format.BlockKey{Object: o.ID, Block: uint64(b)}
			if bd, ok := base[k]; ok && bd == d {
				continue
			}
			w.blocks = append(w.blocks, wanBlock{key: k, digest: d, rawLen: format.BlockLen(o.Size, bs, uint64(b)), loc: v.bix[k]})
		}
	}
	if w.Catalog, err = v.cat.Encode(bs); err != nil {
		return nil, err
	}
	w.enc, err = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(spec.Workers),
		zstd.WithEncoderCRC(false), // the target checks the plaintext digest
		zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	ok = true
	return w, nil
}

// Close releases the source files.
func (w *WANCopy) Close() {
	if w.enc != nil {
		w.enc.Close()
	}
	w.v.close()
}

// Len is the number of blocks of the new file.
func (w *WANCopy) Len() int { return len(w.blocks) }

// Block describes block i of the new file: where it goes, the digest of
// its plaintext, and its plaintext length.
func (w *WANCopy) Block(i int) (format.BlockKey, format.Digest, uint32) {
	b := &w.blocks[i]
	return b.key, b.digest, b.rawLen
}

// RecordBufferSize is the size of the buffer ReadBlock needs.
func (w *WANCopy) RecordBufferSize() int {
	return format.RecordHeaderSize + int(w.Header.BlockSize) + format.TagSize
}

// ReadBytes is how many record bytes ReadBlock has read from the source
// files so far.
func (w *WANCopy) ReadBytes() int64 { return w.readBytes.Load() }

// ReadBlock reads block i for the wire: its stored form, zstd-compressed
// when compressed is true. A source record stored uncompressed is
// compressed here when that makes it smaller. rec is a buffer of
// RecordBufferSize bytes, which data may share. ReadBlock is safe for
// concurrent use with distinct buffers.
func (w *WANCopy) ReadBlock(i int, rec []byte) (data []byte, compressed bool, err error) {
	b := &w.blocks[i]
	cf := w.v.files[b.loc.file]
	e := &cf.f.Entries[b.loc.entry]
	read := cf.f.ReadRecord
	if cf.f.Header.Encrypted() {
		read = cf.f.ReadSealedRecord // opened below: GCM authenticates it
	}
	srh, payload, err := read(e, rec)
	if err != nil {
		return nil, false, err
	}
	w.readBytes.Add(int64(e.Length))
	stored := payload
	if cf.f.Header.Encrypted() {
		sess := cf.sessions[srh.KeyID]
		if sess == nil {
			return nil, false, fmt.Errorf("backup file %s: %w %x", cf.f.Name, errKey, srh.KeyID[:4])
		}
		var aad [64]byte
		stored, err = sess.Data().Open(payload[:0], srh.Nonce[:], payload, format.RecordAAD(aad[:0], cf.f.Header.BackupID, &srh))
		if err != nil {
			return nil, false, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
				Reason: fmt.Sprintf("%s does not authenticate (wrong key or altered data)", e)}
		}
	}
	if srh.PlainLen != b.rawLen {
		return nil, false, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
			Reason: fmt.Sprintf("%s holds %d bytes, the catalog says %d", e, srh.PlainLen, b.rawLen)}
	}
	if srh.Compression == format.CompressionZstd {
		return stored, true, nil
	}
	if c := w.enc.EncodeAll(stored, make([]byte, 0, len(stored))); len(c) < len(stored) {
		return c, true, nil
	}
	return stored, false, nil
}

// StoredSealer seals blocks that reach a WAN-mode target in their stored
// form (compressed or not, as the source sent them) into records, with the
// record format and nonce rules of the backup pipeline.
type StoredSealer struct {
	session  *keys.Session
	backupID format.ID
	prefix   uint32
}

// NewStoredSealer seals under s (nil: unencrypted records) for a file of
// backupID. prefix must be distinct for every writer of s: the nonce of a
// record is (prefix, counter).
func NewStoredSealer(s *keys.Session, backupID format.ID, prefix uint32) *StoredSealer {
	return &StoredSealer{session: s, backupID: backupID, prefix: prefix}
}

// Seal builds the record of a block; out needs the stored length plus
// format.TagSize of capacity, and may hold the payload on return. counter
// must never repeat for this sealer.
func (ss *StoredSealer) Seal(key format.BlockKey, stored []byte, compressed bool, plainLen uint32, out []byte, counter uint64) (format.RecordHeader, []byte) {
	rh := format.RecordHeader{Object: key.Object, Block: key.Block, PlainLen: plainLen}
	if compressed {
		rh.Compression = format.CompressionZstd
	}
	return sealStored(ss.session, ss.backupID, ss.prefix, rh, stored, out, counter)
}

// CheckBlock checks a block in its stored form against the digest and
// plaintext length the source announced. scratch receives the plaintext
// of a compressed block (capacity rawLen avoids an allocation).
func CheckBlock(stored []byte, compressed bool, rawLen uint32, d format.Digest, scratch []byte) error {
	plain := stored
	if compressed {
		var err error
		if plain, err = sharedDecoder().DecodeAll(stored, scratch[:0]); err != nil {
			return fmt.Errorf("block does not decompress: %w", err)
		}
	}
	if len(plain) != int(rawLen) {
		return fmt.Errorf("block holds %d bytes, %d announced", len(plain), rawLen)
	}
	if digest(plain) != d {
		return fmt.Errorf("block does not match its digest %x", d[:8])
	}
	return nil
}

// SealCatalogPlain checks a catalog plaintext that reached a WAN-mode
// target and seals it for the file of header h under s (nil: unencrypted)
// with nonce prefix prefix. It returns the section and the parsed catalog.
func SealCatalogPlain(plain []byte, h *format.Header, s *keys.Session, prefix uint32) ([]byte, *format.Catalog, error) {
	cat, err := format.ParseCatalog(plain, h.BlockSize)
	if err != nil {
		return nil, nil, fmt.Errorf("catalog: %w", err)
	}
	if s == nil {
		return format.SealCatalog(plain, h, keys.KeyID{}, nil, 0), cat, nil
	}
	return format.SealCatalog(plain, h, s.ID(), s.Meta(), prefix), cat, nil
}

// OpenBlocks opens point (empty: the latest) of a backup to read the stored
// form of each of its blocks, as a WAN copy reads them, for warming a WAN
// cache (`controller wan seed`). kr opens an encrypted backup.
func OpenBlocks(r *repo.Repo, backup, point string, kr *keyring.Keyring) (*WANCopy, error) {
	// The "new file" of a WAN copy is not written here; its header only
	// needs to be well formed.
	spec := CopySpec{Point: point, SourceKeys: kr, Sequence: 1, BackupName: backup}
	for _, id := range []*format.ID{&spec.FileID, &spec.BackupID, &spec.ChainID} {
		if _, err := rand.Read(id[:]); err != nil {
			return nil, err
		}
	}
	return OpenWAN(r, backup, spec)
}
