package format

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/keys"
)

// The fuzz targets' seeds are the committed files in testdata/fuzz/FuzzXxx,
// written by TestWriteFuzzCorpus from fuzzSeeds (run it with -update after
// changing a seed). Each target checks that parsing does not panic, that it
// allocates in proportion to its input, and, where an encoder exists, that
// whatever parses encodes back to the same bytes: every structure has one
// encoding.

// allocated returns the bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	// TotalAlloc counts every goroutine's allocations, so a run can only be
	// inflated by others (the runtime, a test running alongside): the least
	// of a few runs is the parser's own.
	best := ^uint64(0)
	for range 3 {
		var a, b runtime.MemStats
		runtime.ReadMemStats(&a)
		fn()
		runtime.ReadMemStats(&b)
		best = min(best, b.TotalAlloc-a.TotalAlloc)
	}
	return best
}

func checkAlloc(t *testing.T, what string, n int, alloc uint64, perByte int) {
	t.Helper()
	if limit := uint64(perByte*n + 64<<10); alloc > limit {
		t.Fatalf("%s of %d bytes allocated %d bytes (limit %d)", what, n, alloc, limit)
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var h *Header
		var err error
		checkAlloc(t, "ParseHeader", len(b), allocated(func() { h, err = ParseHeader("fuzz", b) }), 4)
		if err != nil {
			return
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("parsed an invalid header: %v", err)
		}
		got, err := MarshalHeader(h)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("parse then marshal:\n got %x\nwant %x", got, b)
		}
	})
}

// fuzzFileHeader is the file header records are checked against.
func fuzzFileHeader(encrypted bool) *Header {
	h := testHeader()
	if encrypted {
		h.Encryption = EncryptionAES256GCM
		h.Secrets = []keys.KeyID{{0x11, 15: 0x22}, {0x33}}
	}
	return &h
}

func FuzzParseRecordHeader(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, encrypted bool) {
		rh, ok := ParseRecordHeader(b)
		if !ok {
			return
		}
		if got := rh.Marshal(nil); !bytes.Equal(got, b[:RecordHeaderSize]) {
			t.Fatalf("parse then marshal:\n got %x\nwant %x", got, b[:RecordHeaderSize])
		}
		fh := fuzzFileHeader(encrypted)
		if err := rh.Check(fh); err != nil {
			return
		}
		// What Check promises a reader.
		if rh.PlainLen == 0 || rh.PlainLen > fh.BlockSize || rh.StoredLen == 0 || rh.StoredLen > rh.PlainLen ||
			RecordHeaderSize+rh.SealedLen > maxRecordLen(fh.BlockSize) ||
			(rh.Compression == CompressionNone && rh.StoredLen != rh.PlainLen) ||
			(encrypted && (rh.SealedLen != rh.StoredLen+TagSize || !fh.HasSecret(rh.KeyID))) ||
			(!encrypted && (rh.SealedLen != rh.StoredLen || !rh.KeyID.IsZero() || rh.Nonce != [12]byte{})) {
			t.Fatalf("Check accepted %+v", rh)
		}
	})
}

// FuzzParseKeyTable takes the two slots of a key table region, each half
// of the input.
func FuzzParseKeyTable(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		c := len(b) / 2
		if c < 4 { // parseSlot needs room for its checksum; files have c >= 512
			return
		}
		var kt *KeyTable
		var err error
		checkAlloc(t, "parseKeyTable", len(b), allocated(func() { kt, err = parseKeyTable("fuzz", 0, b, uint32(c)) }), 8)
		for i, slot := range [][]byte{b[:c], b[c : 2*c]} {
			s, err := parseSlot("fuzz", 0, slot)
			if err != nil || s == nil {
				continue
			}
			got, err := marshalSlot(s, uint32(c))
			if err != nil {
				t.Fatalf("slot %d parses but does not marshal: %v", i, err)
			}
			if !bytes.Equal(got, slot) {
				t.Fatalf("slot %d: parse then marshal:\n got %x\nwant %x", i, got, slot)
			}
		}
		if err != nil {
			return
		}
		if kt == nil || kt.Generation == 0 {
			t.Fatalf("parseKeyTable returned %+v without an error", kt)
		}
		a, _ := parseSlot("fuzz", 0, b[:c])
		z, _ := parseSlot("fuzz", 0, b[c:2*c])
		if (a != nil && a.Generation > kt.Generation) || (z != nil && z.Generation > kt.Generation) {
			t.Fatalf("chose generation %d over a newer slot", kt.Generation)
		}
	})
}

