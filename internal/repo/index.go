package repo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

// Point describes one committed backup file: one restore point.
type Point struct {
	File        string            `json:"file"` // path relative to the backup directory
	FileID      format.ID         `json:"file_id"`
	BackupID    format.ID         `json:"backup_id"`
	ChainID     format.ID         `json:"chain_id"`
	ParentID    format.ID         `json:"parent_id"`
	Sequence    uint32            `json:"sequence"`
	Kind        format.Kind       `json:"kind"`
	Encryption  format.Encryption `json:"encryption"`
	BlockSize   uint32            `json:"block_size"`
	Created     time.Time         `json:"created"`
	Size        int64             `json:"size"` // bytes of the file on disk
	Records     uint64            `json:"records"`
	PlainBytes  uint64            `json:"plain_bytes"`
	SealedBytes uint64            `json:"sealed_bytes"`
	KeyRefs     []string          `json:"key_refs,omitempty"` // how the session secrets are wrapped
	Hint        string            `json:"hint,omitempty"`
	// Damaged is set when the file exists but does not open; such a file
	// is listed so the user sees it, and is never used as a parent.
	Damaged string `json:"damaged,omitempty"`
	MTime   int64  `json:"mtime_ns"`
}

// Chain is a full and the incrementals that follow it, by sequence. Its
// first point is a full of sequence 1 or, once retention has merged its
// oldest points (Merge), a merged full of a later sequence. A merge cut off
// between replacing the incremental and deleting the old full leaves both
// listed until the backup is next locked (RecoverMerges): the points before
// the merged full are still whole files and restore on their own, and the
// points from the merged full on start at it (ChainUpTo).
type Chain struct {
	ID     format.ID `json:"id"`
	Points []Point   `json:"points"`
}

// Latest returns the newest undamaged point of the chain, or nil.
func (c *Chain) Latest() *Point {
	for i := len(c.Points) - 1; i >= 0; i-- {
		if c.Points[i].Damaged == "" {
			return &c.Points[i]
		}
	}
	return nil
}

// Index is what a backup holds, read from its files.
type Index struct {
	Backup string  `json:"backup"`
	Chains []Chain `json:"chains"` // oldest chain first
}

// Points returns every point of the backup, chain by chain.
func (ix *Index) Points() []*Point {
	var out []*Point
	for i := range ix.Chains {
		for j := range ix.Chains[i].Points {
			out = append(out, &ix.Chains[i].Points[j])
		}
	}
	return out
}

// LatestChain returns the chain whose newest point is the newest of the
// backup, or nil for an empty backup.
func (ix *Index) LatestChain() *Chain {
	if len(ix.Chains) == 0 {
		return nil
	}
	return &ix.Chains[len(ix.Chains)-1]
}

// ErrNoPoint is returned when a point id matches nothing.
var ErrNoPoint = errors.New("no such restore point")

// Find returns the point whose file id starts with prefix (hex), or the
// latest point of the backup when prefix is empty.
func (ix *Index) Find(prefix string) (*Point, *Chain, error) {
	var found *Point
	var chain *Chain
	prefix = strings.ToLower(prefix)
	for i := range ix.Chains {
		c := &ix.Chains[i]
		for j := range c.Points {
			p := &c.Points[j]
			if prefix == "" {
				if p.Damaged == "" && (found == nil || p.Created.After(found.Created)) {
					found, chain = p, c
				}
				continue
			}
			if strings.HasPrefix(p.FileID.String(), prefix) {
				if found != nil {
					return nil, nil, fmt.Errorf("point id %q is ambiguous in backup %s", prefix, ix.Backup)
				}
				found, chain = p, c
			}
		}
	}
	if found == nil {
		if prefix == "" {
			return nil, nil, fmt.Errorf("backup %s: %w (it has no restore points)", ix.Backup, ErrNoPoint)
		}
		return nil, nil, fmt.Errorf("backup %s: %w %q", ix.Backup, ErrNoPoint, prefix)
	}
	return found, chain, nil
}

// ChainUpTo returns the points of c from the newest full (or merged full)
// at or before p up to and including p, checking that they link: each
// file's parent is the file before it.
func (c *Chain) ChainUpTo(p *Point) ([]*Point, error) {
	var out []*Point
	for i := range c.Points {
		q := &c.Points[i]
		if q.Sequence > p.Sequence {
			break
		}
		if q.Damaged == "" && q.Kind.IsFull() {
			out = out[:0] // a full needs nothing before it
		}
		out = append(out, q)
	}
	for i, q := range out {
		if q.Damaged != "" {
			continue // opening it gives the caller the damage error itself
		}
		if i == 0 && !q.Kind.IsFull() {
			return nil, fmt.Errorf("chain %s has no full before the point of sequence %d", c.ID, q.Sequence)
		}
		if want := out[0].Sequence + uint32(i); q.Sequence != want {
			return nil, fmt.Errorf("chain %s is missing the point of sequence %d", c.ID, want)
		}
		if i > 0 && out[i-1].Damaged == "" && q.ParentID != out[i-1].FileID {
			return nil, fmt.Errorf("chain %s is broken: point %s names parent %s, but the point before it is %s", c.ID, q.FileID, q.ParentID, out[i-1].FileID)
		}
	}
	if len(out) == 0 || out[len(out)-1] != p {
		return nil, fmt.Errorf("point %s is not in chain %s", p.FileID, c.ID)
	}
	return out, nil
}

// FileName returns a point's file name inside its chain directory.
func FileName(seq uint32, id format.ID) string {
	return fmt.Sprintf("%08d-%s%s", seq, id, fileSuffix)
}

