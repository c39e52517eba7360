package wancache

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		plain      []byte
		compressed bool
	}{
		{"raw", randomBlock(1, 64<<10), false},
		{"raw empty", []byte{}, false},
		{"zstd", textBlock(2, 1<<20), true},
		{"zstd empty", []byte{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openT(t, t.TempDir(), DefaultMaxBytes, testKey(1))
			d := sha256.Sum256(tt.plain)
			stored := tt.plain
			if tt.compressed {
				stored = compress(tt.plain)
				if len(tt.plain) > 0 && len(stored) >= len(tt.plain) {
					t.Fatalf("test block did not compress: %d -> %d", len(tt.plain), len(stored))
				}
			}
			if err := c.Put(d, stored, tt.compressed, len(tt.plain)); err != nil {
				t.Fatal(err)
			}
			data, compressed, rawLen, err := c.Get(d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, stored) || compressed != tt.compressed || rawLen != len(tt.plain) {
				t.Fatalf("Get = %d bytes, %v, %d; want %d bytes, %v, %d",
					len(data), compressed, rawLen, len(stored), tt.compressed, len(tt.plain))
			}
			plain, err := c.GetPlain(d)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(plain, tt.plain) {
				t.Fatal("GetPlain returned different plaintext")
			}
			if s := c.Stats(); s.Puts != 1 || s.Hits != 2 || s.Entries != 1 || s.Bytes != entrySize(len(stored)) {
				t.Fatalf("stats %+v, want 1 put, 2 hits, 1 entry of %d bytes", s, entrySize(len(stored)))
			}
		})
	}
}

func TestMiss(t *testing.T) {
	c := openT(t, t.TempDir(), DefaultMaxBytes, testKey(1))
	d := sha256.Sum256([]byte("absent"))
	if _, _, _, err := c.Get(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get absent: %v, want ErrNotFound", err)
	}
	if _, err := c.GetPlain(d); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetPlain absent: %v, want ErrNotFound", err)
	}
	if s := c.Stats(); s.Misses != 2 || s.Hits != 0 {
		t.Fatalf("stats %+v, want 2 misses", s)
	}
}

func TestHasHasMany(t *testing.T) {
	c := openT(t, t.TempDir(), DefaultMaxBytes, testKey(1))
	a := putRaw(t, c, randomBlock(1, 100))
	b := putRaw(t, c, randomBlock(2, 100))
	absent := sha256.Sum256([]byte("absent"))
	if !c.Has(a) || !c.Has(b) || c.Has(absent) {
		t.Fatal("Has wrong")
	}
	got := c.HasMany([][32]byte{absent, a, absent, b})
	if want := []bool{false, true, false, true}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("HasMany = %v, want %v", got, want)
	}
	if got := c.HasMany(nil); len(got) != 0 {
		t.Fatalf("HasMany(nil) = %v", got)
	}
	if !c.Touch(a) || c.Touch(absent) {
		t.Fatal("Touch wrong")
	}
}

// Has must not protect an entry from eviction; HasMany, Touch and Get must.
func TestUseCounting(t *testing.T) {
	dir := t.TempDir()
	const n = 1000
	c := openT(t, dir, 3*entrySize(n), testKey(1))
	var d [8][32]byte
	put := func(i int) { d[i] = putRaw(t, c, randomBlock(uint64(i), n)) }
	put(0)
	put(1)
	put(2)
	c.Has(d[0])
	put(3) // evicts 0: Has did not count
	if c.Has(d[0]) || !c.Has(d[1]) {
		t.Fatal("Has counted as use")
	}
	c.HasMany([][32]byte{d[1]})
	put(4) // evicts 2, not 1
	if !c.Has(d[1]) || c.Has(d[2]) {
		t.Fatal("HasMany did not count as use")
	}
	c.Touch(d[3])
	put(5) // evicts 1, not 3
	if !c.Has(d[3]) || c.Has(d[1]) {
		t.Fatal("Touch did not count as use")
	}
	if _, err := c.GetPlain(d[4]); err != nil {
		t.Fatal(err)
	}
	put(6) // evicts 3, not 4
	if !c.Has(d[4]) || c.Has(d[3]) {
		t.Fatal("Get did not count as use")
	}
	if err := c.Put(d[5], randomBlock(5, n), false, n); err != nil { // a Put of a held block is a use
		t.Fatal(err)
	}
	put(7) // evicts 4, not 5
	if !c.Has(d[5]) || c.Has(d[4]) {
		t.Fatal("repeated Put did not count as use")
	}
}

