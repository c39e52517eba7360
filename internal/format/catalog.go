package format

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/ferrybackup/ferry/internal/keys"
)

// SourceKind says what a restore point was taken of.
type SourceKind uint8

const (
	SourceDir    SourceKind = 1
	SourceFile   SourceKind = 2
	SourceDevice SourceKind = 3
)

// ObjectType is the type of a catalog object.
type ObjectType uint8

const (
	ObjectDir     ObjectType = 1
	ObjectFile    ObjectType = 2
	ObjectSymlink ObjectType = 3
	ObjectDevice  ObjectType = 4 // the contents of a block device
)

func (t ObjectType) String() string {
	switch t {
	case ObjectDir:
		return "dir"
	case ObjectFile:
		return "file"
	case ObjectSymlink:
		return "symlink"
	case ObjectDevice:
		return "device"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Digest is the SHA-256 of a block's plaintext.
type Digest [32]byte

// Object is one entry of a restore point: a directory, file, symlink or
// device, with the digest of every block of its contents at that point.
type Object struct {
	ID      uint64 // stable across the points of a chain
	Type    ObjectType
	Mode    uint32 // Unix permission and setuid/setgid/sticky bits
	UID     uint32
	GID     uint32
	MTime   int64 // Unix nanoseconds
	Size    uint64
	Path    string // slash-separated, relative to the source; "." is the source itself
	Target  string // symlink target
	Digests []Digest
}

// HasData reports whether the object's contents are stored in blocks.
func (o *Object) HasData() bool { return o.Type == ObjectFile || o.Type == ObjectDevice }

// Blocks returns how many blocks hold an object of this size.
func Blocks(size uint64, blockSize uint32) uint64 {
	return (size + uint64(blockSize) - 1) / uint64(blockSize)
}

// BlockLen returns the length of block i of an object of this size.
func BlockLen(size uint64, blockSize uint32, i uint64) uint32 {
	end := min((i+1)*uint64(blockSize), size)
	return uint32(end - i*uint64(blockSize))
}

// Catalog is the full state of a restore point.
type Catalog struct {
	SourceKind SourceKind
	SourcePath string
	Objects    []Object
}

const (
	catalogVersion   = 1
	maxPathLen       = 64 << 10
	objectFixedSize  = 8 + 1 + 4 + 4 + 4 + 8 + 8 + 4 + 4 + 8
	catalogChunkSize = 1 << 20
)

// Marshal encodes the catalog (before sealing).
func (c *Catalog) Marshal() []byte {
	n := 2 + 4 + len(c.SourcePath) + 8
	for i := range c.Objects {
		o := &c.Objects[i]
		n += objectFixedSize + len(o.Path) + len(o.Target) + 32*len(o.Digests)
	}
	b := make([]byte, 0, n)
	b = append(b, catalogVersion, byte(c.SourceKind))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.SourcePath)))
	b = append(b, c.SourcePath...)
	b = binary.LittleEndian.AppendUint64(b, uint64(len(c.Objects)))
	for i := range c.Objects {
		o := &c.Objects[i]
		b = binary.LittleEndian.AppendUint64(b, o.ID)
		b = append(b, byte(o.Type))
		b = binary.LittleEndian.AppendUint32(b, o.Mode)
		b = binary.LittleEndian.AppendUint32(b, o.UID)
		b = binary.LittleEndian.AppendUint32(b, o.GID)
		b = binary.LittleEndian.AppendUint64(b, uint64(o.MTime))
		b = binary.LittleEndian.AppendUint64(b, o.Size)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(o.Path)))
		b = append(b, o.Path...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(o.Target)))
		b = append(b, o.Target...)
		b = binary.LittleEndian.AppendUint64(b, uint64(len(o.Digests)))
		for _, d := range o.Digests {
			b = append(b, d[:]...)
		}
	}
	return b
}

// Encode marshals the catalog and checks that it parses back, so a writer
// never commits a file whose catalog cannot be opened.
func (c *Catalog) Encode(blockSize uint32) ([]byte, error) {
	b := c.Marshal()
	if _, err := ParseCatalog(b, blockSize); err != nil {
		return nil, fmt.Errorf("invalid catalog: %w", err)
	}
	return b, nil
}

