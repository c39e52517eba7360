package wancache

import (
	"crypto/cipher"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
)

// DefaultMaxBytes is the size bound callers use unless configured otherwise.
const DefaultMaxBytes = 10 << 30

var (
	// ErrNotFound is returned by Get for a digest the cache does not hold.
	ErrNotFound = errors.New("not in wan cache")
	// ErrCorrupt is wrapped by the error Get returns for an entry that
	// failed authentication or its digest check. The entry has been
	// deleted; the block is a miss.
	ErrCorrupt = errors.New("corrupt wan cache entry")
	// ErrTooLarge is returned by Put for a block larger than MaxBlockSize
	// or an entry larger than the whole cache.
	ErrTooLarge = errors.New("block too large for wan cache")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("wan cache closed")
	// ErrLocked is returned by Open when another process has the directory open.
	ErrLocked = errors.New("wan cache directory in use")
)

// Stats are the cache's counters since Open, and its current size.
type Stats struct {
	Hits      uint64 // Get/GetPlain calls that returned a block
	Misses    uint64 // Get/GetPlain calls that did not (including corrupt entries)
	Puts      uint64 // entries written
	Evictions uint64 // entries deleted to stay within MaxBytes
	Corrupt   uint64 // entries deleted as damaged, at Open or on read
	Entries   int64
	Bytes     int64 // size of the entry files
	MaxBytes  int64
}

// entry is one stored block in the index and in the LRU list (most recent
// at root.next).
type entry struct {
	digest     [32]byte
	size       int64
	prev, next *entry
}

// Cache is a WAN global cache. It is safe for concurrent use.
type Cache struct {
	dir  string
	tmp  string
	max  int64
	aead cipher.AEAD
	dec  *zstd.Decoder
	lock *os.File

	life   sync.RWMutex // held for reading by every operation, for writing by Close
	closed bool

	// mu guards the index and every rename and unlink of an entry path,
	// so a path in the index is never replaced behind another's back.
	mu    sync.Mutex
	index map[[32]byte]*entry
	root  entry
	bytes int64
	clock int64 // last use time issued, Unix ns

	hits, misses, puts, evictions, corrupt atomic.Uint64
}

// Open opens or creates the cache in dir, holding at most maxBytes of entry
// files, sealed under a key derived from key (KeySize bytes). It deletes
// leftovers of interrupted writes and damaged entries, and evicts down to
// maxBytes if the bound shrank.
func Open(dir string, maxBytes int64, key []byte) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("open wan cache %s: max bytes %d is not positive", dir, maxBytes)
	}
	aead, err := newAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("open wan cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open wan cache: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("open wan cache %s: %w", dir, err)
	}
	c := &Cache{
		dir:   dir,
		tmp:   filepath.Join(dir, "tmp"),
		max:   maxBytes,
		aead:  aead,
		lock:  lock,
		index: make(map[[32]byte]*entry),
	}
	c.root.prev, c.root.next = &c.root, &c.root
	if err := c.load(); err != nil {
		lock.Close()
		return nil, fmt.Errorf("open wan cache %s: %w", dir, err)
	}
	c.dec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxBlockSize),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open wan cache %s: zstd decoder: %w", dir, err)
	}
	return c, nil
}

type found struct {
	digest [32]byte
	size   int64
	mtime  int64
}

// load rebuilds the index and LRU order from the entry files.
func (c *Cache) load() error {
	if err := os.RemoveAll(c.tmp); err != nil {
		return fmt.Errorf("clear interrupted writes: %w", err)
	}
	if err := os.Mkdir(c.tmp, 0o700); err != nil {
		return err
	}
	var all []found
	for i := range 256 {
		sub := filepath.Join(c.dir, fmt.Sprintf("%02x", i))
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return err
		}
		des, err := os.ReadDir(sub)
		if err != nil {
			return err
		}
		for _, de := range des {
			var d [32]byte
			name := de.Name()
			if len(name) != 64 || name[:2] != sub[len(sub)-2:] || !de.Type().IsRegular() {
				continue // not ours
			}
			if _, err := hex.Decode(d[:], []byte(name)); err != nil || hex.EncodeToString(d[:]) != name {
				continue
			}
			f, ok, err := checkEntry(filepath.Join(sub, name))
			if err != nil {
				return err
			}
			if !ok {
				if err := os.Remove(filepath.Join(sub, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return err
				}
				c.corrupt.Add(1)
				continue
			}
			f.digest = d
			all = append(all, f)
		}
	}
	slices.SortFunc(all, func(a, b found) int {
		if a.mtime != b.mtime {
			return int(max(-1, min(1, a.mtime-b.mtime)))
		}
		return slices.Compare(a.digest[:], b.digest[:])
	})
	c.clock = time.Now().UnixNano()
	for _, f := range all {
		e := &entry{digest: f.digest, size: f.size}
		c.index[f.digest] = e
		c.pushFront(e)
		c.bytes += f.size
		c.clock = max(c.clock, f.mtime)
	}
	c.evictLocked()
	return nil
}

