package repo

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/ferrybackup/ferry/internal/format"
)

// Pending is a backup file being written. Nothing a Pending writes is a
// restore point until Commit returns.
type Pending struct {
	f       *os.File
	tmp     string
	final   string
	done    bool
	written int64
	kicked  int64 // bytes handed to writeback so far
}

// writebackChunk is how many bytes are written before writeback of them
// is started. Starting it early spreads the disk writes over the backup,
// so the fsync at commit finds little left to do and the pipeline does not
// stall on it.
const writebackChunk = 32 << 20

// NewFile starts file seq of chain in backup, as CHAIN/NAME.partial. Call
// it with the backup's lock held.
func (r *Repo) NewFile(backup string, chain format.ID, seq uint32, id format.ID) (*Pending, error) {
	dir := filepath.Join(r.backupDir(backup), chain.String())
	if err := mkdirDurable(filepath.Dir(dir)); err != nil {
		return nil, fmt.Errorf("create backup directory: %w", err)
	}
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("create chain directory %s: %w", dir, err)
	}
	final := filepath.Join(dir, FileName(seq, id))
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("backup file %s exists already", final)
	}
	tmp := final + partialExt
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create backup file: %w", err)
	}
	return &Pending{f: f, tmp: tmp, final: final}, nil
}

// File is the partial file.
func (p *Pending) File() *os.File { return p.f }

// Write appends to the partial file, starting writeback of every
// writebackChunk bytes as it goes.
func (p *Pending) Write(b []byte) (int, error) {
	n, err := p.f.Write(b)
	p.written += int64(n)
	if p.written-p.kicked >= writebackChunk {
		// Best effort: SYNC_FILE_RANGE_WRITE only starts I/O; durability
		// still comes from the fsync in Commit.
		_ = unix.SyncFileRange(int(p.f.Fd()), p.kicked, p.written-p.kicked, unix.SYNC_FILE_RANGE_WRITE)
		p.kicked = p.written
	}
	return n, err
}

// Name is the path of the partial file, for errors.
func (p *Pending) Name() string { return p.tmp }

// Commit makes the file durable and visible: fsync, rename to its final
// name, fsync the chain directory. It returns the final path.
func (p *Pending) Commit() (string, error) {
	if p.done {
		return "", fmt.Errorf("commit %s: already finished", p.final)
	}
	p.done = true
	if err := p.f.Sync(); err != nil {
		p.abort()
		return "", fmt.Errorf("commit backup file %s: fsync: %w", p.final, err)
	}
	if err := p.f.Close(); err != nil {
		p.abort()
		return "", fmt.Errorf("commit backup file %s: %w", p.final, err)
	}
	if err := os.Rename(p.tmp, p.final); err != nil {
		p.abort()
		return "", fmt.Errorf("commit backup file %s: %w", p.final, err)
	}
	if err := syncDir(filepath.Dir(p.final)); err != nil {
		// The rename happened; only its durability is in doubt. The file
		// is complete and valid, so it stays.
		return p.final, fmt.Errorf("commit backup file %s: fsync directory: %w", p.final, err)
	}
	return p.final, nil
}

// Abort removes the partial file. It is safe to call after Commit.
func (p *Pending) Abort() {
	if p.done {
		return
	}
	p.done = true
	p.abort()
}

func (p *Pending) abort() {
	p.f.Close()
	os.Remove(p.tmp)
}

// Sync makes what is written so far durable (a resumable session's
// checkpoint).
func (p *Pending) Sync() error {
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", p.tmp, err)
	}
	return nil
}

// Rewind cuts the partial file back to off, the end of its last durable
// checkpoint, so that writing resumes there.
func (p *Pending) Rewind(off int64) error {
	if err := p.f.Truncate(off); err != nil {
		return fmt.Errorf("rewind %s: %w", p.tmp, err)
	}
	if _, err := p.f.Seek(off, 0); err != nil {
		return fmt.Errorf("rewind %s: %w", p.tmp, err)
	}
	p.written, p.kicked = off, min(p.kicked, off)
	return nil
}