// ParseCatalog decodes and validates a catalog.
func ParseCatalog(b []byte, blockSize uint32) (*Catalog, error) {
	d := decoder{b: b}
	if v := d.u8(); v != catalogVersion {
		return nil, fmt.Errorf("catalog version %d, want %d", v, catalogVersion)
	}
	c := &Catalog{SourceKind: SourceKind(d.u8())}
	if c.SourceKind < SourceDir || c.SourceKind > SourceDevice {
		return nil, fmt.Errorf("unknown source kind %d", c.SourceKind)
	}
	spl := d.u32()
	if spl > maxPathLen {
		return nil, fmt.Errorf("source path length %d, at most %d", spl, maxPathLen)
	}
	c.SourcePath = string(d.take(int(spl)))
	n := d.u64()
	if d.err != nil || n > uint64(len(d.b))/objectFixedSize {
		return nil, fmt.Errorf("catalog claims %d objects in %d bytes", n, len(d.b))
	}
	c.Objects = make([]Object, n)
	ids := make(map[uint64]struct{}, n)
	paths := make(map[string]struct{}, n)
	for i := range c.Objects {
		o := &c.Objects[i]
		o.ID = d.u64()
		o.Type = ObjectType(d.u8())
		o.Mode = d.u32()
		o.UID = d.u32()
		o.GID = d.u32()
		o.MTime = int64(d.u64())
		o.Size = d.u64()
		pl := d.u32()
		if pl == 0 || pl > maxPathLen {
			return nil, fmt.Errorf("object %d: path length %d", i, pl)
		}
		o.Path = string(d.take(int(pl)))
		tl := d.u32()
		if tl > maxPathLen {
			return nil, fmt.Errorf("object %d: link target length %d", i, tl)
		}
		o.Target = string(d.take(int(tl)))
		nd := d.u64()
		if d.err != nil || nd > uint64(len(d.b))/32 {
			return nil, fmt.Errorf("object %d claims %d digests in %d bytes", i, nd, len(d.b))
		}
		if err := o.check(nd, blockSize); err != nil {
			return nil, fmt.Errorf("object %d (%s): %w", i, o.Path, err)
		}
		o.Digests = make([]Digest, nd)
		for j := range o.Digests {
			d.bytes(o.Digests[j][:])
		}
		if _, dup := ids[o.ID]; dup {
			return nil, fmt.Errorf("object id %d appears twice", o.ID)
		}
		if _, dup := paths[o.Path]; dup {
			return nil, fmt.Errorf("path %q appears twice", o.Path)
		}
		ids[o.ID], paths[o.Path] = struct{}{}, struct{}{}
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, errors.New("catalog is malformed")
	}
	return c, nil
}

// MaxObjectSize bounds an object's size so block counts cannot overflow.
const MaxObjectSize = 1 << 60

// checkPath accepts "." or a relative, slash-separated path without empty,
// "." or ".." elements and without NUL bytes: nothing a restore could
// follow out of its target directory.
func checkPath(p string) error {
	if p == "." {
		return nil
	}
	if strings.ContainsRune(p, 0) {
		return errors.New("path contains a NUL byte")
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("path %q is not a clean relative path", p)
		}
	}
	return nil
}

func (o *Object) check(nd uint64, blockSize uint32) error {
	if err := checkPath(o.Path); err != nil {
		return err
	}
	switch o.Type {
	case ObjectFile, ObjectDevice:
		if o.Size > MaxObjectSize {
			return fmt.Errorf("size %d exceeds %d", o.Size, uint64(MaxObjectSize))
		}
		if want := Blocks(o.Size, blockSize); nd != want {
			return fmt.Errorf("%d digests for %d bytes, want %d", nd, o.Size, want)
		}
	case ObjectDir, ObjectSymlink:
		if nd != 0 {
			return fmt.Errorf("a %s has no blocks", o.Type)
		}
	default:
		return fmt.Errorf("unknown object type %d", o.Type)
	}
	if o.Type != ObjectSymlink && o.Target != "" {
		return errors.New("only a symlink has a target")
	}
	return nil
}

// ByPath returns a map from path to object index.
func (c *Catalog) ByPath() map[string]int {
	m := make(map[string]int, len(c.Objects))
	for i := range c.Objects {
		m[c.Objects[i].Path] = i
	}
	return m
}

// SortObjects orders objects by path so directories precede their contents.
func (c *Catalog) SortObjects() {
	sort.Slice(c.Objects, func(i, j int) bool { return c.Objects[i].Path < c.Objects[j].Path })
}

// Catalog section: key id [16], then chunks of
// flags u8 (bit 0: last) | length u32 | nonce [12] (sealed only) | bytes.

func catalogAAD(h *Header, index uint32, flags byte) []byte {
	b := make([]byte, 0, 64)
	b = append(b, "ferry/v1/catalog"...)
	b = append(b, h.BackupID[:]...)
	b = append(b, h.FileID[:]...)
	b = binary.LittleEndian.AppendUint32(b, h.Sequence)
	b = binary.LittleEndian.AppendUint32(b, index)
	return append(b, flags)
}