// Path returns the absolute path of a point's file.
func (r *Repo) Path(backup string, p *Point) string {
	return filepath.Join(r.backupDir(backup), filepath.FromSlash(p.File))
}

type diskFile struct {
	rel   string
	size  int64
	mtime int64
}

func (r *Repo) listFiles(name string) ([]diskFile, error) {
	dir := r.backupDir(name)
	chains, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("backup %s in %s: %w", name, r.Dir, ErrNoBackup)
		}
		return nil, fmt.Errorf("read backup %s: %w", name, err)
	}
	var out []diskFile
	for _, c := range chains {
		if !c.IsDir() {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(dir, c.Name()))
		if err != nil {
			return nil, fmt.Errorf("read chain %s of backup %s: %w", c.Name(), name, err)
		}
		for _, e := range ents {
			if e.IsDir() || !strings.HasSuffix(e.Name(), fileSuffix) {
				continue
			}
			info, err := e.Info()
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) {
					continue // removed under us (retention); the next listing is right
				}
				return nil, err
			}
			out = append(out, diskFile{rel: c.Name() + "/" + e.Name(), size: info.Size(), mtime: info.ModTime().UnixNano()})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].rel < out[j].rel })
	return out, nil
}

// Index returns what the backup holds. It reads index.json when that still
// matches the files on disk, and otherwise rebuilds it from the files'
// headers and footers (and rewrites the cache when it can).
func (r *Repo) Index(name string) (*Index, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	files, err := r.listFiles(name)
	if err != nil {
		return nil, err
	}
	cachePath := filepath.Join(r.backupDir(name), indexFile)
	var cached Index
	if b, err := os.ReadFile(cachePath); err == nil && json.Unmarshal(b, &cached) == nil && cached.Backup == name && matches(&cached, files) {
		return &cached, nil
	}
	ix := &Index{Backup: name}
	byChain := map[string]*Chain{}
	var order []string
	for _, f := range files {
		p := r.readPoint(name, f)
		key := strings.SplitN(f.rel, "/", 2)[0]
		c, ok := byChain[key]
		if !ok {
			id, _ := format.ParseID(key)
			c = &Chain{ID: id}
			byChain[key] = c
			order = append(order, key)
		}
		c.Points = append(c.Points, p)
	}
	for _, k := range order {
		c := byChain[k]
		sort.SliceStable(c.Points, func(i, j int) bool { return c.Points[i].Sequence < c.Points[j].Sequence })
		ix.Chains = append(ix.Chains, *c)
	}
	sort.SliceStable(ix.Chains, func(i, j int) bool {
		return chainStart(&ix.Chains[i]).Before(chainStart(&ix.Chains[j]))
	})
	if b, err := json.MarshalIndent(ix, "", "  "); err == nil {
		_ = writeFileAtomic(cachePath, append(b, '\n'), 0o600) // a cache: a read-only repository still lists
	}
	return ix, nil
}

func chainStart(c *Chain) time.Time {
	for _, p := range c.Points {
		if !p.Created.IsZero() {
			return p.Created
		}
	}
	return time.Time{}
}

func matches(ix *Index, files []diskFile) bool {
	pts := ix.Points()
	if len(pts) != len(files) {
		return false
	}
	have := make(map[string]diskFile, len(files))
	for _, f := range files {
		have[f.rel] = f
	}
	for _, p := range pts {
		f, ok := have[p.File]
		if !ok || f.size != p.Size || f.mtime != p.MTime {
			return false
		}
	}
	return true
}

// readPoint reads a file's header, key table and footer.
func (r *Repo) readPoint(name string, df diskFile) Point {
	p := Point{File: df.rel, Size: df.size, MTime: df.mtime}
	// The name carries chain, sequence and file id, so a damaged file
	// still takes its place in its chain.
	chain, base, _ := strings.Cut(df.rel, "/")
	p.ChainID, _ = format.ParseID(chain)
	if seq, id, ok := strings.Cut(strings.TrimSuffix(base, fileSuffix), "-"); ok {
		n, _ := strconv.ParseUint(seq, 10, 32)
		p.Sequence = uint32(n)
		p.FileID, _ = format.ParseID(id)
	}
	f, fd, err := format.OpenPath(filepath.Join(r.backupDir(name), filepath.FromSlash(df.rel)))
	if err != nil {
		p.Damaged = err.Error()
		return p
	}
	defer fd.Close()
	h := f.Header
	p.FileID, p.BackupID, p.ChainID, p.ParentID = h.FileID, h.BackupID, h.ChainID, h.ParentID
	p.Sequence, p.Kind, p.Encryption, p.BlockSize, p.Created = h.Sequence, h.Kind, h.Encryption, h.BlockSize, h.Created
	p.Records, p.PlainBytes, p.SealedBytes = f.Footer.RecordCount, f.Footer.PlainBytes, f.Footer.SealedBytes
	p.KeyRefs, p.Hint = KeyRefs(f.KeyTable)
	return p
}

// KeyRefs describes how a key table wraps its secrets ("password",
// "kms:...", "recovery"), and returns the password hint if one is stored.
func KeyRefs(kt *format.KeyTable) (refs []string, hint string) {
	seen := map[string]bool{}
	for _, e := range kt.Entries {
		ref := e.Type.String()
		if e.Type == format.EntryTransit {
			if te, err := keys.ParseTransitEntry(e.Data); err == nil {
				ref = te.Ref()
			}
		}
		if e.Type == format.EntryPassword {
			if pe, err := keys.ParsePasswordEntry(e.Data); err == nil && pe.Hint != "" {
				hint = pe.Hint
			}
		}
		if !seen[ref] {
			seen[ref] = true
			refs = append(refs, ref)
		}
	}
	return refs, hint
}
