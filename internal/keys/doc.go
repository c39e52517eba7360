// Package keys implements ferry's key hierarchy: the secret key derived from
// a password with Argon2id, the random session secret of each backup file,
// the data key and metakey derived from it with HKDF-SHA256, and the wrapped
// forms of a session secret that a file's key table stores.
//
// Everything here is pure computation over bytes; where a secret key comes
// from (a password, a Vault Transit key, a recovery key) is decided by the
// caller, which hands this package the entries to build or open.
package keys