func TestEvictionLRU(t *testing.T) {
	dir := t.TempDir()
	const n = 1000
	maxBytes := 4*entrySize(n) + 10
	c := openT(t, dir, maxBytes, testKey(1))
	var d [4][32]byte
	for i := range d {
		d[i] = putRaw(t, c, randomBlock(uint64(i), n))
	}
	if _, err := c.GetPlain(d[0]); err != nil {
		t.Fatal(err)
	}
	e := putRaw(t, c, randomBlock(100, n))
	if !c.Has(d[0]) || c.Has(d[1]) || !c.Has(d[2]) || !c.Has(d[3]) || !c.Has(e) {
		t.Fatal("wrong entry evicted: want the least recently used (1)")
	}
	if _, err := os.Stat(entryPath(dir, d[1])); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("evicted entry's file: %v", err)
	}
	// Many more puts of varying sizes: the bound holds and disk agrees.
	for i := range 50 {
		putRaw(t, c, randomBlock(uint64(200+i), 200+i*37))
		s := c.Stats()
		if s.Bytes > maxBytes {
			t.Fatalf("%d bytes stored, max %d", s.Bytes, maxBytes)
		}
	}
	s := c.Stats()
	files := entryFiles(t, dir)
	var onDisk int64
	for _, size := range files {
		onDisk += size
	}
	if onDisk != s.Bytes || int64(len(files)) != s.Entries || s.Evictions == 0 {
		t.Fatalf("stats %+v, on disk %d files, %d bytes", s, len(files), onDisk)
	}
}

func TestReopenKeepsEntriesAndOrder(t *testing.T) {
	dir := t.TempDir()
	const n = 1000
	maxBytes := 4 * entrySize(n)
	c := openT(t, dir, maxBytes, testKey(1))
	var d [8][32]byte
	for i := range 4 {
		d[i] = putRaw(t, c, randomBlock(uint64(i), n))
	}
	c.GetPlain(d[0])
	c.Touch(d[1]) // order, oldest first: 2 3 0 1
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if c.Has(d[0]) {
		t.Fatal("Has after Close")
	}
	if _, err := c.GetPlain(d[0]); !errors.Is(err, ErrClosed) {
		t.Fatalf("GetPlain after Close: %v", err)
	}

	c = openT(t, dir, maxBytes, testKey(1))
	for i := range 4 {
		plain, err := c.GetPlain(d[i])
		if err != nil || !bytes.Equal(plain, randomBlock(uint64(i), n)) {
			t.Fatalf("entry %d after reopen: %v", i, err)
		}
	}
	// The reads above were in order 0..3, so now 0 is oldest. Reopen
	// again to check that order too, with room for only two: 0 and 1 go.
	c.Close()
	c = openT(t, dir, 2*entrySize(n), testKey(1))
	if c.Has(d[0]) || c.Has(d[1]) || !c.Has(d[2]) || !c.Has(d[3]) {
		t.Fatal("shrinking at Open did not evict the two oldest")
	}
	c.Close()

	// And the order from before the first reopen: 2 3 0 1.
	dir = t.TempDir()
	c = openT(t, dir, maxBytes, testKey(1))
	for i := range 4 {
		d[i] = putRaw(t, c, randomBlock(uint64(i), n))
	}
	c.HasMany([][32]byte{d[0]})
	c.Touch(d[1])
	c.Close()
	c = openT(t, dir, maxBytes, testKey(1))
	for i, gone := range []int{2, 3, 0, 1} {
		d[4+i] = putRaw(t, c, randomBlock(uint64(10+i), n))
		if c.Has(d[gone]) {
			t.Fatalf("put %d: entry %d should have been evicted", i, gone)
		}
		for _, kept := range []int{2, 3, 0, 1}[i+1:] {
			if !c.Has(d[kept]) {
				t.Fatalf("put %d: entry %d evicted out of order", i, kept)
			}
		}
	}
}

