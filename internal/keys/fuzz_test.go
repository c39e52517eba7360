package keys

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the committed fuzz seed corpus in testdata/fuzz")

// passwordEntrySeeds are valid encodings and hostile lengths and parameters.
func passwordEntrySeeds() map[string][]byte {
	e := &PasswordEntry{Params: TestKDF, Hint: "correct horse"}
	for i := range e.Salt {
		e.Salt[i] = byte(i)
	}
	for i := range e.Wrapped {
		e.Wrapped[i] = byte(0x80 + i)
	}
	valid := e.Marshal()
	set := func(off int, v uint32, size int) []byte {
		b := bytes.Clone(valid)
		switch size {
		case 2:
			binary.LittleEndian.PutUint16(b[off:], uint16(v))
		case 4:
			binary.LittleEndian.PutUint32(b[off:], v)
		}
		return b
	}
	noHint := *e
	noHint.Hint = ""
	def := *e
	def.Params = DefaultKDF
	maxHint := *e
	maxHint.Hint = strings.Repeat("h", maxHintLength)
	return map[string][]byte{
		"valid":             valid,
		"valid-no-hint":     noHint.Marshal(),
		"valid-default-kdf": def.Marshal(),
		"valid-max-hint":    maxHint.Marshal(),
		"empty":             {},
		"fixed-minus-one":   valid[:passwordEntryFixed-1],
		"hint-len-ffff":     set(85, 0xffff, 2),
		"memory-ffffffff":   set(4, 0xffffffff, 4),
		"memory-max":        set(4, maxKDFMemory, 4),
		"time-ffffffff":     set(0, 0xffffffff, 4),
		"time-zero":         set(0, 0, 4),
	}
}

// FuzzParsePasswordEntry checks that parsing never panics, allocates in
// proportion to its input, and that whatever parses marshals back to the
// same bytes (the encoding has one form).
// Its seeds are the committed files in testdata/fuzz/FuzzParsePasswordEntry.
func FuzzParsePasswordEntry(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		var e *PasswordEntry
		var err error
		alloc := allocated(func() { e, err = ParsePasswordEntry(b) })
		if limit := uint64(4*len(b) + 4096); alloc > limit {
			t.Fatalf("parsing %d bytes allocated %d", len(b), alloc)
		}
		if err != nil {
			return
		}
		if err := e.Params.Validate(); err != nil {
			t.Fatalf("parsed invalid parameters: %v", err)
		}
		if got := e.Marshal(); !bytes.Equal(got, b) {
			t.Fatalf("parse then marshal:\n got %x\nwant %x", got, b)
		}
	})
}

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

// TestWriteFuzzCorpus writes the seed corpus that go test runs for
// FuzzParsePasswordEntry. Run with -update after changing the seeds.
func TestWriteFuzzCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzParsePasswordEntry")
	for name, b := range passwordEntrySeeds() {
		writeCorpusFile(t, filepath.Join(dir, name), b)
	}
}

// writeCorpusFile writes or checks one file in the "go test fuzz v1" format.
func writeCorpusFile(t *testing.T, path string, b []byte) {
	t.Helper()
	want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -run TestWriteFuzzCorpus -update)", err)
	}
	if string(got) != want {
		t.Errorf("%s is stale (run go test -run TestWriteFuzzCorpus -update)", path)
	}
}
