package repo

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferrybackup/ferry/internal/format"
)

// Rewriting a file's key table in place (key rotation) is journaled so
// that a crash can never leave a torn key table: the new section is first
// written durably to FILE.kt-journal (offset, length, bytes, SHA-256), then
// written into the file and fsynced, then the journal is removed. A journal
// found later is replayed (it is complete) or dropped (it is torn, and the
// file was not touched yet). The records, block map, catalog and footer are
// never read or written: the footer hash does not cover the key table.

const journalExt = ".kt-journal"

// RewriteKeyTable replaces the key table of point p of backup with kt,
// which must wrap exactly the secrets the file's header lists. Call it
// with the backup's lock held.
func (r *Repo) RewriteKeyTable(backup string, p *Point, kt format.KeyTable) error {
	path := r.Path(backup, p)
	f, fd, err := format.OpenPath(path)
	if err != nil {
		return err
	}
	fd.Close()
	kt.Generation = f.KeyTable.Generation + 1
	if err := format.CheckKeyTable(path, f.KeyTableOffset, &kt, f.Header); err != nil {
		return fmt.Errorf("new key table: %w", err)
	}
	section, err := format.MarshalKeyTable(&kt, f.Header.KeyTableCap)
	if err != nil {
		return fmt.Errorf("new key table of %s: %w", path, err)
	}
	if err := writeJournal(path+journalExt, f.KeyTableOffset, section); err != nil {
		return err
	}
	if err := applyJournal(path, f.KeyTableOffset, section); err != nil {
		return err
	}
	if err := os.Remove(path + journalExt); err != nil {
		return fmt.Errorf("remove key table journal: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

func writeJournal(path string, off int64, section []byte) error {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(off))
	binary.Write(&b, binary.LittleEndian, uint64(len(section)))
	b.Write(section)
	sum := sha256.Sum256(b.Bytes())
	b.Write(sum[:])
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("key table journal: %w", err)
	}
	if _, err := f.Write(b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("key table journal: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("key table journal: %w", err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func applyJournal(path string, off int64, section []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("rewrite key table of %s: %w", path, err)
	}
	defer f.Close()
	if _, err := f.WriteAt(section, off); err != nil {
		return fmt.Errorf("rewrite key table of %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("rewrite key table of %s: fsync: %w", path, err)
	}
	return nil
}

// RecoverJournals replays the complete key table journals of a backup and
// drops torn ones. Call it with the backup's lock held (Lock does).
func (r *Repo) RecoverJournals(backup string) ([]string, error) {
	var done []string
	err := filepath.WalkDir(r.backupDir(backup), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, journalExt) {
			return err
		}
		target := strings.TrimSuffix(p, journalExt)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if off, section, ok := parseJournal(b); ok {
			if err := applyJournal(target, off, section); err != nil {
				return err
			}
			done = append(done, "replayed the key table journal of "+target)
		} else {
			done = append(done, "dropped a torn key table journal of "+target)
		}
		if err := os.Remove(p); err != nil {
			return err
		}
		return syncDir(filepath.Dir(p))
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return done, err
}

func parseJournal(b []byte) (int64, []byte, bool) {
	if len(b) < 16+sha256.Size {
		return 0, nil, false
	}
	body, sum := b[:len(b)-sha256.Size], b[len(b)-sha256.Size:]
	if s := sha256.Sum256(body); !bytes.Equal(s[:], sum) {
		return 0, nil, false
	}
	off := int64(binary.LittleEndian.Uint64(body))
	n := binary.LittleEndian.Uint64(body[8:])
	if n != uint64(len(body)-16) {
		return 0, nil, false
	}
	return off, body[16:], true
}
