// Package backup makes restore points of local paths in a repository and
// brings them back: backup (full, then incrementals of changed blocks),
// restore (byte-identical, with modes and times), and verify (keyless:
// structure and checksums; full: every record opened and its digest
// checked against the catalog).
//
// Blocks flow through a bounded pipeline: one reader, one worker per core
// (digest, zstd, AES-256-GCM, record checksum) and one writer that puts
// records back in order. Memory is bounded by the pipeline's window of
// block buffers, never by the size of the source.
package backup
