// Package format reads and writes ferry backup files, format version 1.
//
// A backup file holds one restore point of one backup: a plaintext header,
// a key table of wrapped session secrets, the block records, a plaintext
// block map, a catalog sealed with the metakey, and a footer. It is written
// front to back, so a target can write it as records arrive, and it is
// self-describing: a reader needs the file and a key, nothing else.
//
// The byte layout is specified in docs/format.md; this package is its
// reference implementation. Sealing and opening payloads is left to the
// caller (see package keys); this package defines the associated data that
// binds each sealed payload to its place in a backup.
package format
