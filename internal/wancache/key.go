package wancache

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the size of a cache key.
const KeySize = 32

// KeyFile is the name of the cache key's file in an agent's state directory.
const KeyFile = "wancache.key"

// LoadOrCreateKey returns the cache key kept in stateDir, creating it if
// there is none. A new key is written to a temporary file (O_EXCL, 0600,
// fsynced) and hard-linked into place, so the key file is never seen
// partly written and two processes racing agree on one key.
//
// Losing the key costs only the cache's contents: every entry then fails
// authentication and is deleted as it is read.
func LoadOrCreateKey(stateDir string) ([]byte, error) {
	path := filepath.Join(stateDir, KeyFile)
	key, err := readKey(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return key, err
	}
	var suffix [8]byte
	rand.Read(suffix[:])
	tmp := path + "." + hex.EncodeToString(suffix[:]) + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create wan cache key: %w", err)
	}
	defer os.Remove(tmp)
	key = make([]byte, KeySize)
	rand.Read(key)
	_, err = f.Write(key)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("write wan cache key %s: %w", tmp, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) { // another process made one first
			return readKey(path)
		}
		return nil, fmt.Errorf("create wan cache key %s: %w", path, err)
	}
	if err := syncDir(stateDir); err != nil {
		return nil, fmt.Errorf("create wan cache key %s: %w", path, err)
	}
	return key, nil
}

func readKey(path string) ([]byte, error) {
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read wan cache key: %w", err)
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("wan cache key %s is %d bytes, want %d", path, len(key), KeySize)
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
