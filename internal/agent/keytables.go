package agent

import (
	"fmt"

	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	"github.com/ferrybackup/ferry/internal/repo"
)

// getKeyTables returns the key table sections of a backup's files: wrapped
// secrets only, which is what rotation needs to see.
func getKeyTables(lookup func(string) (*Repository, error), repoName, backupName string) ([]*commonv1.FileKeyTable, error) {
	r, err := lookup(repoName)
	if err != nil {
		return nil, err
	}
	ix, err := r.Repo.Index(backupName)
	if err != nil {
		return nil, err
	}
	var out []*commonv1.FileKeyTable
	for _, p := range ix.Points() {
		if p.Damaged != "" {
			continue
		}
		f, fd, err := format.OpenPath(r.Repo.Path(backupName, p))
		if err != nil {
			return nil, err
		}
		fd.Close()
		kb, err := format.MarshalKeyTable(f.KeyTable, f.Header.KeyTableCap)
		if err != nil {
			return nil, err
		}
		out = append(out, &commonv1.FileKeyTable{FileId: p.FileID[:], KeyTable: kb})
	}
	return out, nil
}

// rewriteKeyTables replaces key tables in place, under the backup's lock.
func rewriteKeyTables(lookup func(string) (*Repository, error), repoName, backupName string, tables []*commonv1.FileKeyTable) (int, error) {
	r, err := lookup(repoName)
	if err != nil {
		return 0, err
	}
	lock, err := r.Repo.Lock(backupName)
	if err != nil {
		return 0, err
	}
	defer lock.Unlock()
	ix, err := r.Repo.Index(backupName)
	if err != nil {
		return 0, err
	}
	byID := map[format.ID]*repo.Point{}
	for _, p := range ix.Points() {
		byID[p.FileID] = p
	}
	n := 0
	for _, t := range tables {
		var id format.ID
		if !copyID(&id, t.FileId) {
			return n, fmt.Errorf("%w: file id", errBadRequest)
		}
		p := byID[id]
		if p == nil {
			return n, fmt.Errorf("%w: backup %s has no file %s", repo.ErrNoPoint, backupName, id)
		}
		kt, err := format.ParseKeyTable("(request)", 0, t.KeyTable, uint32(len(t.KeyTable)/2))
		if err != nil {
			return n, fmt.Errorf("%w: key table for %s: %v", errBadRequest, id, err)
		}
		if err := r.Repo.RewriteKeyTable(backupName, p, *kt); err != nil {
			return n, fmt.Errorf("%w: %v", errBadRequest, err)
		}
		n++
	}
	return n, nil
}
