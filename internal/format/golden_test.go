package format

import (
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/keys"
)

var update = flag.Bool("update", false, "rewrite testdata/golden and the fuzz seed corpus in testdata/fuzz")

// The fixed inputs of the golden files. Changing any of them changes the
// files; testdata/golden/README.md is generated from them.
var (
	goldenPassword = "correct horse battery staple"
	goldenHint     = "xkcd 936"
	// Argon2id t=2, m=256 KiB, p=2: cheap, like keys.TestKDF, but spelled
	// out so that a change to TestKDF does not change the vectors.
	goldenKDF         = keys.KDFParams{Time: 2, Memory: 256, Threads: 2}
	goldenSalt        = seq(0xa0, 16)
	goldenWrapNonce   = seq(0xb0, 12)
	goldenSecret      = seq(0x00, 32)
	goldenNoncePrefix = uint32(1) // records: Nonce(1, 0), Nonce(1, 1), ...; catalog chunk i: Nonce(1, i)
	goldenHeader      = Header{
		FileID:      ID(seq(0x10, 16)),
		BackupID:    ID(seq(0x20, 16)),
		ChainID:     ID(seq(0x30, 16)),
		Sequence:    1,
		Kind:        KindFull,
		BlockSize:   MinBlockSize,
		Created:     time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		BackupName:  "golden",
		KeyTableCap: 1024,
	}
)

func seq(start byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = start + byte(i)
	}
	return b
}

