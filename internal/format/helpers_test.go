package format

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/keys"
)

// A fileSpec holds every input of a backup file, so that building it is
// deterministic: same spec, same bytes.
type fileSpec struct {
	header      Header
	session     *keys.Session     // nil: unencrypted
	password    *keys.PasswordKey // wraps session into the key table
	wrapNonce   []byte            // randomness for the wrap; nil: crypto/rand
	noncePrefix uint32            // records and catalog chunks
	catalog     Catalog
	contents    map[uint64][]byte // object id -> data of file and device objects
}

// build writes the file: one record per block of every object with data,
// in catalog order, then the catalog.
func (s *fileSpec) build(t testing.TB) []byte {
	t.Helper()
	h := s.header
	var kt KeyTable
	if s.session != nil {
		h.Encryption = EncryptionAES256GCM
		h.Secrets = []keys.KeyID{s.session.ID()}
		rnd := io.Reader(nil)
		if s.wrapNonce != nil {
			rnd = bytes.NewReader(s.wrapNonce)
		}
		var pe *keys.PasswordEntry
		var err error
		if rnd != nil {
			pe, err = s.password.WrapFrom(rnd, s.session)
		} else {
			pe, err = s.password.Wrap(s.session)
		}
		if err != nil {
			t.Fatal(err)
		}
		kt.Entries = []KeyEntry{{Secret: s.session.ID(), Type: EntryPassword, Data: pe.Marshal()}}
	}
	var out bytes.Buffer
	w, err := NewWriter(&out, h, kt)
	if err != nil {
		t.Fatal(err)
	}
	var counter uint64
	for i := range s.catalog.Objects {
		o := &s.catalog.Objects[i]
		if !o.HasData() {
			continue
		}
		data := s.contents[o.ID]
		for b := range Blocks(o.Size, h.BlockSize) {
			block := data[b*uint64(h.BlockSize) : b*uint64(h.BlockSize)+uint64(BlockLen(o.Size, h.BlockSize, b))]
			rh := RecordHeader{Object: o.ID, Block: b, PlainLen: uint32(len(block)), StoredLen: uint32(len(block)), SealedLen: uint32(len(block))}
			payload := block
			if s.session != nil {
				rh.KeyID = s.session.ID()
				rh.Nonce = Nonce(s.noncePrefix, counter)
				counter++
				rh.SealedLen += TagSize
				payload = s.session.Data().Seal(nil, rh.Nonce[:], block, RecordAAD(nil, h.BackupID, &rh))
			}
			if err := w.WriteRecord(&rh, payload, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	var sealed []byte
	if s.session != nil {
		sealed = SealCatalog(s.catalog.Marshal(), w.Header(), s.session.ID(), s.session.Meta(), s.noncePrefix)
	} else {
		var id keys.KeyID
		sealed = SealCatalog(s.catalog.Marshal(), w.Header(), id, nil, 0)
	}
	if _, err := w.Finish(sealed); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// newCatalog makes a catalog for contents, filling in sizes and digests.
func newCatalog(blockSize uint32, objects []Object, contents map[uint64][]byte) Catalog {
	c := Catalog{SourceKind: SourceDir, SourcePath: "/srv/data", Objects: objects}
	for i := range c.Objects {
		o := &c.Objects[i]
		if !o.HasData() {
			continue
		}
		data := contents[o.ID]
		o.Size = uint64(len(data))
		o.Digests = nil
		for b := range Blocks(o.Size, blockSize) {
			start := b * uint64(blockSize)
			o.Digests = append(o.Digests, sha256.Sum256(data[start:start+uint64(BlockLen(o.Size, blockSize, b))]))
		}
	}
	return c
}

// errAuth marks a failure that is not a format error: a payload or catalog
// that does not authenticate, or a block whose digest is wrong.
var errAuth = errors.New("authentication failed")

// restored is what a full read of a file gives.
type restored struct {
	file    *File
	catalog *Catalog
	blocks  map[BlockKey][]byte
}

// readAll does what a restore of the point a full file holds does: open
// the file, unwrap the session secret with the password, read and open
// every record, open the catalog, and check every block's digest.
func readAll(data []byte, name string, passwords *keys.PasswordCache) (*restored, error) {
	f, err := Open(bytes.NewReader(data), int64(len(data)), name)
	if err != nil {
		return nil, err
	}
	var session *keys.Session
	if f.Header.Encrypted() {
		id, ok := CatalogKeyID(f.CatalogSection())
		if !ok {
			return nil, errors.New("no catalog key id")
		}
		for _, e := range f.KeyTable.For(id) {
			if e.Type != EntryPassword {
				continue
			}
			pe, err := keys.ParsePasswordEntry(e.Data)
			if err != nil {
				return nil, fmt.Errorf("key table: %w", err)
			}
			pk, err := passwords.Key(pe)
			if err != nil {
				return nil, fmt.Errorf("key table: %w", err)
			}
			if session, err = pk.Unwrap(pe, id); err != nil {
				return nil, fmt.Errorf("unwrap: %w", err)
			}
		}
		if session == nil {
			return nil, fmt.Errorf("no password entry for key %x", id[:4])
		}
	}
	r := &restored{file: f, blocks: map[BlockKey][]byte{}}
	var buf []byte
	for i := range f.Entries {
		e := &f.Entries[i]
		rh, payload, err := f.ReadRecord(e, buf)
		if err != nil {
			return nil, err
		}
		var plain []byte
		if f.Header.Encrypted() {
			if !session.Matches(rh.KeyID) {
				return nil, fmt.Errorf("record %s: unknown key", e)
			}
			if plain, err = session.Data().Open(nil, rh.Nonce[:], payload, RecordAAD(nil, f.Header.BackupID, &rh)); err != nil {
				return nil, fmt.Errorf("record %s: %w", e, errAuth)
			}
		} else {
			plain = bytes.Clone(payload)
		}
		if rh.Compression != CompressionNone {
			return nil, fmt.Errorf("record %s: compressed records are not expected here", e)
		}
		if len(plain) != int(rh.PlainLen) {
			return nil, fmt.Errorf("record %s: %d bytes, header says %d: %w", e, len(plain), rh.PlainLen, errAuth)
		}
		r.blocks[e.Key()] = plain
	}
	if session != nil {
		r.catalog, err = f.Catalog(session.Meta())
	} else {
		r.catalog, err = f.Catalog(nil)
	}
	if err != nil {
		if errors.Is(err, ErrCorrupt) {
			return nil, err
		}
		return nil, fmt.Errorf("catalog: %v: %w", err, errAuth)
	}
	for _, o := range r.catalog.Objects {
		for b, want := range o.Digests {
			block, ok := r.blocks[BlockKey{o.ID, uint64(b)}]
			if !ok {
				return nil, fmt.Errorf("%s block %d: no record: %w", o.Path, b, errAuth)
			}
			if len(block) != int(BlockLen(o.Size, f.Header.BlockSize, uint64(b))) || sha256.Sum256(block) != want {
				return nil, fmt.Errorf("%s block %d: digest mismatch: %w", o.Path, b, errAuth)
			}
		}
	}
	return r, nil
}

func testID(b byte) ID {
	var id ID
	for i := range id {
		id[i] = b + byte(i)
	}
	return id
}

func testHeader() Header {
	return Header{
		FileID:     testID(0x10),
		BackupID:   testID(0x20),
		ChainID:    testID(0x30),
		Sequence:   1,
		Kind:       KindFull,
		BlockSize:  MinBlockSize,
		Created:    time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC),
		BackupName: "nightly",
	}
}

func testSession(t testing.TB, seed byte) *keys.Session {
	t.Helper()
	secret := make([]byte, keys.SecretSize)
	for i := range secret {
		secret[i] = seed + byte(i)
	}
	s, err := keys.SessionFromSecret(secret)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var testPassword = []byte("correct horse battery staple")

func testPasswordKey(t testing.TB) *keys.PasswordKey {
	t.Helper()
	k, err := keys.DerivePasswordKey(testPassword, keys.TestKDF, [16]byte{9, 9, 9}, "xkcd 936")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// smallSpec is a small file: a directory, a two-block file, an empty file
// and a symlink. encrypted chooses a password-wrapped session.
func smallSpec(t testing.TB, encrypted bool) *fileSpec {
	t.Helper()
	contents := map[uint64][]byte{
		2: append(bytes.Repeat([]byte("0123456789abcdef"), MinBlockSize/16), "tail of the file"...),
		3: nil,
	}
	s := &fileSpec{
		header: testHeader(),
		catalog: newCatalog(MinBlockSize, []Object{
			{ID: 1, Type: ObjectDir, Mode: 0o755, Path: "."},
			{ID: 2, Type: ObjectFile, Mode: 0o644, Path: "a.txt", MTime: 1700000000e9},
			{ID: 3, Type: ObjectFile, Mode: 0o600, Path: "empty"},
			{ID: 4, Type: ObjectSymlink, Mode: 0o777, Path: "link", Target: "a.txt"},
		}, contents),
		contents:    contents,
		noncePrefix: 7,
	}
	if encrypted {
		s.session = testSession(t, 0x40)
		s.password = testPasswordKey(t)
		s.wrapNonce = make([]byte, 12)
	}
	return s
}

// tinySpec is the smallest interesting file: one short block, so that a
// test can flip every byte of it quickly.
func tinySpec(t testing.TB, encrypted bool) *fileSpec {
	t.Helper()
	contents := map[uint64][]byte{5: []byte("hello, ferry"), 6: []byte("second block!")}
	s := &fileSpec{
		header: testHeader(),
		catalog: newCatalog(MinBlockSize, []Object{
			{ID: 5, Type: ObjectFile, Mode: 0o644, Path: "hello"},
			{ID: 6, Type: ObjectFile, Mode: 0o644, Path: "world"},
		}, contents),
		contents: contents,
	}
	if encrypted {
		s.session = testSession(t, 0x40)
		s.password = testPasswordKey(t)
		s.wrapNonce = make([]byte, 12)
	}
	return s
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)) }

// sameCatalog compares catalogs by their encoding, which has one form, so
// that nil and empty slices compare equal.
func sameCatalog(a, b *Catalog) bool { return bytes.Equal(a.Marshal(), b.Marshal()) }

// sameHeader compares headers by their encoding.
func sameHeader(a, b *Header) bool {
	x, err1 := MarshalHeader(a)
	y, err2 := MarshalHeader(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y) && a.Created.Equal(b.Created)
}
