package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
)

const (
	markerFile   = "ferry-repository"
	backupsDir   = "backups"
	lockFile     = ".lock"
	indexFile    = "index.json"
	fileSuffix   = ".ferry"
	partialExt   = ".partial"
	layoutFormat = 1
)

// ErrNotRepository is returned by Open for a directory that holds no repository.
var ErrNotRepository = errors.New("not a ferry repository")

// ErrNoBackup is returned for a backup name the repository does not hold.
var ErrNoBackup = errors.New("no such backup")

// ErrLocked is returned when another writer holds a backup's lock.
var ErrLocked = errors.New("backup is locked by another writer")

// Repo is a repository on a local directory.
type Repo struct {
	Dir string
}

type marker struct {
	Format int    `json:"format"`
	Kind   string `json:"kind"`
}

// Open opens the repository at dir.
func Open(dir string) (*Repo, error) {
	b, err := os.ReadFile(filepath.Join(dir, markerFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("open repository %s: %w (no %s file)", dir, ErrNotRepository, markerFile)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository %s: %w", dir, err)
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || m.Kind != "ferry" {
		return nil, fmt.Errorf("open repository %s: %w (unreadable %s)", dir, ErrNotRepository, markerFile)
	}
	if m.Format != layoutFormat {
		return nil, fmt.Errorf("open repository %s: layout format %d, this ferry reads %d", dir, m.Format, layoutFormat)
	}
	return &Repo{Dir: dir}, nil
}

// Create opens the repository at dir, creating the directory and the
// repository when missing. A non-empty directory that is not a repository
// is refused, so a typo cannot scatter files into an unrelated tree.
func Create(dir string) (*Repo, error) {
	if r, err := Open(dir); err == nil || !errors.Is(err, ErrNotRepository) {
		return r, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	if len(ents) > 0 {
		return nil, fmt.Errorf("create repository %s: directory is not empty and holds no repository", dir)
	}
	if err := os.Mkdir(filepath.Join(dir, backupsDir), 0o700); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	b, _ := json.Marshal(marker{Format: layoutFormat, Kind: "ferry"})
	if err := writeFileAtomic(filepath.Join(dir, markerFile), append(b, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("create repository %s: %w", dir, err)
	}
	return &Repo{Dir: dir}, nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateName checks a backup name: letters, digits, '.', '_' and '-',
// starting with a letter or digit, at most 128 bytes.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid backup name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit", name)
	}
	return nil
}

func (r *Repo) backupDir(name string) string { return filepath.Join(r.Dir, backupsDir, name) }

// Backups lists the names of the backups in the repository, sorted.
func (r *Repo) Backups() ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(r.Dir, backupsDir))
	if err != nil {
		return nil, fmt.Errorf("list backups in %s: %w", r.Dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() && ValidateName(e.Name()) == nil {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// HasBackup reports whether the backup directory exists.
func (r *Repo) HasBackup(name string) bool {
	st, err := os.Stat(r.backupDir(name))
	return err == nil && st.IsDir()
}

// Lock is an exclusive, crash-safe lock on one backup: the kernel releases
// a flock when its holder dies, so a killed writer never leaves it stuck.
type Lock struct{ f *os.File }

// Lock takes the backup's writer lock, creating the backup directory when
// missing. It fails at once with ErrLocked when another writer holds it.
func (r *Repo) Lock(name string) (*Lock, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	dir := r.backupDir(name)
	if err := mkdirDurable(dir); err != nil {
		return nil, fmt.Errorf("create backup %s: %w", name, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock backup %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock backup %s: %w", name, ErrLocked)
		}
		return nil, fmt.Errorf("lock backup %s: %w", name, err)
	}
	// A key table rewrite cut off by a crash is finished (or dropped)
	// before anyone writes to the backup again.
	if _, err := r.RecoverJournals(name); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock backup %s: %w", name, err)
	}
	// So is a merge (retention): rolled back before its rename, completed
	// after it.
	if _, err := r.RecoverMerges(name); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock backup %s: %w", name, err)
	}
	return &Lock{f: f}, nil
}

// Unlock releases the lock.
func (l *Lock) Unlock() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the flock
	l.f = nil
	return err
}

// RemovePartials deletes files left half-written by a writer that died.
// Call it with the backup's lock held. It returns the paths removed.
func (r *Repo) RemovePartials(name string) ([]string, error) {
	var removed []string
	dir := r.backupDir(name)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, partialExt) {
			if err := os.Remove(p); err != nil {
				return err
			}
			removed = append(removed, p)
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	if err != nil {
		return removed, fmt.Errorf("remove partial files of backup %s: %w", name, err)
	}
	return removed, nil
}

// writeFileAtomic writes data to path through a uniquely named temporary
// file, fsync and rename, then fsyncs the directory, so concurrent writers
// of the same cache file never see each other's halves.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(tmp)
		return err
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// mkdirDurable creates dir if missing and fsyncs its parent, so that a
// file committed inside it survives a power loss along with the directory.
func mkdirDurable(dir string) error {
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		return nil
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return syncDir(filepath.Dir(dir))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
