package format

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/keys"
)

// A record as written, to compare with what a reader gets back.
type testRecord struct {
	rh      RecordHeader
	payload []byte
}

// TestWriteOpenRoundTrip writes files with several records, written out of
// (object, block) order and including a compressed one, and checks that
// Open and ReadRecord give back exactly what was written.
func TestWriteOpenRoundTrip(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "aes-256-gcm"}[encrypted]
		t.Run(name, func(t *testing.T) {
			h := testHeader()
			h.Kind, h.Sequence, h.ParentID = KindIncremental, 3, testID(0x50)
			h.BlockSize = 64 << 10
			var s *keys.Session
			var kt KeyTable
			if encrypted {
				s = testSession(t, 0x40)
				h.Encryption = EncryptionAES256GCM
				h.Secrets = []keys.KeyID{s.ID()}
				pe, err := testPasswordKey(t).Wrap(s)
				if err != nil {
					t.Fatal(err)
				}
				kt.Entries = []KeyEntry{
					{Secret: s.ID(), Type: EntryPassword, Data: pe.Marshal()},
					{Secret: s.ID(), Type: 200, Data: []byte("an entry type from a newer ferry")},
				}
			}
			var out bytes.Buffer
			w, err := NewWriter(&out, h, kt)
			if err != nil {
				t.Fatal(err)
			}
			if w.Header().KeyTableCap != KeyTableCapFor(&kt) {
				t.Errorf("key table capacity %d, want KeyTableCapFor = %d", w.Header().KeyTableCap, KeyTableCapFor(&kt))
			}
			blocks := []struct {
				obj, block uint64
				plain      []byte
				zstd       bool
			}{
				{7, 1, bytes.Repeat([]byte{1}, 64<<10), false},
				{7, 0, bytes.Repeat([]byte("x"), 64<<10), false},
				{3, 9, []byte("a short last block"), false},
				{1 << 40, 1 << 33, bytes.Repeat([]byte{0xee}, 1000), true},
				{8, 0, []byte{0}, false},
			}
			var written []testRecord
			var plainSum, sealedSum uint64
			for i, b := range blocks {
				rh := RecordHeader{Object: b.obj, Block: b.block, PlainLen: uint32(len(b.plain))}
				stored := b.plain
				if b.zstd {
					// The format does not look inside: any shorter bytes
					// flagged zstd are a valid record.
					stored = []byte("pretend zstd frame")
					rh.Compression = CompressionZstd
				}
				rh.StoredLen = uint32(len(stored))
				payload := stored
				if s != nil {
					rh.KeyID = s.ID()
					rh.Nonce = Nonce(2, uint64(i))
					payload = s.Data().Seal(nil, rh.Nonce[:], stored, RecordAAD(nil, h.BackupID, &rh))
				}
				rh.SealedLen = uint32(len(payload))
				var sum *Checksum
				if i%2 == 1 { // a checksum computed by the caller
					c := RecordChecksum(rh.Marshal(nil), payload)
					sum = &c
				}
				if err := w.WriteRecord(&rh, payload, sum); err != nil {
					t.Fatal(err)
				}
				written = append(written, testRecord{rh, payload})
				plainSum += uint64(rh.PlainLen)
				sealedSum += uint64(rh.SealedLen)
			}
			if err := w.WriteRecord(&written[0].rh, written[0].payload, nil); !errors.Is(err, ErrDuplicateRecord) {
				t.Errorf("second record of a block: %v, want ErrDuplicateRecord", err)
			}
			if w.Records() != len(blocks) {
				t.Errorf("Records() = %d", w.Records())
			}

			cat := &Catalog{SourceKind: SourceDevice, SourcePath: "/dev/sdb", Objects: []Object{
				{ID: 7, Type: ObjectDevice, Size: 2 * 64 << 10, Digests: []Digest{sha256.Sum256(blocks[1].plain), sha256.Sum256(blocks[0].plain)}},
			}}
			cat.Objects[0].Path = "disk"
			var id keys.KeyID
			var sealed []byte
			if s != nil {
				id = s.ID()
				sealed = SealCatalog(cat.Marshal(), w.Header(), id, s.Meta(), 2)
			} else {
				sealed = SealCatalog(cat.Marshal(), w.Header(), id, nil, 0)
			}
			ft, err := w.Finish(sealed)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.WriteRecord(&written[0].rh, written[0].payload, nil); err == nil {
				t.Error("WriteRecord after Finish succeeded")
			}
			if _, err := w.Finish(sealed); err == nil {
				t.Error("second Finish succeeded")
			}
			data := out.Bytes()
			if w.Offset() != int64(len(data)) {
				t.Errorf("Offset() = %d, file is %d bytes", w.Offset(), len(data))
			}

			f, err := Open(bytes.NewReader(data), int64(len(data)), "rt")
			if err != nil {
				t.Fatal(err)
			}
			want := h
			want.KeyTableCap = w.Header().KeyTableCap
			if !sameHeader(f.Header, &want) {
				t.Errorf("header:\n got %+v\nwant %+v", f.Header, want)
			}
			if !reflect.DeepEqual(f.KeyTable.Entries, kt.Entries) && len(kt.Entries) > 0 {
				t.Errorf("key table entries differ: %+v", f.KeyTable.Entries)
			}
			if f.KeyTable.Generation != 1 {
				t.Errorf("generation %d, want 1", f.KeyTable.Generation)
			}
			if *f.Footer != *ft {
				t.Errorf("footer:\n got %+v\nwant %+v", f.Footer, ft)
			}
			if ft.PlainBytes != plainSum || ft.SealedBytes != sealedSum || ft.RecordCount != uint64(len(blocks)) {
				t.Errorf("footer counts %d/%d/%d, want %d/%d/%d", ft.RecordCount, ft.PlainBytes, ft.SealedBytes, len(blocks), plainSum, sealedSum)
			}
			if !reflect.DeepEqual(f.Entries, w.Entries()) {
				t.Error("block map differs from the writer's")
			}
			if ft.RecordsOffset != int64(len(f.HeaderBytes))+2*int64(f.Header.KeyTableCap) {
				t.Errorf("records start at %d", ft.RecordsOffset)
			}
			for i := range f.Entries {
				e := &f.Entries[i]
				rh, payload, err := f.ReadRecord(e, nil)
				if err != nil {
					t.Fatal(err)
				}
				if rh != written[i].rh || !bytes.Equal(payload, written[i].payload) {
					t.Errorf("record %d: got %+v, want %+v", i, rh, written[i].rh)
				}
				if s != nil {
					plain, err := s.Data().Open(nil, rh.Nonce[:], payload, RecordAAD(nil, f.Header.BackupID, &rh))
					if err != nil {
						t.Errorf("record %d does not open: %v", i, err)
					}
					if rh.Compression == CompressionNone && !bytes.Equal(plain, blocks[i].plain) {
						t.Errorf("record %d: wrong plaintext", i)
					}
				}
			}
			gotID := f.CatalogKeyID()
			if keys.KeyID(gotID) != id {
				t.Errorf("CatalogKeyID = %x, want %x", gotID, id)
			}
			if f.CatalogOffset() != ft.CatalogOffset || !bytes.Equal(f.CatalogSection(), sealed) {
				t.Error("catalog section differs")
			}
			var gotCat *Catalog
			if s != nil {
				if _, err := f.Catalog(nil); err == nil {
					t.Error("a sealed catalog opened without a key")
				}
				gotCat, err = f.Catalog(s.Meta())
			} else {
				gotCat, err = f.Catalog(nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameCatalog(gotCat, cat) {
				t.Errorf("catalog:\n got %+v\nwant %+v", gotCat, cat)
			}

			// The same through the file system.
			path := filepath.Join(t.TempDir(), "f.ferry")
			if err := os.WriteFile(path, data, 0o600); err != nil {
				t.Fatal(err)
			}
			f2, fd, err := OpenPath(path)
			if err != nil {
				t.Fatal(err)
			}
			defer fd.Close()
			if f2.Name != path || f2.Size != int64(len(data)) || !reflect.DeepEqual(f2.Entries, f.Entries) {
				t.Error("OpenPath gives another file")
			}
		})
	}
}