// SealCatalog builds the catalog section for plain (an encoded Catalog).
// aead is the metakey of the session secret id, nil for an unencrypted file;
// noncePrefix is the writer's attempt number, as for records.
func SealCatalog(plain []byte, h *Header, id keys.KeyID, aead cipher.AEAD, noncePrefix uint32) []byte {
	out := append([]byte(nil), id[:]...)
	for i := uint32(0); ; i++ {
		n := min(len(plain), catalogChunkSize)
		chunk := plain[:n]
		plain = plain[n:]
		var flags byte
		if len(plain) == 0 {
			flags = 1
		}
		out = append(out, flags)
		if aead == nil {
			out = binary.LittleEndian.AppendUint32(out, uint32(len(chunk)))
			out = append(out, chunk...)
		} else {
			nonce := Nonce(noncePrefix, uint64(i))
			out = binary.LittleEndian.AppendUint32(out, uint32(len(chunk)+TagSize))
			out = append(out, nonce[:]...)
			out = aead.Seal(out, nonce[:], chunk, catalogAAD(h, i, flags))
		}
		if flags == 1 {
			return out
		}
	}
}

// CatalogKeyID returns the key id a catalog section was sealed with.
func CatalogKeyID(section []byte) (keys.KeyID, bool) {
	var id keys.KeyID
	if len(section) < keys.KeyIDSize {
		return id, false
	}
	copy(id[:], section)
	return id, true
}

// splitCatalog checks the chunk structure of a catalog section.
type catalogChunk struct {
	flags byte
	nonce []byte
	data  []byte
	off   int64
}

func splitCatalog(file string, off int64, section []byte, h *Header) ([]catalogChunk, error) {
	if len(section) < keys.KeyIDSize {
		return nil, corrupt(file, RegionCatalog, off, "catalog section is %d bytes", len(section))
	}
	id, _ := CatalogKeyID(section)
	if h.Encrypted() != !id.IsZero() || (h.Encrypted() && !h.HasSecret(id)) {
		return nil, corrupt(file, RegionCatalog, off, "catalog names a key the file does not list")
	}
	d := decoder{b: section[keys.KeyIDSize:], off: int(off) + keys.KeyIDSize}
	var chunks []catalogChunk
	for {
		at := int64(d.off)
		flags := d.u8()
		n := d.u32()
		limit := uint32(catalogChunkSize)
		if h.Encrypted() {
			limit += TagSize
		}
		// Every chunk but the last is full, so the encoding is unique and
		// a flood of tiny chunks is refused.
		if d.err != nil || flags > 1 || n > limit || (flags == 0 && n != limit) {
			return nil, corrupt(file, RegionCatalog, at, "catalog chunk %d is malformed", len(chunks))
		}
		c := catalogChunk{flags: flags, off: at}
		if h.Encrypted() {
			c.nonce = d.take(12)
		}
		c.data = d.take(int(n))
		if d.err != nil {
			return nil, corrupt(file, RegionCatalog, at, "catalog chunk %d is truncated", len(chunks))
		}
		chunks = append(chunks, c)
		if flags == 1 {
			break
		}
	}
	if len(d.b) != 0 {
		return nil, corrupt(file, RegionCatalog, int64(d.off), "bytes after the last catalog chunk")
	}
	return chunks, nil
}

// OpenCatalog authenticates, decrypts and parses a catalog section.
// aead is the metakey named by the section's key id (nil when unencrypted).
func OpenCatalog(file string, off int64, section []byte, h *Header, aead cipher.AEAD) (*Catalog, error) {
	chunks, err := splitCatalog(file, off, section, h)
	if err != nil {
		return nil, err
	}
	if !h.Encrypted() {
		aead = nil // an unencrypted catalog has no nonce to open with
	}
	var plain []byte
	for i, c := range chunks {
		if aead == nil {
			if h.Encrypted() {
				return nil, errors.New("catalog is sealed: a key is needed")
			}
			plain = append(plain, c.data...)
			continue
		}
		plain, err = aead.Open(plain, c.nonce, c.data, catalogAAD(h, uint32(i), c.flags))
		if err != nil {
			return nil, corrupt(file, RegionCatalog, c.off, "catalog chunk %d does not authenticate", i)
		}
	}
	cat, err := ParseCatalog(plain, h.BlockSize)
	if err != nil {
		return nil, corrupt(file, RegionCatalog, off, "%v", err)
	}
	return cat, nil
}
