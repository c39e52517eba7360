package format

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/keys"
)

// regionBlockMapOrCatalog is the region Open names for a footer hash
// mismatch: with the header and footer checksums intact, the damage is in
// one of the two, and the code cannot tell which.
const regionBlockMapOrCatalog = RegionBlockMap + " or " + RegionCatalog

// A span is one region of a committed file.
type span struct {
	region     string // as a CorruptError names damage inside it
	start, end int64
	record     int // index of the map entry, for record regions; else -1
}

func (s span) String() string { return fmt.Sprintf("%s [%d,%d)", s.region, s.start, s.end) }

// spansOf cuts an intact file into its regions.
func spansOf(f *File) []span {
	ft := f.Footer
	kt := f.KeyTableOffset
	c := int64(f.Header.KeyTableCap)
	out := []span{
		{RegionHeader, 0, kt, -1},
		{RegionKeyTable, kt, kt + c, -1},
		{RegionKeyTable, kt + c, kt + 2*c, -1}, // the second slot, empty in a new file
	}
	for i, e := range f.Entries {
		out = append(out,
			span{RegionRecordHeader, e.Offset, e.Offset + RecordHeaderSize, i},
			span{RegionRecordPayload, e.Offset + RecordHeaderSize, e.Offset + int64(e.Length), i})
	}
	return append(out,
		span{regionBlockMapOrCatalog, ft.BlockMapOffset, ft.BlockMapOffset + ft.BlockMapLen, -1},
		span{regionBlockMapOrCatalog, ft.CatalogOffset, ft.CatalogOffset + ft.CatalogLen, -1},
		span{RegionFooter, f.Size - FooterSize, f.Size, -1})
}

func spanAt(spans []span, off int64) span {
	for _, s := range spans {
		if off >= s.start && off < s.end {
			return s
		}
	}
	panic(fmt.Sprintf("offset %d is in no region", off))
}

// A misattribution is a damaged record header byte that ReadRecord reports
// as payload damage: the changed header still parses, passes Check and
// agrees with its map entry, so the code cannot tell the two apart.
type misattribution struct {
	field string
	mask  byte
}

// recordHeaderField names the field at offset i of a record header.
func recordHeaderField(i int64) string {
	switch {
	case i < 4:
		return "magic"
	case i < 12:
		return "object"
	case i < 20:
		return "block"
	case i < 24:
		return "plain length"
	case i < 28:
		return "stored length"
	case i < 32:
		return "sealed length"
	case i == 32:
		return "compression"
	case i < 36:
		return "reserved"
	case i < 52:
		return "key id"
	}
	return "nonce"
}

// TestTamper flips every byte of small committed files (with three masks)
// and runs the whole read: Open, every record, the key unwrap, every
// payload's AEAD, the catalog and the block digests. Every flip must fail
// with a CorruptError that names the region the byte is in, at an offset
// inside that region, or (for the few record header bytes listed in
// knownMisattributed) the payload of the same record.
func TestTamper(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "aes-256-gcm"}[encrypted]
		t.Run(name, func(t *testing.T) {
			good := tinySpec(t, encrypted).build(t)
			passwords := keys.NewPasswordCache(testPassword)
			r, err := readAll(good, "tamper", passwords)
			if err != nil {
				t.Fatal(err)
			}
			spans := spansOf(r.file)
			var undetected []string
			misattributed := map[misattribution]int{}
			counts := map[string]int{}
			for i := range good {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					b := bytes.Clone(good)
					b[i] ^= mask
					sp := spanAt(spans, int64(i))
					counts[sp.region]++
					_, err := readAll(b, "tamper", passwords)
					if err == nil {
						undetected = append(undetected, fmt.Sprintf("byte %d (%s) ^ %#x", i, sp, mask))
						continue
					}
					var ce *CorruptError
					if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
						// The checksums and the footer hash come before any
						// key is used: nothing should reach authentication.
						t.Errorf("byte %d (%s) ^ %#x: %v, want a CorruptError", i, sp, mask, err)
						continue
					}
					if ce.File != "tamper" {
						t.Errorf("byte %d: error names file %q", i, ce.File)
					}
					got := ce.Region
					if sp.region == RegionRecordHeader && got == RegionRecordPayload {
						misattributed[misattribution{recordHeaderField(int64(i) - sp.start), mask}]++
						got = RegionRecordHeader
					}
					if got != sp.region {
						t.Errorf("byte %d (%s) ^ %#x: error names %q: %v", i, sp, mask, ce.Region, err)
						continue
					}
					lo, hi := sp.start, sp.end
					switch {
					case sp.record >= 0: // header or payload of the same record
						e := r.file.Entries[sp.record]
						lo, hi = e.Offset, e.Offset+int64(e.Length)
					case sp.region == regionBlockMapOrCatalog:
						lo, hi = r.file.Footer.BlockMapOffset, r.file.Size-FooterSize
					case sp.region == RegionHeader && i >= 12 && i < 16:
						// A changed header length moves where the header
						// checksum is looked for.
						lo, hi = 0, int64(len(b))
					}
					if ce.Offset < lo || ce.Offset >= hi {
						t.Errorf("byte %d (%s) ^ %#x: offset %d outside [%d,%d): %v", i, sp, mask, ce.Offset, lo, hi, err)
					}
				}
			}
			if len(undetected) > 0 {
				t.Errorf("%d flips not detected:\n%s", len(undetected), strings.Join(undetected, "\n"))
			}
			var mis []string
			for m, n := range misattributed {
				mis = append(mis, fmt.Sprintf("%s ^ %#x (%d)", m.field, m.mask, n))
				if !knownMisattributed(encrypted, m) {
					t.Errorf("record header %s ^ %#x reported as payload damage", m.field, m.mask)
				}
			}
			sort.Strings(mis)
			t.Logf("%d bytes × 3 masks; flips by region: %v", len(good), counts)
			t.Logf("record header flips reported as payload damage: %s", strings.Join(mis, ", "))
		})
	}
}