// TestReadAllSmallFiles runs the full restore check over the small specs.
func TestReadAllSmallFiles(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		spec := smallSpec(t, encrypted)
		data := spec.build(t)
		r, err := readAll(data, "small", keys.NewPasswordCache(testPassword))
		if err != nil {
			t.Fatalf("encrypted=%v: %v", encrypted, err)
		}
		if !sameCatalog(r.catalog, &spec.catalog) {
			t.Errorf("encrypted=%v: catalog differs", encrypted)
		}
		if len(r.blocks) != 2 || !bytes.Equal(append(r.blocks[BlockKey{2, 0}], r.blocks[BlockKey{2, 1}]...), spec.contents[2]) {
			t.Errorf("encrypted=%v: blocks differ", encrypted)
		}
		if encrypted {
			if _, err := readAll(data, "small", keys.NewPasswordCache([]byte("wrong"))); !errors.Is(err, keys.ErrWrongKey) {
				t.Errorf("wrong password: %v, want ErrWrongKey", err)
			}
		}
	}
}

func TestNewWriterRejects(t *testing.T) {
	s := testSession(t, 0x40)
	other := testSession(t, 0x60)
	enc := testHeader()
	enc.Encryption = EncryptionAES256GCM
	enc.Secrets = []keys.KeyID{s.ID()}
	bad := testHeader()
	bad.BlockSize = 100
	cases := map[string]struct {
		h  Header
		kt KeyTable
	}{
		"invalid header":       {bad, KeyTable{}},
		"entry for other key":  {enc, KeyTable{Entries: []KeyEntry{{Secret: other.ID(), Type: EntryPassword}}}},
		"table exceeds cap":    {func() Header { h := enc; h.KeyTableCap = 512; return h }(), KeyTable{Entries: []KeyEntry{{Secret: s.ID(), Data: make([]byte, 600)}}}},
		"entry data too large": {enc, KeyTable{Entries: []KeyEntry{{Secret: s.ID(), Data: make([]byte, maxEntryData+1)}}}},
	}
	for name, c := range cases {
		if _, err := NewWriter(&bytes.Buffer{}, c.h, c.kt); err == nil {
			t.Errorf("%s: NewWriter succeeded", name)
		}
	}
}