// FuzzOpen covers parsePreamble, parseFooter, parseKeyTable, parseBlockMap
// and splitCatalog as Open uses them, then ReadRecord and the catalog.
func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var file *File
		var err error
		alloc := allocated(func() { file, err = Open(bytes.NewReader(b), int64(len(b)), "fuzz") })
		checkAlloc(t, "Open", len(b), alloc, 64)
		if err != nil {
			return
		}
		// Everything Open parsed encodes back to the bytes it came from.
		ft := file.Footer
		if got, _ := MarshalHeader(file.Header); !bytes.Equal(got, file.HeaderBytes) || !bytes.Equal(b[:len(got)], got) {
			t.Fatal("header: parse then marshal differs")
		}
		if got := ft.marshal(); !bytes.Equal(got, b[len(b)-FooterSize:]) {
			t.Fatal("footer: parse then marshal differs")
		}
		if got := marshalBlockMap(file.Entries); !bytes.Equal(got, b[ft.BlockMapOffset:ft.BlockMapOffset+ft.BlockMapLen]) {
			t.Fatal("block map: parse then marshal differs")
		}
		c := int64(file.Header.KeyTableCap)
		slot, err := marshalSlot(file.KeyTable, uint32(c))
		if err != nil {
			t.Fatal(err)
		}
		kt := b[file.KeyTableOffset : file.KeyTableOffset+2*c]
		if !bytes.Equal(slot, kt[:c]) && !bytes.Equal(slot, kt[c:]) {
			t.Fatal("key table: parse then marshal matches neither slot")
		}
		var buf []byte
		for i := range file.Entries {
			rh, payload, err := file.ReadRecord(&file.Entries[i], buf)
			if err != nil {
				continue
			}
			if int(rh.SealedLen) != len(payload) {
				t.Fatalf("record %d: payload %d bytes, header says %d", i, len(payload), rh.SealedLen)
			}
		}
		if !file.Header.Encrypted() {
			alloc := allocated(func() { file.Catalog(nil) })
			checkAlloc(t, "Catalog", len(b), alloc, 64)
		}
	})
}

func FuzzParseCatalog(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte, blockSize uint32) {
		if blockSize < MinBlockSize || blockSize > MaxBlockSize {
			blockSize = MinBlockSize
		}
		var c *Catalog
		var err error
		checkAlloc(t, "ParseCatalog", len(b), allocated(func() { c, err = ParseCatalog(b, blockSize) }), 32)
		if err != nil {
			return
		}
		if got := c.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("parse then marshal:\n got %x\nwant %x", got, b)
		}
		for i, o := range c.Objects {
			if o.HasData() && uint64(len(o.Digests)) != Blocks(o.Size, blockSize) {
				t.Fatalf("object %d: %d digests for size %d", i, len(o.Digests), o.Size)
			}
		}
	})
}

// TestOpenFooterOverflowAllocation: a footer whose block map offset plus
// length overflows int64, with a header announcing the largest key table,
// must be refused without allocating the key table region: a few hundred
// bytes must not make Open allocate 32 MiB.
func TestOpenFooterOverflowAllocation(t *testing.T) {
	b := footerOverflowFile(t)
	var err error
	alloc := allocated(func() { _, err = Open(bytes.NewReader(b), int64(len(b)), "overflow") })
	if err == nil {
		t.Fatal("Open accepted the file")
	}
	if alloc > 1<<20 {
		t.Fatalf("a %d-byte file makes Open allocate %d bytes: %v", len(b), alloc, err)
	}
}

// footerOverflowFile is a header with the largest key table capacity and a
// footer whose block map length is MaxInt64.
func footerOverflowFile(t testing.TB) []byte {
	h := testHeader()
	h.KeyTableCap = maxKeyTableCap
	hdr, err := MarshalHeader(&h)
	if err != nil {
		t.Fatal(err)
	}
	size := int64(len(hdr) + FooterSize)
	off := size - FooterSize
	records := int64(len(hdr)) + 2*maxKeyTableCap
	ft := &Footer{RecordsOffset: records, BlockMapOffset: records, BlockMapLen: math.MaxInt64}
	ft.CatalogOffset = ft.BlockMapOffset + ft.BlockMapLen // wraps negative
	ft.CatalogLen = off - ft.CatalogOffset                // wraps positive
	return append(hdr, ft.marshal()...)
}