// knownMisattributed lists the record header changes that ReadRecord
// cannot tell from payload damage: the nonce of a sealed record (Check does
// not look at it), and compression 0 → 1, which turns an uncompressed
// record into a valid-looking zstd one (stored length <= plain length).
func knownMisattributed(encrypted bool, m misattribution) bool {
	switch m.field {
	case "nonce":
		return encrypted
	case "compression":
		return m.mask == 0x01
	}
	return false
}

// TestTruncated cuts committed files at every sixteenth of their length.
func TestTruncated(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		for _, spec := range []*fileSpec{tinySpec(t, encrypted), smallSpec(t, encrypted)} {
			good := spec.build(t)
			for k := range 16 {
				n := len(good) * k / 16
				_, err := readAll(good[:n], "cut", keys.NewPasswordCache(testPassword))
				var ce *CorruptError
				if !errors.As(err, &ce) {
					t.Errorf("encrypted=%v, %d of %d bytes: %v, want a CorruptError", encrypted, n, len(good), err)
				}
			}
			// Cut anywhere in the footer, or with bytes appended.
			for _, n := range []int{len(good) - 1, len(good) - 8, len(good) - FooterSize, len(good) - FooterSize - 1} {
				if _, err := readAll(good[:n], "cut", keys.NewPasswordCache(testPassword)); !errors.Is(err, ErrCorrupt) {
					t.Errorf("cut to %d of %d: %v", n, len(good), err)
				}
			}
			for _, tail := range [][]byte{{0}, []byte("FERRYEND"), good[len(good)-FooterSize:]} {
				b := append(bytes.Clone(good), tail...)
				if _, err := readAll(b, "long", keys.NewPasswordCache(testPassword)); !errors.Is(err, ErrCorrupt) {
					t.Errorf("%d bytes appended: %v", len(tail), err)
				}
			}
		}
	}
}

// TestRecordsMoveBetweenFiles checks the property the record AAD is built
// for: a record sealed for one file of a backup opens in another file of
// the same backup, and not in a file of another backup.
func TestRecordsMoveBetweenFiles(t *testing.T) {
	s := testSession(t, 0x40)
	rh := RecordHeader{Object: 3, Block: 4, PlainLen: 5, StoredLen: 5, SealedLen: 21, KeyID: s.ID(), Nonce: Nonce(1, 2)}
	a := testHeader()
	b := testHeader()
	b.FileID, b.Kind, b.Sequence, b.ParentID = testID(0x60), KindIncremental, 2, a.FileID
	payload := s.Data().Seal(nil, rh.Nonce[:], []byte("hello"), RecordAAD(nil, a.BackupID, &rh))
	if _, err := s.Data().Open(nil, rh.Nonce[:], payload, RecordAAD(nil, b.BackupID, &rh)); err != nil {
		t.Errorf("a record does not open in another file of its backup: %v", err)
	}
	for name, f := range map[string]func(*RecordHeader, *ID){
		"backup":      func(_ *RecordHeader, id *ID) { id[0] ^= 1 },
		"object":      func(r *RecordHeader, _ *ID) { r.Object++ },
		"block":       func(r *RecordHeader, _ *ID) { r.Block++ },
		"plain len":   func(r *RecordHeader, _ *ID) { r.PlainLen++ },
		"stored len":  func(r *RecordHeader, _ *ID) { r.StoredLen-- },
		"compression": func(r *RecordHeader, _ *ID) { r.Compression = CompressionZstd },
	} {
		r2, id := rh, a.BackupID
		f(&r2, &id)
		if _, err := s.Data().Open(nil, rh.Nonce[:], payload, RecordAAD(nil, id, &r2)); err == nil {
			t.Errorf("a record opens with another %s", name)
		}
	}
}

