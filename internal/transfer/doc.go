// Package transfer moves one backup file from a source agent to a target
// agent over the TargetService.Transfer stream: the sender side is a
// backup.FileSink that sends what a copy makes; the receiver side checks
// every part and writes the file into a repository, committing it only
// when it is complete, consistent, and matches the sender's trailer hash.
//
// The trailer hash is SHA-256 over the header bytes, the key table bytes,
// each record's block map checksum in order, and the catalog section, so
// both sides compute it without hashing payloads a second time.
package transfer
