package repo

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ferrybackup/ferry/internal/format"
)

// ErrNotTail is returned by DeletePoints for a point that a point left in
// its chain builds on.
var ErrNotTail = errors.New("a point that stays builds on it")

// DeletePoints deletes the files of points of a backup, for GFS
// retention. In each chain only its newest points may go (or all of
// them), so every point left still restores; anything else is refused
// before a file is touched. Files go newest first, each removal made
// durable before the next, and a chain directory left empty is removed.
// It returns how many files and bytes went. Call it with the backup's lock
// held.
func (r *Repo) DeletePoints(backup string, ids []format.ID) (files int, bytes int64, err error) {
	ix, err := r.Index(backup)
	if err != nil {
		return 0, 0, err
	}
	want := map[format.ID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	type victim struct {
		path string
		size int64
	}
	var plan [][]victim // per chain, newest first
	found := 0
	for ci := range ix.Chains {
		c := &ix.Chains[ci]
		var vs []victim
		kept := false
		for pi := len(c.Points) - 1; pi >= 0; pi-- {
			p := &c.Points[pi]
			if !want[p.FileID] {
				kept = true
				continue
			}
			found++
			if kept {
				return 0, 0, fmt.Errorf("delete point %s of backup %s: %w (a newer point of chain %s stays)", p.FileID, backup, ErrNotTail, c.ID)
			}
			vs = append(vs, victim{r.Path(backup, p), p.Size})
		}
		if len(vs) > 0 {
			plan = append(plan, vs)
		}
	}
	if found != len(want) {
		return 0, 0, fmt.Errorf("delete points of backup %s: %w (%d of %d found)", backup, ErrNoPoint, found, len(want))
	}
	for _, vs := range plan {
		dir := filepath.Dir(vs[0].path)
		for _, v := range vs {
			if err := os.Remove(v.path); err != nil {
				return files, bytes, err
			}
			if err := syncDir(dir); err != nil {
				return files, bytes, err
			}
			files++
			bytes += v.size
		}
		if left, err := os.ReadDir(dir); err == nil && len(left) == 0 {
			if os.Remove(dir) == nil {
				syncDir(filepath.Dir(dir))
			}
		}
	}
	return files, bytes, nil
}