// checkEntry reads an entry's header and reports whether its length agrees
// with it, which is what an interrupted write or a power loss breaks.
func checkEntry(path string) (found, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return found{}, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return found{}, false, err
	}
	buf := make([]byte, headerLen)
	if _, err := io.ReadFull(f, buf); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return found{}, false, nil
		}
		return found{}, false, err
	}
	h, err := parseHeader(buf)
	if err != nil || h.fileSize() != fi.Size() {
		return found{}, false, nil
	}
	return found{size: fi.Size(), mtime: fi.ModTime().UnixNano()}, true, nil
}

// Close releases the directory. Operations in progress finish first.
func (c *Cache) Close() error {
	c.life.Lock()
	defer c.life.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.dec.Close()
	return c.lock.Close() // closing the descriptor releases the flock
}

func (c *Cache) path(d [32]byte) string {
	h := hex.EncodeToString(d[:])
	return filepath.Join(c.dir, h[:2], h)
}

// Has reports whether the cache holds digest. It does not count as use.
func (c *Cache) Has(digest [32]byte) bool {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.index[digest] != nil
}

// HasMany reports for each digest whether the cache holds it, and marks
// those it holds as used.
func (c *Cache) HasMany(digests [][32]byte) []bool {
	c.life.RLock()
	defer c.life.RUnlock()
	have := make([]bool, len(digests))
	if c.closed {
		return have
	}
	var touched []use
	c.mu.Lock()
	for i, d := range digests {
		if e := c.index[d]; e != nil {
			have[i] = true
			touched = append(touched, c.touchLocked(e))
		}
	}
	c.mu.Unlock()
	for _, t := range touched {
		c.persist(t)
	}
	return have
}

// Touch marks digest as used and reports whether the cache holds it.
func (c *Cache) Touch(digest [32]byte) bool {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return false
	}
	return c.touch(digest)
}

type use struct {
	path string
	at   time.Time
}

// touchLocked moves e to the front and issues its use time.
func (c *Cache) touchLocked(e *entry) use {
	c.unlink(e)
	c.pushFront(e)
	return use{c.path(e.digest), c.nextTime()}
}

// persist records a use time in the entry's mtime. A failure (the entry
// was evicted meanwhile, or a read-only disk) only costs LRU precision.
func (c *Cache) persist(t use) { _ = os.Chtimes(t.path, t.at, t.at) }

func (c *Cache) nextTime() time.Time {
	c.clock = max(time.Now().UnixNano(), c.clock+1)
	return time.Unix(0, c.clock)
}

// Put stores a block: data is its stored form (zstd-compressed when
// compressed is true), rawLen its plaintext length. Put does not check the
// data against digest (Get does). Putting a digest the cache holds only
// marks it as used.
func (c *Cache) Put(digest [32]byte, data []byte, compressed bool, rawLen int) error {
	if rawLen < 0 || rawLen > MaxBlockSize || len(data) > maxStoredLen {
		return fmt.Errorf("put %x: %w: %d bytes, stored as %d", digest, ErrTooLarge, rawLen, len(data))
	}
	if !compressed && len(data) != rawLen {
		return fmt.Errorf("put %x: uncompressed data is %d bytes, rawLen %d", digest, len(data), rawLen)
	}
	size := int64(headerLen + len(data) + tagLen)
	if size > c.max {
		return fmt.Errorf("put %x: %w: entry of %d bytes, cache of %d", digest, ErrTooLarge, size, c.max)
	}
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return ErrClosed
	}
	if c.touch(digest) {
		return nil
	}
	file := seal(c.aead, digest, data, compressed, rawLen)
	tmp, err := c.writeTemp(digest, file)
	if err != nil {
		return fmt.Errorf("put %x: %w", digest, err)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index[digest] != nil { // another Put of the same block won
		os.Remove(tmp)
		return nil
	}
	at := c.nextTime()
	_ = os.Chtimes(tmp, at, at)
	if err := os.Rename(tmp, c.path(digest)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("put %x: %w", digest, err)
	}
	e := &entry{digest: digest, size: size}
	c.index[digest] = e
	c.pushFront(e)
	c.bytes += size
	c.puts.Add(1)
	c.evictLocked()
	return nil
}

