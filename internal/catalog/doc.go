// Package catalog is the controller's catalog: agents, jobs, sessions,
// restore points, key records and session secrets, kept in one embedded
// bbolt file (catalog.db) in the controller's state directory.
//
// Every secret (the key material of a key record, the session secret of each
// backup file the controller made) is sealed with AES-256-GCM under a master
// key held next to the catalog in master.key (32 random bytes, mode 0600).
// The associated data of each sealed value names its bucket and record key,
// so a sealed value copied to another record does not open. Nothing secret
// is stored unsealed, and no type here prints a secret.
//
// Points, sessions and session secrets belong to a job by its UID, a random
// id set when the job is first stored, not by its name: deleting a job keeps
// them so its restore points can still be restored, and a new job of the
// same name starts with none of them.
//
// A Store is safe for concurrent use. A second controller opening the same
// directory fails fast with ErrInUse instead of waiting for the lock.
package catalog