func TestWriteRecordRejects(t *testing.T) {
	s := testSession(t, 0x40)
	h := testHeader()
	h.Encryption = EncryptionAES256GCM
	h.Secrets = []keys.KeyID{s.ID()}
	w, err := NewWriter(&bytes.Buffer{}, h, KeyTable{})
	if err != nil {
		t.Fatal(err)
	}
	good := RecordHeader{Object: 1, PlainLen: 10, StoredLen: 10, SealedLen: 26, KeyID: s.ID()}
	if err := w.WriteRecord(&good, make([]byte, 25), nil); err == nil {
		t.Error("payload shorter than SealedLen accepted")
	}
	unsealed := good
	unsealed.SealedLen = 10
	if err := w.WriteRecord(&unsealed, make([]byte, 10), nil); err == nil {
		t.Error("unsealed record accepted in an encrypted file")
	}
	if err := w.WriteRecord(&good, make([]byte, 26), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Finish(make([]byte, 3)); err == nil {
		t.Error("Finish accepted a malformed catalog section")
	}
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

func (w *failWriter) Write(b []byte) (int, error) {
	if len(b) > w.n {
		n := w.n
		w.n = 0
		return n, errors.New("disk full")
	}
	w.n -= len(b)
	return len(b), nil
}

func TestWriterStickyError(t *testing.T) {
	h := testHeader()
	w, err := NewWriter(&failWriter{n: 1000}, h, KeyTable{})
	if err != nil {
		t.Fatal(err) // buffered: nothing reached the writer yet
	}
	rh := RecordHeader{Object: 1, PlainLen: 4096, StoredLen: 4096, SealedLen: 4096}
	var firstErr error
	for i := range 200 { // more than the 256 KiB buffer
		rh.Block = uint64(i)
		if err := w.WriteRecord(&rh, make([]byte, 4096), nil); err != nil {
			firstErr = err
			break
		}
	}
	if firstErr == nil {
		t.Fatal("no error from a failing writer")
	}
	rh.Block = 1000
	if err := w.WriteRecord(&rh, make([]byte, 4096), nil); err != firstErr {
		t.Errorf("error is not sticky: %v", err)
	}
	if _, err := w.Finish(SealCatalog((&Catalog{SourceKind: SourceDir}).Marshal(), &h, keys.KeyID{}, nil, 0)); err != firstErr {
		t.Errorf("Finish after a write error: %v", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	s1, s2 := testSession(t, 1), testSession(t, 2)
	h := testHeader()
	h.Kind, h.Sequence, h.ParentID = KindIncremental, 1<<31, testID(0x99)
	h.Encryption = EncryptionAES256GCM
	h.Secrets = []keys.KeyID{s1.ID(), s2.ID()}
	h.KeyTableCap = 1024
	h.BlockSize = MaxBlockSize
	b, err := MarshalHeader(&h)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != preambleSize+headerFixedBody+len(h.BackupName)+32+4 {
		t.Errorf("header is %d bytes", len(b))
	}
	got, err := ParseHeader("h", b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, &h) || !sameHeader(got, &h) {
		t.Errorf("got %+v\nwant %+v", got, &h)
	}
	// Layout spot checks (docs/format.md).
	if string(b[:8]) != "FERRYBAK" || binary.LittleEndian.Uint16(b[8:]) != 1 || binary.LittleEndian.Uint16(b[10:]) != 0 ||
		binary.LittleEndian.Uint32(b[12:]) != uint32(len(b)-20) {
		t.Error("preamble layout")
	}
	if !bytes.Equal(b[16:32], h.FileID[:]) || !bytes.Equal(b[64:80], h.ParentID[:]) || binary.LittleEndian.Uint32(b[80:]) != h.Sequence ||
		b[84] != byte(KindIncremental) || b[85] != byte(EncryptionAES256GCM) || binary.LittleEndian.Uint32(b[86:]) != MaxBlockSize ||
		int64(binary.LittleEndian.Uint64(b[90:])) != h.Created.UnixNano() || binary.LittleEndian.Uint32(b[98:]) != 1024 ||
		binary.LittleEndian.Uint16(b[102:]) != uint16(len(h.BackupName)) || string(b[104:111]) != h.BackupName ||
		binary.LittleEndian.Uint16(b[111:]) != 2 || !bytes.Equal(b[113:129], h.Secrets[0][:]) {
		t.Error("body layout differs from docs/format.md")
	}
	// A local time comes back as the same instant in UTC.
	h.Created = h.Created.In(time.FixedZone("CET", 3600))
	b2, _ := MarshalHeader(&h)
	if !bytes.Equal(b, b2) {
		t.Error("the time zone changes the encoding")
	}
}

func TestHeaderValidate(t *testing.T) {
	id := testSession(t, 1).ID()
	mod := func(f func(*Header)) Header { h := testHeader(); h.KeyTableCap = 512; f(&h); return h }
	bad := map[string]Header{
		"kind 0":                  mod(func(h *Header) { h.Kind = 0 }),
		"full with parent":        mod(func(h *Header) { h.ParentID = testID(1) }),
		"full with sequence 2":    mod(func(h *Header) { h.Sequence = 2 }),
		"incremental no parent":   mod(func(h *Header) { h.Kind, h.Sequence = KindIncremental, 2 }),
		"incremental sequence 1":  mod(func(h *Header) { h.Kind, h.ParentID = KindIncremental, testID(1) }),
		"merged sequence 1":       mod(func(h *Header) { h.Kind = KindMerged }),
		"merged sequence 0":       mod(func(h *Header) { h.Kind, h.Sequence = KindMerged, 0 }),
		"merged with parent":      mod(func(h *Header) { h.Kind, h.Sequence, h.ParentID = KindMerged, 2, testID(1) }),
		"kind 4":                  mod(func(h *Header) { h.Kind, h.Sequence = 4, 2 }),
		"block size small":        mod(func(h *Header) { h.BlockSize = MinBlockSize - 1 }),
		"block size large":        mod(func(h *Header) { h.BlockSize = MaxBlockSize + 1 }),
		"encryption 2":            mod(func(h *Header) { h.Encryption = 2 }),
		"plain with secret":       mod(func(h *Header) { h.Secrets = []keys.KeyID{id} }),
		"encrypted, no secret":    mod(func(h *Header) { h.Encryption = EncryptionAES256GCM }),
		"zero secret":             mod(func(h *Header) { h.Encryption, h.Secrets = EncryptionAES256GCM, []keys.KeyID{{}} }),
		"duplicate secret":        mod(func(h *Header) { h.Encryption, h.Secrets = EncryptionAES256GCM, []keys.KeyID{id, id} }),
		"too many secrets":        mod(func(h *Header) { h.Encryption, h.Secrets = EncryptionAES256GCM, make([]keys.KeyID, maxSecrets+1) }),
		"long name":               mod(func(h *Header) { h.BackupName = string(make([]byte, 256)) }),
		"zero file id":            mod(func(h *Header) { h.FileID = ID{} }),
		"zero backup id":          mod(func(h *Header) { h.BackupID = ID{} }),
		"zero chain id":           mod(func(h *Header) { h.ChainID = ID{} }),
		"key table cap unaligned": mod(func(h *Header) { h.KeyTableCap = 700 }),
		"key table cap small":     mod(func(h *Header) { h.KeyTableCap = 256 }),
		"key table cap large":     mod(func(h *Header) { h.KeyTableCap = maxKeyTableCap + 512 }),
	}
	for name, h := range bad {
		if _, err := MarshalHeader(&h); err == nil {
			t.Errorf("%s: MarshalHeader succeeded", name)
		}
	}
	h := mod(func(h *Header) { h.KeyTableCap = 0 })
	if _, err := MarshalHeader(&h); err == nil {
		t.Error("MarshalHeader with capacity 0 succeeded")
	}
}

func TestParseHeaderRejects(t *testing.T) {
	h := testHeader()
	h.KeyTableCap = 512
	good, err := MarshalHeader(&h)
	if err != nil {
		t.Fatal(err)
	}
	// refix recomputes the checksum so that the field itself is tested.
	refix := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[len(b)-4:], crc32c(b[:len(b)-4]))
		return b
	}
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	cases := map[string]struct {
		b   []byte
		off int64
	}{
		"short":        {good[:15], 0},
		"magic":        {edit(func(b []byte) []byte { b[0] = 'f'; return b }), 0},
		"version":      {edit(func(b []byte) []byte { b[8] = 2; return refix(b) }), 8},
		"flags":        {edit(func(b []byte) []byte { b[11] = 1; return refix(b) }), 10},
		"length small": {edit(func(b []byte) []byte { b[12] = 89; return refix(b) }), 12},
		"length big":   {edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], maxHeaderBody+1); return b }), 12},
		"length ≠":     {edit(func(b []byte) []byte { return append(b, 0) }), 12},
		"checksum":     {edit(func(b []byte) []byte { b[20] ^= 1; return b }), int64(len(good) - 4)},
		"kind 4":       {edit(func(b []byte) []byte { b[84] = 4; return refix(b) }), 16},
		"merged seq 1": {edit(func(b []byte) []byte { b[84] = byte(KindMerged); return refix(b) }), 16},
		"cap zero":     {edit(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[98:], 0); return refix(b) }), 16},
		"name length":  {edit(func(b []byte) []byte { b[102] = 200; return refix(b) }), -1},
		"secret count": {edit(func(b []byte) []byte { b[len(b)-6] = 1; return refix(b) }), -1},
		"secrets over": {edit(func(b []byte) []byte { binary.LittleEndian.PutUint16(b[len(b)-6:], maxSecrets+1); return refix(b) }), -1},
	}
	for name, c := range cases {
		_, err := ParseHeader("hdr", c.b)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Region != RegionHeader || ce.File != "hdr" {
			t.Errorf("%s: err = %v, want a header CorruptError", name, err)
			continue
		}
		if c.off >= 0 && ce.Offset != c.off {
			t.Errorf("%s: offset %d, want %d", name, ce.Offset, c.off)
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: not ErrCorrupt", name)
		}
	}
}