// touch is Touch for callers that hold c.life.
func (c *Cache) touch(digest [32]byte) bool {
	c.mu.Lock()
	e := c.index[digest]
	if e == nil {
		c.mu.Unlock()
		return false
	}
	t := c.touchLocked(e)
	c.mu.Unlock()
	c.persist(t)
	return true
}

func (c *Cache) writeTemp(digest [32]byte, file []byte) (string, error) {
	f, err := os.CreateTemp(c.tmp, hex.EncodeToString(digest[:8])+"-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(file)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// evictLocked deletes least recently used entries until the cache fits.
func (c *Cache) evictLocked() {
	for c.bytes > c.max && c.root.prev != &c.root {
		c.removeLocked(c.root.prev)
		c.evictions.Add(1)
	}
}

// removeLocked deletes an entry from the index and the disk. A file that
// cannot be unlinked is left for the next Open to count again.
func (c *Cache) removeLocked(e *entry) {
	delete(c.index, e.digest)
	c.unlink(e)
	c.bytes -= e.size
	_ = os.Remove(c.path(e.digest))
}

// Get returns a block's stored form as it was put, after authenticating it
// and checking its plaintext against digest. It returns ErrNotFound for a
// miss, and an error wrapping ErrCorrupt for an entry that failed its
// checks, which it deletes. Any error means the block is not available.
func (c *Cache) Get(digest [32]byte) (data []byte, compressed bool, rawLen int, err error) {
	h, data, _, err := c.get(digest)
	if err != nil {
		return nil, false, 0, err
	}
	return data, h.compressed, h.rawLen, nil
}

// GetPlain is Get returning the block's plaintext.
func (c *Cache) GetPlain(digest [32]byte) ([]byte, error) {
	_, _, plain, err := c.get(digest)
	return plain, err
}

func (c *Cache) get(digest [32]byte) (header, []byte, []byte, error) {
	c.life.RLock()
	defer c.life.RUnlock()
	if c.closed {
		return header{}, nil, nil, ErrClosed
	}
	c.mu.Lock()
	e := c.index[digest]
	if e == nil {
		c.mu.Unlock()
		c.misses.Add(1)
		return header{}, nil, nil, ErrNotFound
	}
	t := c.touchLocked(e)
	c.mu.Unlock()
	c.persist(t)

	file, err := os.ReadFile(t.path)
	if errors.Is(err, fs.ErrNotExist) { // evicted meanwhile, or deleted behind our back
		c.drop(e)
		c.misses.Add(1)
		return header{}, nil, nil, ErrNotFound
	}
	if err != nil {
		c.misses.Add(1)
		return header{}, nil, nil, fmt.Errorf("read wan cache entry %x: %w", digest, err)
	}
	h, data, plain, err := open(c.aead, c.dec, digest, file)
	if err != nil {
		c.drop(e)
		c.corrupt.Add(1)
		c.misses.Add(1)
		return header{}, nil, nil, fmt.Errorf("%w %s: %v", ErrCorrupt, t.path, err)
	}
	c.hits.Add(1)
	return h, data, plain, nil
}

// drop deletes e if it is still the index's entry for its digest (a new
// Put may have replaced it since it was read).
func (c *Cache) drop(e *entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.index[e.digest] == e {
		c.removeLocked(e)
	}
}

// Stats returns the counters and the current size.
func (c *Cache) Stats() Stats {
	c.mu.Lock()
	entries, bytes := int64(len(c.index)), c.bytes
	c.mu.Unlock()
	return Stats{
		Hits:      c.hits.Load(),
		Misses:    c.misses.Load(),
		Puts:      c.puts.Load(),
		Evictions: c.evictions.Load(),
		Corrupt:   c.corrupt.Load(),
		Entries:   entries,
		Bytes:     bytes,
		MaxBytes:  c.max,
	}
}

func (c *Cache) pushFront(e *entry) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}

func (c *Cache) unlink(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}