func TestWrongKey(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	a := putRaw(t, c, randomBlock(1, 1000))
	b := putRaw(t, c, randomBlock(2, 1000))
	c.Close()

	c = openT(t, dir, DefaultMaxBytes, testKey(2))
	data, _, _, err := c.Get(a)
	if !errors.Is(err, ErrCorrupt) || data != nil {
		t.Fatalf("Get under wrong key = %d bytes, %v; want ErrCorrupt", len(data), err)
	}
	if c.Has(a) {
		t.Fatal("entry kept after failing")
	}
	if _, err := os.Stat(entryPath(dir, a)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed entry's file: %v", err)
	}
	if s := c.Stats(); s.Corrupt != 1 || s.Hits != 0 || s.Misses != 1 {
		t.Fatalf("stats %+v", s)
	}
	c.Close()

	c = openT(t, dir, DefaultMaxBytes, testKey(1))
	if plain, err := c.GetPlain(b); err != nil || !bytes.Equal(plain, randomBlock(2, 1000)) {
		t.Fatalf("unread entry under the right key: %v", err)
	}
}

// Every byte of an entry file is covered: flipping any one makes Get fail
// with ErrCorrupt, delete the entry and return no data.
func TestFlippedByte(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	for _, compressed := range []bool{false, true} {
		plain := textBlock(1, 300)
		stored := plain
		if compressed {
			stored = compress(plain)
		}
		d := sha256.Sum256(plain)
		size := entrySize(len(stored))
		for off := range size {
			if err := c.Put(d, stored, compressed, len(plain)); err != nil {
				t.Fatal(err)
			}
			p := entryPath(dir, d)
			file, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			file[off] ^= 0x10
			if err := os.WriteFile(p, file, 0o600); err != nil {
				t.Fatal(err)
			}
			data, _, _, err := c.Get(d)
			if !errors.Is(err, ErrCorrupt) || data != nil {
				t.Fatalf("compressed %v, byte %d flipped: Get = %d bytes, %v", compressed, off, len(data), err)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("%x", d)) {
				t.Fatalf("error does not name the digest: %v", err)
			}
			if c.Has(d) {
				t.Fatalf("byte %d flipped: entry kept", off)
			}
			if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("byte %d flipped: file kept: %v", off, err)
			}
		}
		if s := c.Stats(); s.Bytes != 0 || s.Entries != 0 {
			t.Fatalf("stats after dropping all: %+v", s)
		}
	}
}

