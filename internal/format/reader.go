package format

import (
	"crypto/cipher"
	"fmt"
	"io"
	"os"
)

// File is an opened, structurally verified backup file: its header, key
// table, footer, block map and footer hash have been checked. Records are
// checked as they are read.
type File struct {
	Name           string
	Size           int64
	Header         *Header
	HeaderBytes    []byte
	KeyTable       *KeyTable
	KeyTableOffset int64
	Footer         *Footer
	Entries        []MapEntry
	catalog        []byte
	r              io.ReaderAt
}

// OpenPath opens the backup file at path. Close the returned *os.File.
func OpenPath(path string) (*File, *os.File, error) {
	fd, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open backup file: %w", err)
	}
	st, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, nil, fmt.Errorf("open backup file: %w", err)
	}
	f, err := Open(fd, st.Size(), path)
	if err != nil {
		fd.Close()
		return nil, nil, err
	}
	return f, fd, nil
}

func readAt(r io.ReaderAt, file, region string, off int64, n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := r.ReadAt(b, off); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, corrupt(file, region, off, "file ends before %d bytes could be read", n)
		}
		return nil, fmt.Errorf("read backup file %s: %s at offset %d: %w", file, region, off, err)
	}
	return b, nil
}

// ReadHeader reads and checks only the header of a file of size bytes
// (steps 1 and 2 of Open), for a caller that needs a file's kind or ids
// without reading the rest. It returns the header and its bytes.
func ReadHeader(r io.ReaderAt, size int64, name string) (*Header, []byte, error) {
	if size < preambleSize+FooterSize {
		return nil, nil, corrupt(name, RegionHeader, 0, "file is %d bytes, too short to be a backup file", size)
	}
	pre, err := readAt(r, name, RegionHeader, 0, preambleSize)
	if err != nil {
		return nil, nil, err
	}
	hl, err := parsePreamble(name, pre)
	if err != nil {
		return nil, nil, err
	}
	if int64(hl) > size-FooterSize {
		return nil, nil, corrupt(name, RegionHeader, 12, "header length %d exceeds the file", hl)
	}
	hb, err := readAt(r, name, RegionHeader, 0, int64(hl))
	if err != nil {
		return nil, nil, err
	}
	h, err := ParseHeader(name, hb)
	if err != nil {
		return nil, nil, err
	}
	return h, hb, nil
}

// Open parses and verifies everything in a file but the records.
func Open(r io.ReaderAt, size int64, name string) (*File, error) {
	f := &File{Name: name, Size: size, r: r}
	var err error
	if f.Header, f.HeaderBytes, err = ReadHeader(r, size, name); err != nil {
		return nil, err
	}
	hl := len(f.HeaderBytes)
	fb, err := readAt(r, name, RegionFooter, size-FooterSize, FooterSize)
	if err != nil {
		return nil, err
	}
	if f.Footer, err = parseFooter(name, size-FooterSize, fb); err != nil {
		return nil, err
	}
	ft := f.Footer
	f.KeyTableOffset = int64(hl)
	ktLen := 2 * int64(f.Header.KeyTableCap)
	if ft.RecordsOffset != f.KeyTableOffset+ktLen {
		return nil, corrupt(name, RegionFooter, size-FooterSize+8, "records start at %d, expected %d", ft.RecordsOffset, f.KeyTableOffset+ktLen)
	}
	if f.KeyTableOffset+ktLen > size-FooterSize {
		return nil, corrupt(name, RegionHeader, 12, "key table of %d bytes does not fit in the file", ktLen)
	}
	kb, err := readAt(r, name, RegionKeyTable, f.KeyTableOffset, ktLen)
	if err != nil {
		return nil, err
	}
	if f.KeyTable, err = parseKeyTable(name, f.KeyTableOffset, kb, f.Header.KeyTableCap); err != nil {
		return nil, err
	}
	if err := checkKeyTable(name, f.KeyTableOffset, f.KeyTable, f.Header); err != nil {
		return nil, err
	}
	if ft.BlockMapLen > size || ft.CatalogLen > size {
		return nil, corrupt(name, RegionFooter, size-FooterSize, "section lengths exceed the file")
	}
	bm, err := readAt(r, name, RegionBlockMap, ft.BlockMapOffset, ft.BlockMapLen)
	if err != nil {
		return nil, err
	}
	if f.catalog, err = readAt(r, name, RegionCatalog, ft.CatalogOffset, ft.CatalogLen); err != nil {
		return nil, err
	}
	if h := fileHash(f.HeaderBytes, bm, f.catalog, ft); h != ft.Hash {
		// Say which section is most likely at fault: the header and
		// footer have their own checksums, so a hash mismatch with both
		// intact points at the block map or the catalog.
		return nil, corrupt(name, RegionBlockMap+" or "+RegionCatalog, ft.BlockMapOffset, "footer hash mismatch")
	}
	if f.Entries, err = parseBlockMap(name, ft.BlockMapOffset, bm, ft.RecordsOffset, ft.BlockMapOffset, maxRecordLen(f.Header.BlockSize)); err != nil {
		return nil, err
	}
	if uint64(len(f.Entries)) != ft.RecordCount {
		return nil, corrupt(name, RegionFooter, size-FooterSize+16, "footer counts %d records, block map %d", ft.RecordCount, len(f.Entries))
	}
	if _, err := splitCatalog(name, ft.CatalogOffset, f.catalog, f.Header); err != nil {
		return nil, err
	}
	return f, nil
}