func goldenContents() map[uint64][]byte {
	data := make([]byte, MinBlockSize+10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return map[uint64][]byte{2: []byte("hello, ferry\n"), 3: data}
}

func goldenSpec(t testing.TB, encrypted bool) *fileSpec {
	t.Helper()
	contents := goldenContents()
	s := &fileSpec{
		header: goldenHeader,
		catalog: newCatalog(MinBlockSize, []Object{
			{ID: 1, Type: ObjectDir, Mode: 0o755, UID: 1000, GID: 1000, MTime: 1735787045000000000, Path: "."},
			{ID: 2, Type: ObjectFile, Mode: 0o644, UID: 1000, GID: 1000, MTime: 1735787045000000001, Path: "hello.txt"},
			{ID: 3, Type: ObjectFile, Mode: 0o600, UID: 0, GID: 0, MTime: 1735787045000000002, Path: "data.bin"},
			{ID: 4, Type: ObjectSymlink, Mode: 0o777, UID: 1000, GID: 1000, MTime: 1735787045000000003, Path: "link", Target: "hello.txt"},
		}, contents),
		contents:    contents,
		noncePrefix: goldenNoncePrefix,
	}
	if !encrypted {
		s.header.KeyTableCap = 512
		return s
	}
	var err error
	if s.session, err = keys.SessionFromSecret(goldenSecret); err != nil {
		t.Fatal(err)
	}
	if s.password, err = keys.DerivePasswordKey([]byte(goldenPassword), goldenKDF, [16]byte(goldenSalt), goldenHint); err != nil {
		t.Fatal(err)
	}
	s.wrapNonce = goldenWrapNonce
	return s
}

var goldenFiles = []struct {
	name      string
	encrypted bool
}{
	{"plain.ferry", false},
	{"encrypted.ferry", true},
}

// TestGoldenBuild rebuilds the golden files from their fixed inputs and
// compares them byte for byte. Run with -update to rewrite them.
func TestGoldenBuild(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	var readme strings.Builder
	readme.WriteString(goldenReadmeHead)
	for _, g := range goldenFiles {
		got := goldenSpec(t, g.encrypted).build(t)
		path := filepath.Join(dir, g.name)
		readme.WriteString(describeGolden(t, g.name, got))
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -run TestGoldenBuild -update)", err)
		}
		if !bytes.Equal(got, want) {
			i := 0
			for i < min(len(got), len(want)) && got[i] == want[i] {
				i++
			}
			t.Errorf("%s: built %d bytes, golden file has %d; first difference at offset %d", g.name, len(got), len(want), i)
		}
	}
	path := filepath.Join(dir, "README.md")
	if *update {
		if err := os.WriteFile(path, []byte(readme.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if want, err := os.ReadFile(path); err != nil || string(want) != readme.String() {
		t.Errorf("%s is stale or missing (%v); run go test -run TestGoldenBuild -update", path, err)
	}
}

// TestGoldenOpen reads the committed files the way a restore does, with
// the password alone, and checks every block and the catalog against the
// fixed inputs. It does not use the builder, so it also catches a reader
// change that the builder would follow.
func TestGoldenOpen(t *testing.T) {
	contents := goldenContents()
	for _, g := range goldenFiles {
		data, err := os.ReadFile(filepath.Join("testdata", "golden", g.name))
		if err != nil {
			t.Fatal(err)
		}
		r, err := readAll(data, g.name, keys.NewPasswordCache([]byte(goldenPassword)))
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		h := r.file.Header
		want := goldenHeader
		if g.encrypted {
			want.Encryption = EncryptionAES256GCM
			s, err := keys.SessionFromSecret(goldenSecret)
			if err != nil {
				t.Fatal(err)
			}
			want.Secrets = []keys.KeyID{s.ID()}
			entries := r.file.KeyTable.For(s.ID())
			if len(entries) != 1 || entries[0].Type != EntryPassword {
				t.Fatalf("%s: key table %+v", g.name, r.file.KeyTable)
			}
			pe, err := keys.ParsePasswordEntry(entries[0].Data)
			if err != nil {
				t.Fatal(err)
			}
			if pe.Params != goldenKDF || pe.Salt != [16]byte(goldenSalt) || pe.Hint != goldenHint || !bytes.Equal(pe.Nonce[:], goldenWrapNonce) {
				t.Errorf("%s: password entry %+v", g.name, pe)
			}
			pk, err := keys.DerivePasswordKey([]byte(goldenPassword), pe.Params, pe.Salt, pe.Hint)
			if err != nil {
				t.Fatal(err)
			}
			got, err := pk.Unwrap(pe, s.ID())
			if err != nil {
				t.Fatalf("%s: unwrap: %v", g.name, err)
			}
			if !bytes.Equal(got.Secret(), goldenSecret) {
				t.Errorf("%s: unwrapped secret %x", g.name, got.Secret())
			}
			if _, err := readAll(data, g.name, keys.NewPasswordCache([]byte("Tr0ub4dor&3"))); err == nil {
				t.Errorf("%s: opens with a wrong password", g.name)
			}
		} else {
			want.KeyTableCap = 512
		}
		if !sameHeader(h, &want) {
			t.Errorf("%s: header %+v, want %+v", g.name, h, want)
		}
		// Every block, in order, against the inputs.
		wantBlocks := map[BlockKey][]byte{
			{2, 0}: contents[2],
			{3, 0}: contents[3][:MinBlockSize],
			{3, 1}: contents[3][MinBlockSize:],
		}
		if len(r.blocks) != len(wantBlocks) {
			t.Errorf("%s: %d blocks, want %d", g.name, len(r.blocks), len(wantBlocks))
		}
		for k, b := range wantBlocks {
			if !bytes.Equal(r.blocks[k], b) {
				t.Errorf("%s: block %v differs", g.name, k)
			}
		}
		cat := r.catalog
		if cat.SourceKind != SourceDir || cat.SourcePath != "/srv/data" || len(cat.Objects) != 4 {
			t.Fatalf("%s: catalog %+v", g.name, cat)
		}
		for i, want := range []struct {
			path, target string
			size         uint64
			digests      int
		}{{".", "", 0, 0}, {"hello.txt", "", 13, 1}, {"data.bin", "", MinBlockSize + 10, 2}, {"link", "hello.txt", 0, 0}} {
			o := cat.Objects[i]
			if o.Path != want.path || o.Target != want.target || o.Size != want.size || len(o.Digests) != want.digests {
				t.Errorf("%s: object %d: %+v", g.name, i, o)
			}
		}
		if cat.Objects[1].Digests[0] != sha256.Sum256([]byte("hello, ferry\n")) {
			t.Errorf("%s: digest of hello.txt", g.name)
		}
	}
}

const goldenReadmeHead = `# Golden backup files, format v1

Generated by ` + "`go test ./internal/format -run TestGoldenBuild -update`" + ` from the fixed
inputs in golden_test.go; TestGoldenBuild rebuilds them and compares byte for byte,
TestGoldenOpen reads them back with the password alone. Do not edit by hand.

Inputs common to both files:

- file id ` + "`101112131415161718191a1b1c1d1e1f`" + `, backup id ` + "`202122232425262728292a2b2c2d2e2f`" + `,
  chain id ` + "`303132333435363738393a3b3c3d3e3f`" + `, no parent, sequence 1, kind full,
  block size 4096, created 2025-01-02T03:04:05Z, backup name "golden".
- catalog: source kind dir, source path "/srv/data", objects
  1 "." (dir 0755), 2 "hello.txt" (file 0644, "hello, ferry\n", 13 bytes, 1 block),
  3 "data.bin" (file 0600, 4106 bytes, byte i = (7*i) mod 256, 2 blocks),
  4 "link" (symlink 0777 -> "hello.txt"). Records in catalog order, uncompressed.

encrypted.ferry also:

- password "correct horse battery staple", hint "xkcd 936";
  Argon2id t=2, m=256 KiB, p=2, salt a0a1...af (16 bytes); wrap nonce b0b1...bb (12 bytes).
- session secret 000102...1f (32 bytes); key table capacity 1024 per slot, generation 1.
- record nonces: prefix 1, counter 0, 1, 2 (Nonce(1, n)); catalog chunk 0 nonce Nonce(1, 0)
  (records use the data key and the catalog the metakey, so the nonces do not collide).

plain.ferry: no encryption, empty key table, capacity 512 per slot.

`

// describeGolden lists the sections of a golden file for the README.
func describeGolden(t testing.TB, name string, data []byte) string {
	t.Helper()
	f, err := Open(bytes.NewReader(data), int64(len(data)), name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "## %s\n\n%d bytes, SHA-256 `%x`.\n\n", name, len(data), sha256.Sum256(data))
	b.WriteString("| offset | length | section |\n| ---: | ---: | --- |\n")
	row := func(off, n int64, what string) { fmt.Fprintf(&b, "| %d | %d | %s |\n", off, n, what) }
	row(0, int64(len(f.HeaderBytes)), "header (preamble, body, CRC-32C)")
	c := int64(f.Header.KeyTableCap)
	row(f.KeyTableOffset, c, fmt.Sprintf("key table slot A (generation %d, %d entries)", f.KeyTable.Generation, len(f.KeyTable.Entries)))
	row(f.KeyTableOffset+c, c, "key table slot B (empty: all zero)")
	for _, e := range f.Entries {
		row(e.Offset, int64(e.Length), fmt.Sprintf("record: object %d block %d (64-byte header + %d-byte payload)", e.Object, e.Block, e.Length-RecordHeaderSize))
	}
	row(f.Footer.BlockMapOffset, f.Footer.BlockMapLen, fmt.Sprintf("block map (%d entries)", len(f.Entries)))
	row(f.Footer.CatalogOffset, f.Footer.CatalogLen, "catalog section")
	row(f.Size-FooterSize, FooterSize, "footer")
	fmt.Fprintf(&b, "\nFooter hash `%x`.\n\n", f.Footer.Hash)
	return b.String()
}