// fuzzSeeds returns the seed corpus of every target: valid encodings and
// hostile lengths. Each value is the list of arguments of one call.
func fuzzSeeds(t testing.TB) map[string]map[string][]any {
	seeds := map[string]map[string][]any{}
	add := func(target, name string, args ...any) {
		if seeds[target] == nil {
			seeds[target] = map[string][]any{}
		}
		seeds[target][name] = args
	}
	refixCRC := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32c(b[:len(b)-4]))
		return b
	}

	// Headers.
	s1, s2 := testSession(t, 1), testSession(t, 2)
	hp := testHeader()
	hp.KeyTableCap = 512
	plainHdr, _ := MarshalHeader(&hp)
	he := hp
	he.Encryption, he.Secrets, he.Kind, he.Sequence, he.ParentID = EncryptionAES256GCM, []keys.KeyID{s1.ID(), s2.ID()}, KindIncremental, 9, testID(1)
	he.BackupName = strings.Repeat("n", maxBackupName)
	encHdr, _ := MarshalHeader(&he)
	add("FuzzParseHeader", "valid-plain", plainHdr)
	add("FuzzParseHeader", "valid-encrypted", encHdr)
	hm := he
	hm.Kind, hm.Sequence, hm.ParentID = KindMerged, 7, ID{}
	mergedHdr, _ := MarshalHeader(&hm)
	add("FuzzParseHeader", "valid-merged", mergedHdr)
	add("FuzzParseHeader", "empty", []byte{})
	add("FuzzParseHeader", "preamble-only", plainHdr[:preambleSize])
	add("FuzzParseHeader", "length-ffffffff", func() []byte {
		b := bytes.Clone(plainHdr)
		binary.LittleEndian.PutUint32(b[12:], 0xffffffff)
		return b
	}())
	add("FuzzParseHeader", "name-length-ffff", func() []byte {
		b := bytes.Clone(plainHdr)
		binary.LittleEndian.PutUint16(b[102:], 0xffff)
		return refixCRC(b)
	}())
	add("FuzzParseHeader", "secrets-ffff", func() []byte {
		b := bytes.Clone(plainHdr)
		binary.LittleEndian.PutUint16(b[len(b)-6:], 0xffff)
		return refixCRC(b)
	}())

	// Record headers.
	sealed := RecordHeader{Object: 1, Block: 2, PlainLen: 4096, StoredLen: 4096, SealedLen: 4112, KeyID: fuzzFileHeader(true).Secrets[0], Nonce: Nonce(1, 2)}
	plain := RecordHeader{Object: 1, Block: 2, PlainLen: 100, StoredLen: 100, SealedLen: 100}
	zstd := RecordHeader{Object: 1 << 60, Block: 3, PlainLen: 4096, StoredLen: 17, SealedLen: 17, Compression: CompressionZstd}
	add("FuzzParseRecordHeader", "valid-sealed", sealed.Marshal(nil), true)
	add("FuzzParseRecordHeader", "valid-plain", plain.Marshal(nil), false)
	add("FuzzParseRecordHeader", "valid-zstd", zstd.Marshal([]byte(nil)), false)
	huge := RecordHeader{PlainLen: math.MaxUint32, StoredLen: math.MaxUint32, SealedLen: math.MaxUint32, Compression: 0xff}
	add("FuzzParseRecordHeader", "lengths-ffffffff", huge.Marshal(nil), true)
	add("FuzzParseRecordHeader", "short", plain.Marshal(nil)[:63], false)

	// Key tables: two slots of 64 bytes (small inputs keep the fuzzer's
	// minimization quick), and one region of real size.
	small := func(gen uint64) *KeyTable {
		return &KeyTable{Generation: gen, Entries: []KeyEntry{{Secret: keys.KeyID{byte(gen)}, Type: EntryPassword, Data: []byte("wrapped!")}}}
	}
	region := func(c int, a, b *KeyTable) []byte {
		out := make([]byte, 2*c)
		for i, kt := range []*KeyTable{a, b} {
			if kt != nil {
				s, err := marshalSlot(kt, uint32(c))
				if err != nil {
					t.Fatal(err)
				}
				copy(out[c*i:], s)
			}
		}
		return out
	}
	add("FuzzParseKeyTable", "valid-512", region(512, testKeyTable(1), nil))
	add("FuzzParseKeyTable", "valid-a", region(64, small(1), nil))
	add("FuzzParseKeyTable", "valid-b-newer", region(64, small(1), small(2)))
	add("FuzzParseKeyTable", "valid-a-newer", region(64, small(3), small(2)))
	add("FuzzParseKeyTable", "both-empty", make([]byte, 128))
	add("FuzzParseKeyTable", "small-slots", make([]byte, 16))
	hostileSlot := func(f func(b []byte)) []byte {
		r := region(64, small(1), nil)
		f(r[:64])
		refixCRC(r[:64])
		return r
	}
	add("FuzzParseKeyTable", "count-ffff", hostileSlot(func(b []byte) { binary.LittleEndian.PutUint16(b[12:], 0xffff) }))
	add("FuzzParseKeyTable", "body-ffffffff", hostileSlot(func(b []byte) { binary.LittleEndian.PutUint32(b[8:], 0xffffffff) }))
	add("FuzzParseKeyTable", "entry-ffffffff", hostileSlot(func(b []byte) { binary.LittleEndian.PutUint32(b[31:], 0xffffffff) }))

	// Whole files.
	for _, g := range goldenFiles {
		add("FuzzOpen", "golden-"+strings.TrimSuffix(g.name, ".ferry"), goldenSpec(t, g.encrypted).build(t))
	}
	tiny := tinySpec(t, false).build(t)
	add("FuzzOpen", "tiny-plain", tiny)
	add("FuzzOpen", "tiny-encrypted", tinySpec(t, true).build(t))
	add("FuzzOpen", "footer-overflow", footerOverflowFile(t))
	add("FuzzOpen", "empty", []byte{})
	add("FuzzOpen", "block-map-count-huge", forge(t, tiny, func(f *File, b []byte) {
		binary.LittleEndian.PutUint64(b[f.Footer.BlockMapOffset:], 1<<60)
	}))
	add("FuzzOpen", "catalog-chunk-ffffffff", forge(t, tiny, func(f *File, b []byte) {
		binary.LittleEndian.PutUint32(b[f.Footer.CatalogOffset+17:], 0xffffffff)
	}))

	// Catalogs.
	cat := smallSpec(t, false).catalog
	add("FuzzParseCatalog", "valid-small", cat.Marshal(), uint32(MinBlockSize))
	add("FuzzParseCatalog", "valid-device", catalogOfSize(2000).Marshal(), uint32(MinBlockSize))
	add("FuzzParseCatalog", "valid-empty", (&Catalog{SourceKind: SourceFile}).Marshal(), uint32(MaxBlockSize))
	setU := func(b []byte, off, size int, v uint64) []byte {
		b = bytes.Clone(b)
		if size == 4 {
			binary.LittleEndian.PutUint32(b[off:], uint32(v))
		} else {
			binary.LittleEndian.PutUint64(b[off:], v)
		}
		return b
	}
	cb := cat.Marshal()
	sp := len(cat.SourcePath)
	add("FuzzParseCatalog", "objects-huge", setU(cb, 6+sp, 8, math.MaxUint64), uint32(MinBlockSize))
	add("FuzzParseCatalog", "source-path-ffffffff", setU(cb, 2, 4, math.MaxUint32), uint32(MinBlockSize))
	first := 6 + sp + 8 // the first object
	add("FuzzParseCatalog", "path-ffffffff", setU(cb, first+41, 4, math.MaxUint32), uint32(MinBlockSize))
	add("FuzzParseCatalog", "digests-huge", setU(cb, first+41+4+1+4, 8, math.MaxUint64), uint32(MinBlockSize))
	return seeds
}

// TestWriteFuzzCorpus writes (with -update) or checks the committed seed
// corpus of the fuzz targets.
func TestWriteFuzzCorpus(t *testing.T) {
	targets := fuzzSeeds(t)
	names := make([]string, 0, len(targets))
	for n := range targets {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, target := range names {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, args := range targets[target] {
			var b strings.Builder
			b.WriteString("go test fuzz v1\n")
			for _, a := range args {
				switch v := a.(type) {
				case []byte:
					fmt.Fprintf(&b, "[]byte(%q)\n", v)
				case uint32:
					fmt.Fprintf(&b, "uint32(%d)\n", v)
				case bool:
					fmt.Fprintf(&b, "bool(%t)\n", v)
				default:
					t.Fatalf("seed type %T", a)
				}
			}
			path := filepath.Join(dir, name)
			if *update {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil || string(got) != b.String() {
				t.Errorf("%s is stale or missing (run go test -run TestWriteFuzzCorpus -update)", path)
			}
		}
	}
}