// checkKeyTable makes sure the key table wraps every secret the header
// lists, and nothing else.
func checkKeyTable(name string, off int64, kt *KeyTable, h *Header) error {
	for _, e := range kt.Entries {
		if !h.HasSecret(e.Secret) {
			return corrupt(name, RegionKeyTable, off, "key table entry for secret %x, which the header does not list", e.Secret[:4])
		}
	}
	for _, id := range h.Secrets {
		if len(kt.For(id)) == 0 {
			return corrupt(name, RegionKeyTable, off, "no key table entry wraps secret %x", id[:4])
		}
	}
	return nil
}

// ReadRecord reads the record at e into buf (grown as needed) and checks
// it against its map entry and checksum. It returns the payload, a slice
// of buf.
func (f *File) ReadRecord(e *MapEntry, buf []byte) (RecordHeader, []byte, error) {
	return f.readRecord(e, buf, true)
}

// ReadSealedRecord is ReadRecord without the checksum, for a caller that
// opens the payload with its AEAD right after: the tag authenticates the
// payload, and the associated data the header fields the checksum would,
// so hashing the record too would only repeat the check. It fails for an
// unencrypted file.
func (f *File) ReadSealedRecord(e *MapEntry, buf []byte) (RecordHeader, []byte, error) {
	if !f.Header.Encrypted() {
		return RecordHeader{}, nil, fmt.Errorf("read backup file %s: records are not sealed", f.Name)
	}
	return f.readRecord(e, buf, false)
}

func (f *File) readRecord(e *MapEntry, buf []byte, checksum bool) (RecordHeader, []byte, error) {
	if cap(buf) < int(e.Length) {
		buf = make([]byte, e.Length)
	}
	buf = buf[:e.Length]
	if _, err := f.r.ReadAt(buf, e.Offset); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return RecordHeader{}, nil, corrupt(f.Name, RegionRecordHeader, e.Offset, "file ends inside the record of %s", e)
		}
		return RecordHeader{}, nil, fmt.Errorf("read backup file %s: record at offset %d: %w", f.Name, e.Offset, err)
	}
	hdr, payload := buf[:RecordHeaderSize], buf[RecordHeaderSize:]
	if checksum && RecordChecksum(hdr, payload) != e.Checksum {
		// Tell header damage from payload damage where we can.
		rh, ok := ParseRecordHeader(hdr)
		if !ok || rh.Check(f.Header) != nil || rh.Object != e.Object || rh.Block != e.Block || int(rh.SealedLen) != len(payload) {
			return RecordHeader{}, nil, corrupt(f.Name, RegionRecordHeader, e.Offset, "record of %s does not match its checksum", e)
		}
		// The header is well-formed and agrees with the map, so the damage
		// is in the payload or in a field the header cannot check (nonce, key id).
		return RecordHeader{}, nil, corrupt(f.Name, RegionRecordPayload, e.Offset+RecordHeaderSize, "%s does not match its checksum (payload, nonce or key id altered)", e)
	}
	rh, ok := ParseRecordHeader(hdr)
	if !ok {
		return rh, nil, corrupt(f.Name, RegionRecordHeader, e.Offset, "malformed record header of %s", e)
	}
	if err := rh.Check(f.Header); err != nil {
		return rh, nil, corrupt(f.Name, RegionRecordHeader, e.Offset, "%s: %v", e, err)
	}
	if rh.Object != e.Object || rh.Block != e.Block || int(rh.SealedLen) != len(payload) {
		return rh, nil, corrupt(f.Name, RegionRecordHeader, e.Offset, "record header disagrees with the block map entry for %s", e)
	}
	return rh, payload, nil
}

// CatalogSection returns the raw catalog section.
func (f *File) CatalogSection() []byte { return f.catalog }

// CatalogKeyID returns the key id the catalog is sealed with.
func (f *File) CatalogKeyID() (id [16]byte) {
	copy(id[:], f.catalog)
	return id
}

// Catalog opens the catalog with the metakey named by CatalogKeyID (nil
// for an unencrypted file).
func (f *File) Catalog(meta cipher.AEAD) (*Catalog, error) {
	return OpenCatalog(f.Name, f.Footer.CatalogOffset, f.catalog, f.Header, meta)
}

// CatalogOffset is where the catalog section starts.
func (f *File) CatalogOffset() int64 { return f.Footer.CatalogOffset }