func TestRecordHeaderLayout(t *testing.T) {
	rh := RecordHeader{
		Object: 0x0102030405060708, Block: 0x1112131415161718,
		PlainLen: 0x21222324, StoredLen: 0x31323334, SealedLen: 0x41424344,
		Compression: CompressionZstd, KeyID: keys.KeyID{0xa0, 15: 0xaf}, Nonce: Nonce(0xb0b1b2b3, 0xc0c1c2c3c4c5c6c7),
	}
	b := rh.Marshal([]byte("prefix"))[6:]
	want := []byte{
		'R', 'E', 'C', '1',
		0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
		0x24, 0x23, 0x22, 0x21, 0x34, 0x33, 0x32, 0x31, 0x44, 0x43, 0x42, 0x41,
		1, 0, 0, 0,
		0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xaf,
		0xb0, 0xb1, 0xb2, 0xb3, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6, 0xc7,
	}
	if !bytes.Equal(b, want) || len(b) != RecordHeaderSize {
		t.Fatalf("record header\n got %x\nwant %x", b, want)
	}
	got, ok := ParseRecordHeader(b)
	if !ok || got != rh {
		t.Fatalf("parse: %+v %v", got, ok)
	}
	for _, i := range []int{0, 33, 34, 35} {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, ok := ParseRecordHeader(c); ok {
			t.Errorf("byte %d changed and the header still parses", i)
		}
	}
	if _, ok := ParseRecordHeader(b[:63]); ok {
		t.Error("63 bytes parse")
	}

	aad := RecordAAD([]byte("x"), testID(0x20), &rh)[1:]
	wantAAD := append([]byte("ferry/v1/record"), testID(0x20).bytes()...)
	wantAAD = append(wantAAD, want[4:28]...) // object, block, plain and stored length
	wantAAD = append(wantAAD, 1)             // compression
	if !bytes.Equal(aad, wantAAD) || len(aad) != 56 {
		t.Errorf("AAD\n got %x\nwant %x", aad, wantAAD)
	}

	sum := RecordChecksum(b, []byte("payload"))
	if sum != sha256.Sum256(append(bytes.Clone(b), "payload"...)) {
		t.Error("checksum is not SHA-256(header || payload)")
	}
}

