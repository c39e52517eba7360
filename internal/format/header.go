package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/ferrybackup/ferry/internal/keys"
)

// Version is the format version this package writes.
const Version = 1

// Magic opens every backup file.
var Magic = [8]byte{'F', 'E', 'R', 'R', 'Y', 'B', 'A', 'K'}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Kind says whether a file is a full or an incremental.
type Kind uint8

const (
	KindFull        Kind = 1
	KindIncremental Kind = 2
	// KindMerged is a full made by merging a chain's first file with the
	// incremental after it (retention, repo.Merge): it keeps the
	// incremental's file id and sequence, which its catalog is bound to,
	// and has no parent. It starts its chain like a full.
	KindMerged Kind = 3
)

// IsFull reports whether a file of this kind needs no earlier file: a
// full or a merged full. Such a file starts its chain.
func (k Kind) IsFull() bool { return k == KindFull || k == KindMerged }

func (k Kind) String() string {
	switch k {
	case KindFull:
		return "full"
	case KindIncremental:
		return "incremental"
	case KindMerged:
		return "merged full"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Encryption is the encryption mode of a file.
type Encryption uint8

const (
	EncryptionNone      Encryption = 0
	EncryptionAES256GCM Encryption = 1
)

func (e Encryption) String() string {
	switch e {
	case EncryptionNone:
		return "none"
	case EncryptionAES256GCM:
		return "aes-256-gcm"
	}
	return fmt.Sprintf("encryption(%d)", uint8(e))
}

// ID is a 16-byte random identifier of a file, backup or chain.
type ID [16]byte

func (id ID) String() string { return fmt.Sprintf("%x", id[:]) }

// IsZero reports whether id is all zeros (no parent, for a full).
func (id ID) IsZero() bool { return id == ID{} }

// Limits that keep hostile files from making a reader allocate without bound.
const (
	MaxBlockSize     = 16 << 20
	MinBlockSize     = 4 << 10
	maxHeaderBody    = 1 << 20
	maxBackupName    = 255
	maxSecrets       = 4096
	maxKeyTableCap   = 16 << 20
	minKeyTableCap   = 512
	preambleSize     = 16
	headerFixedBody  = 16*4 + 4 + 1 + 1 + 4 + 8 + 4 + 2 + 2
	keyTableCapAlign = 512
)

// Header is the plaintext header of a backup file. It is immutable once
// written and covered by the footer hash.
type Header struct {
	FileID     ID // identity of the restore point this file ends at
	BackupID   ID
	ChainID    ID
	ParentID   ID // FileID of the previous point of the chain; zero for a full
	Sequence   uint32
	Kind       Kind
	Encryption Encryption
	BlockSize  uint32
	Created    time.Time
	BackupName string
	// Secrets are the key ids of the session secrets that sealed this
	// file's records and catalog; the key table holds their wrapped forms.
	Secrets []keys.KeyID
	// KeyTableCap is the size of each of the two key table slots. Zero
	// means: choose one that leaves room for the key table to grow.
	KeyTableCap uint32
}

// Validate checks the header's fields against each other.
func (h *Header) Validate() error {
	switch {
	case h.Kind != KindFull && h.Kind != KindIncremental && h.Kind != KindMerged:
		return fmt.Errorf("unknown kind %d", h.Kind)
	case h.Kind.IsFull() && !h.ParentID.IsZero():
		return fmt.Errorf("a %s has no parent", h.Kind)
	case h.Kind == KindIncremental && h.ParentID.IsZero():
		return errors.New("an incremental needs a parent")
	case h.Kind == KindFull && h.Sequence != 1:
		return fmt.Errorf("a full has sequence 1, not %d", h.Sequence)
	case h.Kind != KindFull && h.Sequence < 2:
		return fmt.Errorf("a %s has sequence 2 or more, not %d", h.Kind, h.Sequence)
	case h.BlockSize < MinBlockSize || h.BlockSize > MaxBlockSize:
		return fmt.Errorf("block size %d out of range %d..%d", h.BlockSize, MinBlockSize, MaxBlockSize)
	case h.Encryption != EncryptionNone && h.Encryption != EncryptionAES256GCM:
		return fmt.Errorf("unknown encryption %d", h.Encryption)
	case h.Encryption == EncryptionNone && len(h.Secrets) != 0:
		return errors.New("an unencrypted file has no session secrets")
	case h.Encryption != EncryptionNone && len(h.Secrets) == 0:
		return errors.New("an encrypted file needs a session secret")
	case len(h.Secrets) > maxSecrets:
		return fmt.Errorf("%d session secrets, at most %d", len(h.Secrets), maxSecrets)
	case len(h.BackupName) > maxBackupName:
		return fmt.Errorf("backup name is %d bytes, at most %d", len(h.BackupName), maxBackupName)
	case h.Created.Year() < 1970 || h.Created.Year() > 2261:
		return fmt.Errorf("creation time %s out of range 1970..2261", h.Created)
	case h.FileID.IsZero() || h.BackupID.IsZero() || h.ChainID.IsZero():
		return errors.New("file, backup and chain ids must be set")
	case h.KeyTableCap != 0 && (h.KeyTableCap < minKeyTableCap || h.KeyTableCap > maxKeyTableCap || h.KeyTableCap%keyTableCapAlign != 0):
		return fmt.Errorf("key table capacity %d invalid", h.KeyTableCap)
	}
	seen := make(map[keys.KeyID]bool, len(h.Secrets))
	for _, s := range h.Secrets {
		if s.IsZero() || seen[s] {
			return errors.New("session secret ids must be non-zero and distinct")
		}
		seen[s] = true
	}
	return nil
}

// HasSecret reports whether id is one of the file's session secrets.
func (h *Header) HasSecret(id keys.KeyID) bool {
	for _, s := range h.Secrets {
		if s == id {
			return true
		}
	}
	return false
}

// Encrypted reports whether the file's records are sealed.
func (h *Header) Encrypted() bool { return h.Encryption != EncryptionNone }

// MarshalHeader encodes the header with its preamble and checksum: the
// bytes from offset 0 to the start of the key table.
func MarshalHeader(h *Header) ([]byte, error) {
	if err := h.Validate(); err != nil {
		return nil, fmt.Errorf("invalid header: %w", err)
	}
	if h.KeyTableCap == 0 {
		return nil, errors.New("invalid header: key table capacity not set")
	}
	bodyLen := headerFixedBody + len(h.BackupName) + keys.KeyIDSize*len(h.Secrets)
	b := make([]byte, 0, preambleSize+bodyLen+4)
	b = append(b, Magic[:]...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint16(b, 0) // flags
	b = binary.LittleEndian.AppendUint32(b, uint32(bodyLen))
	b = append(b, h.FileID[:]...)
	b = append(b, h.BackupID[:]...)
	b = append(b, h.ChainID[:]...)
	b = append(b, h.ParentID[:]...)
	b = binary.LittleEndian.AppendUint32(b, h.Sequence)
	b = append(b, byte(h.Kind), byte(h.Encryption))
	b = binary.LittleEndian.AppendUint32(b, h.BlockSize)
	b = binary.LittleEndian.AppendUint64(b, uint64(h.Created.UnixNano()))
	b = binary.LittleEndian.AppendUint32(b, h.KeyTableCap)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.BackupName)))
	b = append(b, h.BackupName...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(h.Secrets)))
	for _, s := range h.Secrets {
		b = append(b, s[:]...)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// headerLen returns the total header length announced by a preamble.
func parsePreamble(file string, p []byte) (int, error) {
	if len(p) < preambleSize {
		return 0, corrupt(file, RegionHeader, 0, "file is %d bytes, too short for a header", len(p))
	}
	if [8]byte(p[:8]) != Magic {
		return 0, corrupt(file, RegionHeader, 0, "not a ferry backup file (bad magic)")
	}
	if v := binary.LittleEndian.Uint16(p[8:]); v != Version {
		return 0, corrupt(file, RegionHeader, 8, "format version %d, this ferry reads version %d", v, Version)
	}
	if f := binary.LittleEndian.Uint16(p[10:]); f != 0 {
		return 0, corrupt(file, RegionHeader, 10, "unknown header flags %#x", f)
	}
	n := binary.LittleEndian.Uint32(p[12:])
	if n < headerFixedBody || n > maxHeaderBody {
		return 0, corrupt(file, RegionHeader, 12, "header length %d out of range", n)
	}
	return preambleSize + int(n) + 4, nil
}

// ParseHeader decodes the bytes MarshalHeader wrote (exactly those bytes).
func ParseHeader(file string, b []byte) (*Header, error) {
	total, err := parsePreamble(file, b)
	if err != nil {
		return nil, err
	}
	if len(b) != total {
		return nil, corrupt(file, RegionHeader, 12, "header is %d bytes, length field says %d", len(b), total)
	}
	sum := binary.LittleEndian.Uint32(b[total-4:])
	if crc32.Checksum(b[:total-4], castagnoli) != sum {
		return nil, corrupt(file, RegionHeader, int64(total-4), "header checksum mismatch")
	}
	d := decoder{b: b[preambleSize : total-4], off: preambleSize}
	h := &Header{}
	d.bytes(h.FileID[:])
	d.bytes(h.BackupID[:])
	d.bytes(h.ChainID[:])
	d.bytes(h.ParentID[:])
	h.Sequence = d.u32()
	h.Kind = Kind(d.u8())
	h.Encryption = Encryption(d.u8())
	h.BlockSize = d.u32()
	h.Created = time.Unix(0, int64(d.u64())).UTC()
	h.KeyTableCap = d.u32()
	h.BackupName = string(d.take(int(d.u16())))
	n := int(d.u16())
	if n > maxSecrets {
		return nil, corrupt(file, RegionHeader, int64(d.off), "%d session secrets, at most %d", n, maxSecrets)
	}
	h.Secrets = make([]keys.KeyID, 0, min(n, len(d.b)/keys.KeyIDSize+1))
	for range n {
		var id keys.KeyID
		d.bytes(id[:])
		h.Secrets = append(h.Secrets, id)
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, corrupt(file, RegionHeader, int64(d.off), "header body is malformed")
	}
	if err := h.Validate(); err != nil || h.KeyTableCap == 0 {
		if err == nil {
			err = errors.New("key table capacity is 0")
		}
		return nil, corrupt(file, RegionHeader, preambleSize, "%v", err)
	}
	return h, nil
}

// decoder reads little-endian fields with a sticky error.
type decoder struct {
	b   []byte
	off int // offset of b[0] in the file, for errors
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil || n < 0 || n > len(d.b) {
		d.err = errors.New("short")
		d.b = nil
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	d.off += n
	return v
}
func (d *decoder) bytes(dst []byte) { copy(dst, d.take(len(dst))) }
func (d *decoder) u8() uint8 {
	if v := d.take(1); v != nil {
		return v[0]
	}
	return 0
}
func (d *decoder) u16() uint16 {
	if v := d.take(2); v != nil {
		return binary.LittleEndian.Uint16(v)
	}
	return 0
}
func (d *decoder) u32() uint32 {
	if v := d.take(4); v != nil {
		return binary.LittleEndian.Uint32(v)
	}
	return 0
}
func (d *decoder) u64() uint64 {
	if v := d.take(8); v != nil {
		return binary.LittleEndian.Uint64(v)
	}
	return 0
}
