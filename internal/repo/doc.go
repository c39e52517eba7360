// Package repo keeps backup files in a local directory: a repository holds
// backups, a backup holds chains, a chain holds a full and its incrementals.
//
// Layout:
//
//	DIR/ferry-repository           marker: format of the layout (JSON)
//	DIR/backups/NAME/.lock         flock(2) held by the one writer of NAME
//	DIR/backups/NAME/index.json    cache of the files' headers, rebuilt when stale
//	DIR/backups/NAME/CHAIN/SSSSSSSS-FILEID.ferry
//
// A file is written as NAME.partial, fsynced, renamed and its directory
// fsynced; only a renamed file with a valid footer is a restore point.
// index.json is only a cache: when it is missing, unreadable, or does not
// match the files on disk (names, sizes, mtimes), it is rebuilt from them.
package repo
