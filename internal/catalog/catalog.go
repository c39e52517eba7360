package catalog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// File names inside the controller's state directory.
const (
	DBFile        = "catalog.db"
	MasterKeyFile = "master.key"
)

// MasterKeySize is the size of the master key in bytes.
const MasterKeySize = 32

// catalogFormat is the layout of buckets and values; Open refuses a catalog
// written by a newer layout.
const catalogFormat = 1

// lockTimeout bounds how long Open waits for the catalog's file lock, so a
// second controller on the same directory fails instead of hanging.
const lockTimeout = time.Second

// ErrInUse is returned by Open when another process holds the catalog.
var ErrInUse = errors.New("in use by another controller")

// ErrNotFound is returned, wrapped with the kind and key of the record, when
// a record does not exist.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when a write would replace a record that must never
// change (a key record, a session secret) with a different one.
var ErrExists = errors.New("already exists with different contents")

// Bucket names. They are part of the catalog layout and of the associated
// data of sealed values.
const (
	bucketMeta           = "meta"
	bucketAgents         = "agents"
	bucketJobs           = "jobs"
	bucketSessions       = "sessions"
	bucketSessionsByJob  = "sessions_by_job"
	bucketSessionsByTime = "sessions_by_time"
	bucketPoints         = "points"
	bucketKeyRecords     = "key_records"
	bucketSessionSecrets = "session_secrets"
)

var allBuckets = []string{
	bucketMeta, bucketAgents, bucketJobs, bucketSessions, bucketSessionsByJob,
	bucketSessionsByTime, bucketPoints, bucketKeyRecords, bucketSessionSecrets,
}

// Keys in the meta bucket.
var (
	metaFormat   = []byte("format")
	metaKeyCheck = []byte("master_key_check")
)

// keyCheckPlaintext is sealed under the master key when a catalog is
// created, so Open can tell a wrong or replaced master.key from tampering.
var keyCheckPlaintext = []byte("ferry catalog master key check")

// Store is an open catalog. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	seal *sealer
	path string
}

// Open opens the catalog in dir, creating dir, catalog.db and master.key on
// first start. It fails fast with ErrInUse when another controller has the
// catalog open, and refuses a master key that is readable by others, has the
// wrong size, or does not match the catalog.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open catalog: %w", err)
	}
	dbPath := filepath.Join(dir, DBFile)
	_, statErr := os.Stat(dbPath)
	created := errors.Is(statErr, fs.ErrNotExist)

	db, err := bolt.Open(dbPath, 0o600, &bolt.Options{Timeout: lockTimeout})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, fmt.Errorf("catalog %s is %w (lock not acquired within %s)", dbPath, ErrInUse, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", dbPath, err)
	}
	s, err := open(db, dir, dbPath, created)
	if err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// open runs with the catalog's file lock held, so no other controller
// creates the master key at the same time.
func open(db *bolt.DB, dir, dbPath string, created bool) (*Store, error) {
	if created {
		if err := syncDir(dir); err != nil {
			return nil, fmt.Errorf("open catalog %s: %w", dbPath, err)
		}
	}
	var sealed bool
	err := db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucketMeta)); b != nil {
			sealed = b.Get(metaKeyCheck) != nil
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", dbPath, err)
	}

	keyPath := filepath.Join(dir, MasterKeyFile)
	key, err := readMasterKey(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if sealed {
			return nil, fmt.Errorf("master key %s is missing, but catalog %s holds secrets sealed under it: restore master.key from backup", keyPath, dbPath)
		}
		key, err = createMasterKey(keyPath)
	}
	if err != nil {
		return nil, err
	}
	sl, err := newSealer(key)
	clear(key)
	if err != nil {
		return nil, fmt.Errorf("master key %s: %w", keyPath, err)
	}

	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		if v := meta.Get(metaFormat); v != nil {
			f, err := strconv.Atoi(string(v))
			if err != nil || f != catalogFormat {
				return fmt.Errorf("catalog layout format %q, this controller reads %d", v, catalogFormat)
			}
		} else if err := meta.Put(metaFormat, []byte(strconv.Itoa(catalogFormat))); err != nil {
			return err
		}
		if v := meta.Get(metaKeyCheck); v != nil {
			if _, err := sl.open(bucketMeta, metaKeyCheck, v); err != nil {
				return fmt.Errorf("master key %s does not match this catalog (it is not the key the catalog's secrets were sealed under)", keyPath)
			}
			return nil
		}
		return meta.Put(metaKeyCheck, sl.seal(bucketMeta, metaKeyCheck, keyCheckPlaintext))
	})
	if err != nil {
		return nil, fmt.Errorf("open catalog %s: %w", dbPath, err)
	}
	return &Store{db: db, seal: sl, path: dbPath}, nil
}

// Close closes the catalog and releases its lock.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close catalog %s: %w", s.path, err)
	}
	return nil
}

// Path returns the path of catalog.db.
func (s *Store) Path() string { return s.path }

// readMasterKey reads the master key, refusing one that anyone but its owner
// can read or write, or that is not exactly MasterKeySize bytes.
func readMasterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read master key: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("master key %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&^0o600 != 0 {
		return nil, fmt.Errorf("master key %s has permissions %04o, want 0600: it must be readable by the controller's user only (chmod 600 %s)", path, perm, path)
	}
	if fi.Size() != MasterKeySize {
		return nil, fmt.Errorf("master key %s is %d bytes, want %d: it is damaged or not a ferry master key", path, fi.Size(), MasterKeySize)
	}
	key := make([]byte, MasterKeySize+1)
	n, err := io.ReadFull(f, key)
	if err != io.ErrUnexpectedEOF || n != MasterKeySize {
		clear(key)
		return nil, fmt.Errorf("master key %s changed size while being read", path)
	}
	return key[:MasterKeySize], nil
}

// createMasterKey writes a fresh master key to a temporary file, fsyncs it
// and links it into place, so a crash leaves either no master.key or a
// complete one, and an existing master.key is never replaced.
func createMasterKey(path string) ([]byte, error) {
	key := make([]byte, MasterKeySize)
	rand.Read(key)
	tmp := path + ".new"
	// A leftover from a crash during an earlier creation; we hold the
	// catalog lock, so no one else is writing it.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("create master key: %w", err)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create master key: %w", err)
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp, path)
	}
	if rerr := os.Remove(tmp); err == nil && rerr != nil {
		err = rerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(path))
	}
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("create master key %s: %w", path, err)
	}
	return key, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