func (id ID) bytes() []byte { return id[:] }

func TestNonce(t *testing.T) {
	n := Nonce(0x01020304, 0x0506070809101112)
	if want := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 0x10, 0x11, 0x12}; n != want {
		t.Errorf("Nonce = %x, want %x", n, want)
	}
	if Nonce(1, 0) == Nonce(0, 1<<32) {
		t.Error("prefix and counter overlap")
	}
}

func TestRecordHeaderCheck(t *testing.T) {
	id := testSession(t, 1).ID()
	plain := testHeader()
	enc := testHeader()
	enc.Encryption, enc.Secrets = EncryptionAES256GCM, []keys.KeyID{id}
	p := RecordHeader{PlainLen: 100, StoredLen: 100, SealedLen: 100}
	e := RecordHeader{PlainLen: 100, StoredLen: 100, SealedLen: 116, KeyID: id, Nonce: Nonce(0, 0)}
	z := RecordHeader{PlainLen: 100, StoredLen: 40, SealedLen: 40, Compression: CompressionZstd}
	mod := func(r RecordHeader, f func(*RecordHeader)) RecordHeader { f(&r); return r }
	for _, c := range []struct {
		name string
		rh   RecordHeader
		h    *Header
		ok   bool
	}{
		{"plain", p, &plain, true},
		{"sealed", e, &enc, true},
		{"zstd", z, &plain, true},
		{"full block", mod(p, func(r *RecordHeader) { r.PlainLen, r.StoredLen, r.SealedLen = 4096, 4096, 4096 }), &plain, true},
		{"zero length", mod(p, func(r *RecordHeader) { r.PlainLen, r.StoredLen, r.SealedLen = 0, 0, 0 }), &plain, false},
		{"over block size", mod(p, func(r *RecordHeader) { r.PlainLen, r.StoredLen, r.SealedLen = 4097, 4097, 4097 }), &plain, false},
		{"compression 2", mod(z, func(r *RecordHeader) { r.Compression = 2 }), &plain, false},
		{"stored zero", mod(z, func(r *RecordHeader) { r.StoredLen, r.SealedLen = 0, 0 }), &plain, false},
		{"stored > plain", mod(z, func(r *RecordHeader) { r.StoredLen, r.SealedLen = 101, 101 }), &plain, false},
		{"uncompressed stored ≠ plain", mod(p, func(r *RecordHeader) { r.StoredLen, r.SealedLen = 99, 99 }), &plain, false},
		{"plain with tag", mod(p, func(r *RecordHeader) { r.SealedLen = 116 }), &plain, false},
		{"plain with key", mod(p, func(r *RecordHeader) { r.KeyID = id }), &plain, false},
		{"plain with nonce", mod(p, func(r *RecordHeader) { r.Nonce[11] = 1 }), &plain, false},
		{"sealed without tag", mod(e, func(r *RecordHeader) { r.SealedLen = 100 }), &enc, false},
		{"sealed, unlisted key", mod(e, func(r *RecordHeader) { r.KeyID = keys.KeyID{1} }), &enc, false},
		{"sealed, zero key", mod(e, func(r *RecordHeader) { r.KeyID = keys.KeyID{} }), &enc, false},
	} {
		if err := c.rh.Check(c.h); (err == nil) != c.ok {
			t.Errorf("%s: Check = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

func TestFooterRoundTrip(t *testing.T) {
	f := &Footer{RecordsOffset: 1000, RecordCount: 3, BlockMapOffset: 5000, BlockMapLen: 188, CatalogOffset: 5188, CatalogLen: 300,
		PlainBytes: 12, SealedBytes: 60}
	f.Hash = sha256.Sum256([]byte("x"))
	b := f.marshal()
	if len(b) != FooterSize || string(b[:8]) != "FERRYFTR" || string(b[120:]) != "FERRYEND" {
		t.Fatalf("footer %x", b)
	}
	for i, v := range []int64{1000, 3, 5000, 188, 5188, 300, 12, 60} {
		if got := int64(binary.LittleEndian.Uint64(b[8+8*i:])); got != v {
			t.Errorf("field %d at %d = %d, want %d", i, 8+8*i, got, v)
		}
	}
	if !bytes.Equal(b[72:104], f.Hash[:]) || !bytes.Equal(b[104:116], make([]byte, 12)) ||
		binary.LittleEndian.Uint32(b[116:]) != crc32c(b[:116]) {
		t.Error("hash, reserved or checksum misplaced")
	}
	got, err := parseFooter("f", 5488, b)
	if err != nil {
		t.Fatal(err)
	}
	if *got != *f {
		t.Errorf("got %+v", got)
	}
	refix := func(b []byte) []byte {
		binary.LittleEndian.PutUint32(b[116:], crc32c(b[:116]))
		return b
	}
	put := func(i int, v int64) []byte {
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint64(c[8+8*i:], uint64(v))
		return refix(c)
	}
	for name, c := range map[string]struct {
		b   []byte
		off int64
	}{
		"end magic":          {func() []byte { c := bytes.Clone(b); c[127] = 0; return c }(), 5488 + 120},
		"checksum":           {func() []byte { c := bytes.Clone(b); c[116] ^= 1; return c }(), 5488 + 116},
		"footer magic":       {func() []byte { c := bytes.Clone(b); c[0] = 0; return refix(c) }(), 5488},
		"reserved":           {func() []byte { c := bytes.Clone(b); c[110] = 1; return refix(c) }(), 5488 + 104},
		"negative records":   {put(0, -1), 5488},
		"map before records": {put(2, 999), 5488},
		"map length < 8":     {put(3, 7), 5488},
		"catalog not after":  {put(4, 5189), 5488},
		"negative catalog":   {put(5, -1), 5488},
		"catalog short":      {put(5, 299), 5488},
	} {
		_, err := parseFooter("f", 5488, c.b)
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Region != RegionFooter || ce.Offset != c.off {
			t.Errorf("%s: %v, want footer error at %d", name, err, c.off)
		}
	}
}

func TestBlockMap(t *testing.T) {
	entries := []MapEntry{
		{Object: 1, Block: 0, Offset: 100, Length: 80, Checksum: Checksum{1}},
		{Object: 1, Block: 1, Offset: 180, Length: 65},
		{Object: 0, Block: 0, Offset: 245, Length: 64 + 4096 + 16},
	}
	b := marshalBlockMap(entries)
	if len(b) != 8+3*60 || binary.LittleEndian.Uint64(b) != 3 {
		t.Fatalf("block map is %d bytes", len(b))
	}
	if binary.LittleEndian.Uint64(b[8+60+16:]) != 180 || binary.LittleEndian.Uint32(b[8+24:]) != 80 || b[8+28] != 1 {
		t.Error("entry layout differs from docs/format.md")
	}
	end := int64(245 + 64 + 4096 + 16)
	got, err := parseBlockMap("m", 9000, b, 100, end, maxRecordLen(4096))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, entries) {
		t.Errorf("got %+v", got)
	}
	empty, err := parseBlockMap("m", 9000, marshalBlockMap(nil), 100, 100, 1000)
	if err != nil || len(empty) != 0 {
		t.Errorf("empty map: %v %v", empty, err)
	}
	mod := func(f func([]MapEntry)) []byte {
		c := append([]MapEntry(nil), entries...)
		f(c)
		return marshalBlockMap(c)
	}
	for name, c := range map[string]struct {
		b   []byte
		off int64
	}{
		"short":        {b[:7], 9000},
		"count large":  {func() []byte { c := bytes.Clone(b); c[0] = 4; return c }(), 9000},
		"count huge":   {func() []byte { c := bytes.Clone(b); binary.LittleEndian.PutUint64(c, 1<<62); return c }(), 9000},
		"trailing":     {append(bytes.Clone(b), 0), 9000},
		"gap":          {mod(func(e []MapEntry) { e[1].Offset++ }), 9000 + 8 + 60},
		"first offset": {mod(func(e []MapEntry) { e[0].Offset = 0 }), 9008},
		"header only":  {mod(func(e []MapEntry) { e[0].Length = 64 }), 9008},
		"over max":     {mod(func(e []MapEntry) { e[2].Length++ }), 9008 + 120},
		"duplicate":    {mod(func(e []MapEntry) { e[1].Block = 0 }), 9008 + 60},
		"short of end": {mod(func(e []MapEntry) { e[2].Length-- }), 9000},
	} {
		_, err := parseBlockMap("m", 9000, c.b, 100, end, maxRecordLen(4096))
		var ce *CorruptError
		if !errors.As(err, &ce) || ce.Region != RegionBlockMap || ce.Offset != c.off {
			t.Errorf("%s: %v, want block map error at %d", name, err, c.off)
		}
	}
}