func TestSwappedEntries(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	a := putRaw(t, c, randomBlock(1, 1000))
	b := putRaw(t, c, randomBlock(2, 1000))
	pa, pb := entryPath(dir, a), entryPath(dir, b)
	tmp := pa + ".swap"
	for _, step := range [][2]string{{pa, tmp}, {pb, pa}, {tmp, pb}} {
		if err := os.Rename(step[0], step[1]); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range [][32]byte{a, b} {
		// Authentication catches it, before the plaintext check would.
		plain, err := c.GetPlain(d)
		if !errors.Is(err, ErrCorrupt) || plain != nil || !strings.Contains(err.Error(), "authentication failed") {
			t.Fatalf("swapped entry: %d bytes, %v; want ErrCorrupt, authentication failed", len(plain), err)
		}
	}
	// Relabelling the stored form (raw as zstd) is caught too.
	d := putRaw(t, c, randomBlock(3, 1000))
	p := entryPath(dir, d)
	file, _ := os.ReadFile(p)
	file[4] |= flagZstd
	os.WriteFile(p, file, 0o600)
	if _, err := c.GetPlain(d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("relabelled entry: %v", err)
	}
}

// The digest check catches what authentication cannot: a caller that put
// data under the wrong digest, or a wrong rawLen.
func TestPlaintextChecked(t *testing.T) {
	c := openT(t, t.TempDir(), DefaultMaxBytes, testKey(1))
	plain := textBlock(1, 5000)
	wrong := sha256.Sum256([]byte("another block"))
	if err := c.Put(wrong, plain, false, len(plain)); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := c.Get(wrong); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("data under the wrong digest: %v", err)
	}
	d := sha256.Sum256(plain)
	for _, rawLen := range []int{len(plain) - 1, len(plain) + 1} {
		if err := c.Put(d, compress(plain), true, rawLen); err != nil {
			t.Fatal(err)
		}
		if _, _, _, err := c.Get(d); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("rawLen %d for %d bytes: %v", rawLen, len(plain), err)
		}
	}
	if err := c.Put(d, []byte("not zstd"), true, len(plain)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetPlain(d); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad zstd: %v", err)
	}
	if s := c.Stats(); s.Corrupt != 4 || s.Entries != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPutRejects(t *testing.T) {
	c := openT(t, t.TempDir(), 10_000, testKey(1))
	big := randomBlock(1, 20_000)
	if err := c.Put(sha256.Sum256(big), big, false, len(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("entry larger than the cache: %v", err)
	}
	huge := make([]byte, MaxBlockSize+1)
	if err := c.Put(sha256.Sum256(huge), []byte{1}, true, len(huge)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("rawLen over MaxBlockSize: %v", err)
	}
	small := []byte("abc")
	if err := c.Put(sha256.Sum256(small), small, false, 4); err == nil {
		t.Fatal("raw data with a different rawLen accepted")
	}
	if s := c.Stats(); s.Entries != 0 || s.Puts != 0 {
		t.Fatalf("stats %+v", s)
	}
	c.Close()
	if err := c.Put(sha256.Sum256(small), small, false, 3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close: %v", err)
	}
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, DefaultMaxBytes, make([]byte, 16)); err == nil {
		t.Fatal("16-byte key accepted")
	}
	if _, err := Open(dir, 0, testKey(1)); err == nil {
		t.Fatal("max 0 accepted")
	}
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	if _, err := Open(dir, DefaultMaxBytes, testKey(1)); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open of one directory: %v, want ErrLocked", err)
	}
	c.Close()
	openT(t, dir, DefaultMaxBytes, testKey(1))
}

// What an interrupted write or a power loss leaves is cleaned up at Open.
func TestOpenCleansUp(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	var d [5][32]byte
	for i := range d {
		d[i] = putRaw(t, c, randomBlock(uint64(i), 1000))
	}
	c.Close()

	mustWrite := func(p string, b []byte) {
		t.Helper()
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(filepath.Join(dir, "tmp", "0011223344556677-123456"), randomBlock(9, 700)) // a write in progress
	if err := os.Truncate(entryPath(dir, d[1]), entrySize(1000)/2); err != nil {         // torn entry
		t.Fatal(err)
	}
	if err := os.Truncate(entryPath(dir, d[2]), 7); err != nil { // shorter than a header
		t.Fatal(err)
	}
	f, _ := os.OpenFile(entryPath(dir, d[3]), os.O_APPEND|os.O_WRONLY, 0)
	f.Write([]byte("trailing"))
	f.Close()
	// A whole-size entry full of zeros, as some file systems leave after a
	// power loss, passes the length check and must be caught on read.
	file, _ := os.ReadFile(entryPath(dir, d[4]))
	clear(file[headerLen:])
	mustWrite(entryPath(dir, d[4]), file)
	foreign := filepath.Join(dir, "ab", "README")
	mustWrite(foreign, []byte("not an entry"))

	c = openT(t, dir, DefaultMaxBytes, testKey(1))
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("tmp not cleared: %v", left)
	}
	for _, i := range []int{1, 2, 3} {
		if c.Has(d[i]) {
			t.Fatalf("damaged entry %d indexed", i)
		}
		if _, err := os.Stat(entryPath(dir, d[i])); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("damaged entry %d kept: %v", i, err)
		}
	}
	if plain, err := c.GetPlain(d[0]); err != nil || !bytes.Equal(plain, randomBlock(0, 1000)) {
		t.Fatalf("intact entry: %v", err)
	}
	if plain, err := c.GetPlain(d[4]); !errors.Is(err, ErrCorrupt) || plain != nil {
		t.Fatalf("zeroed entry: %v", err)
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("a file that is not an entry was touched: %v", err)
	}
	if s := c.Stats(); s.Corrupt != 4 || s.Entries != 1 || s.Bytes != entrySize(1000) {
		t.Fatalf("stats %+v", s)
	}
}

func TestConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 4096
	maxBytes := 20 * entrySize(n)
	c := openT(t, dir, maxBytes, testKey(1))
	var blocks [40][]byte
	var digests [40][32]byte
	for i := range blocks {
		blocks[i] = randomBlock(uint64(i), n)
		digests[i] = sha256.Sum256(blocks[i])
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for j := range 300 {
				i := (g*7 + j*13) % len(blocks)
				var err error
				switch j % 4 {
				case 0, 1:
					stored, compressed := blocks[i], false
					if g%2 == 0 {
						stored, compressed = compress(blocks[i]), true
					}
					err = c.Put(digests[i], stored, compressed, n)
				case 2:
					var plain []byte
					plain, err = c.GetPlain(digests[i])
					if errors.Is(err, ErrNotFound) {
						err = nil
					} else if err == nil && !bytes.Equal(plain, blocks[i]) {
						err = fmt.Errorf("block %d: wrong data", i)
					}
				case 3:
					c.HasMany(digests[i : i+1])
					c.Has(digests[(i+1)%len(digests)])
					if s := c.Stats(); s.Bytes > maxBytes {
						err = fmt.Errorf("%d bytes stored, max %d", s.Bytes, maxBytes)
					}
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d op %d: %w", g, j, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := c.Stats()
	files := entryFiles(t, dir)
	var onDisk int64
	for _, size := range files {
		onDisk += size
	}
	if s.Corrupt != 0 || s.Bytes > maxBytes || onDisk != s.Bytes || int64(len(files)) != s.Entries {
		t.Fatalf("stats %+v, on disk %d files, %d bytes", s, len(files), onDisk)
	}
	if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
		t.Fatalf("temporary files left: %d", len(left))
	}
}

func TestNoPlaintextAtRest(t *testing.T) {
	dir := t.TempDir()
	c := openT(t, dir, DefaultMaxBytes, testKey(1))
	sentinel := []byte("FERRY-WANCACHE-SENTINEL-7f3a9c1e")
	plain := bytes.Repeat(sentinel, 2048)
	d := putRaw(t, c, plain)
	// The compressed form holds the sentinel as a literal once.
	other := append(bytes.Repeat(sentinel, 1000), 'x')
	stored := compress(other)
	if !bytes.Contains(stored, sentinel) {
		t.Fatal("test premise: the zstd form should contain the sentinel")
	}
	if err := c.Put(sha256.Sum256(other), stored, true, len(other)); err != nil {
		t.Fatal(err)
	}
	err := filepath.WalkDir(dir, func(p string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, sentinel[:16]) {
			t.Errorf("%s contains plaintext", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := c.GetPlain(d); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("sentinel block: %v", err)
	}
}

// The index costs about a hundred bytes per entry; eviction itself
// allocates nothing.
func TestIndexMemory(t *testing.T) {
	c := &Cache{index: make(map[[32]byte]*entry)}
	c.root.prev, c.root.next = &c.root, &c.root
	const n = 200_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range n {
		var d [32]byte
		d[0], d[1], d[2], d[31] = byte(i), byte(i>>8), byte(i>>16), 1
		e := &entry{digest: d, size: 1 << 20}
		c.index[d] = e
		c.pushFront(e)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	perEntry := float64(after.HeapAlloc-before.HeapAlloc) / n
	t.Logf("%.0f bytes per index entry", perEntry)
	if perEntry > 200 {
		t.Fatalf("%.0f bytes per index entry", perEntry)
	}
	runtime.KeepAlive(c)
}
