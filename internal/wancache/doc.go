// Package wancache is the target agent's WAN global cache: a persistent,
// size-bounded store of blocks by digest (SHA-256 of the block plaintext),
// shared by every job and source agent that sends to this target. In WAN
// mode the target answers a source's digests with HasMany and reads the
// blocks it already holds with Get instead of receiving them again.
//
// # Layout
//
// One file per entry, dir/xx/<64 hex digest> (xx = first byte), written to
// dir/tmp/ and renamed into place, plus dir/lock (flock: one process per
// cache directory). An entry file is
//
//	magic "fwc\x01" | flags u8 (bit 0: zstd) | rawLen u32 | dataLen u32 | nonce [12] | AES-256-GCM(data) incl. 16-byte tag
//
// (big-endian), sealed under HKDF-SHA256(cache key, info "ferry/v1/wancache")
// with a random nonce per entry; the associated data is the first 13 bytes
// (magic, flags, lengths) followed by the digest, so an entry cannot be
// moved to another digest's name or have its stored form relabelled.
//
// Why a file per entry rather than segment files with a bbolt index: each
// entry is created atomically by rename and freed exactly by unlink, so
// there is no compaction, no second structure that can disagree with the
// data after a crash, and damage is confined to one entry. A 10 GiB cache of
// 1 MiB blocks is ~10k files over 256 directories. The LRU order is kept in
// the files' modification times: the cache issues strictly increasing
// timestamps from a clock that starts at max(now, newest mtime) and sets one
// on every use (os.Chtimes), so Open rebuilds both the index and the order
// from one directory walk. Memory is one index entry (~130 bytes) per stored
// block; eviction pops the tail of an intrusive list and needs nothing else.
//
// # Crash safety
//
// A kill at any moment leaves a complete entry or a file in dir/tmp, which
// Open deletes. Entries are not fsynced: after a power loss an entry may be
// missing, truncated or torn. Open reads every entry's header and deletes
// those whose length does not match it; anything else is caught on read,
// because Get authenticates the entry and checks SHA-256(plaintext) against
// the digest, so a damaged entry is deleted and reported (ErrCorrupt), never
// returned. Lost mtime updates only make the LRU order slightly older.
// Nothing found on disk makes Open fail; only I/O errors and a second
// process holding the lock do.
//
// # Use
//
// Has does not count as use; HasMany and Touch do, so the blocks a target
// has just promised a source it holds are the last to be evicted. They can
// still be evicted (or found damaged) before the Get that needs them, so a
// caller must treat any Get error as a miss and fetch the block from the
// source.
package wancache