// forge applies edit to a committed file and then redoes everything that
// needs no key: the block map's record checksums (and object and block
// numbers, from the record headers), the footer hash and the footer CRC.
// It is what someone holding the file but no key can do.
func forge(t testing.TB, data []byte, edit func(f *File, b []byte)) []byte {
	t.Helper()
	f, err := Open(bytes.NewReader(data), int64(len(data)), "forge")
	if err != nil {
		t.Fatal(err)
	}
	b := bytes.Clone(data)
	edit(f, b)
	entries := append([]MapEntry(nil), f.Entries...)
	for i := range entries {
		e := &entries[i]
		rec := b[e.Offset : e.Offset+int64(e.Length)]
		rh, _ := ParseRecordHeader(rec)
		e.Object, e.Block = rh.Object, rh.Block
		e.Checksum = RecordChecksum(rec[:RecordHeaderSize], rec[RecordHeaderSize:])
	}
	ft := *f.Footer
	bm := marshalBlockMap(entries)
	copy(b[ft.BlockMapOffset:], bm)
	ft.Hash = fileHash(b[:len(f.HeaderBytes)], bm, b[ft.CatalogOffset:ft.CatalogOffset+ft.CatalogLen], &ft)
	copy(b[len(b)-FooterSize:], ft.marshal())
	return b
}

// The footer hash and the record checksums are not keyed: they catch
// accidents. Against someone who recomputes them, an encrypted file is
// protected by the AEADs and by the catalog's block digests.
func TestForgedChecksums(t *testing.T) {
	enc := tinySpec(t, true)
	good := enc.build(t)
	// Another file of the same backup, with other contents for object 5.
	other := tinySpec(t, true)
	other.header.FileID, other.header.Kind, other.header.Sequence, other.header.ParentID = testID(0x70), KindIncremental, 2, enc.header.FileID
	other.contents = map[uint64][]byte{5: []byte("HELLO, FERRY"), 6: other.contents[6]}
	other.catalog = newCatalog(MinBlockSize, other.catalog.Objects, other.contents)
	other.noncePrefix = 1
	otherData := other.build(t)
	of, err := Open(bytes.NewReader(otherData), int64(len(otherData)), "other")
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		edit func(f *File, b []byte)
		want string // region of the CorruptError, or "" for errAuth
	}{
		{"payload byte", func(f *File, b []byte) { b[f.Entries[0].Offset+RecordHeaderSize] ^= 1 }, ""},
		{"tag byte", func(f *File, b []byte) { b[f.Entries[0].Offset+int64(f.Entries[0].Length)-1] ^= 1 }, ""},
		{"nonce", func(f *File, b []byte) { b[f.Entries[0].Offset+63] ^= 1 }, ""},
		{"object number", func(f *File, b []byte) { b[f.Entries[0].Offset+4] ^= 0x10 }, ""},
		{"compression 0 → 1", func(f *File, b []byte) { b[f.Entries[0].Offset+32] = 1 }, ""},
		{"swapped payloads", func(f *File, b []byte) {
			e0, e1 := f.Entries[0], f.Entries[1]
			p0 := bytes.Clone(b[e0.Offset+RecordHeaderSize : e0.Offset+RecordHeaderSize+28])
			copy(b[e0.Offset+RecordHeaderSize:], b[e1.Offset+RecordHeaderSize:e1.Offset+RecordHeaderSize+28])
			copy(b[e1.Offset+RecordHeaderSize:], p0)
		}, ""},
		// A record of the same block from another file of the backup
		// authenticates (by design); only the catalog digest catches it.
		{"record from another file", func(f *File, b []byte) {
			e := of.Entries[0]
			copy(b[f.Entries[0].Offset:], otherData[e.Offset:e.Offset+int64(e.Length)])
		}, ""},
		{"catalog byte", func(f *File, b []byte) { b[f.Footer.CatalogOffset+f.Footer.CatalogLen-1] ^= 1 }, RegionCatalog},
		{"catalog key id", func(f *File, b []byte) { b[f.Footer.CatalogOffset] ^= 1 }, RegionCatalog},
	} {
		b := forge(t, good, c.edit)
		if _, err := Open(bytes.NewReader(b), int64(len(b)), "forge"); err != nil && c.want == "" {
			t.Errorf("%s: the forged file does not open: %v", c.name, err)
			continue
		}
		_, err := readAll(b, "forge", keys.NewPasswordCache(testPassword))
		var ce *CorruptError
		switch {
		case c.want == "" && !errors.Is(err, errAuth):
			t.Errorf("%s: %v, want an authentication failure", c.name, err)
		case c.want != "" && (!errors.As(err, &ce) || ce.Region != c.want):
			t.Errorf("%s: %v, want a %s CorruptError", c.name, err, c.want)
		}
	}

	// An unencrypted file has no such protection beyond the catalog
	// digests, which are themselves only covered by the unkeyed hash.
	plain := tinySpec(t, false)
	pd := plain.build(t)
	b := forge(t, pd, func(f *File, b []byte) { b[f.Entries[0].Offset+RecordHeaderSize] ^= 1 })
	if _, err := readAll(b, "forge", nil); !errors.Is(err, errAuth) {
		t.Errorf("plain, payload byte: %v, want a digest mismatch", err)
	}
}
