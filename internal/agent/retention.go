package agent

import (
	"bytes"
	"context"
	"fmt"

	"github.com/ferrybackup/ferry/internal/format"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/telemetry"
)

// GetCatalog returns a point's header and catalog section as stored: a
// sealed catalog stays sealed, the agent opens nothing.
func (s *Repositories) GetCatalog(ctx context.Context, req *repositoryv1.GetCatalogRequest) (*repositoryv1.GetCatalogResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.repo(req.Repository)
	if err != nil {
		return nil, toStatus(err)
	}
	ix, err := r.Repo.Index(req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	p, _, err := ix.Find(fmt.Sprintf("%x", req.PointId))
	if err != nil {
		return nil, toStatus(err)
	}
	f, fd, err := format.OpenPath(r.Repo.Path(req.Backup, p))
	if err != nil {
		return nil, toStatus(err)
	}
	defer fd.Close()
	_, hb, err := format.ReadHeader(fd, f.Size, f.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	return &repositoryv1.GetCatalogResponse{Header: hb, Catalog: f.CatalogSection()}, nil
}

// Merge merges the first two files of a chain into one merged full, for
// retention (repo.Merge), holding the backup's lock. It takes no key.
func (s *Repositories) Merge(ctx context.Context, req *repositoryv1.MergeRequest) (*repositoryv1.MergeResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.repo(req.Repository)
	if err != nil {
		return nil, toStatus(err)
	}
	lock, err := r.Repo.Lock(req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	defer lock.Unlock()
	ix, err := r.Repo.Index(req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	var chain *repo.Chain
	for i := range ix.Chains {
		if bytes.Equal(ix.Chains[i].ID[:], req.ChainId) {
			chain = &ix.Chains[i]
		}
	}
	if chain == nil {
		return nil, toStatus(fmt.Errorf("%w: backup %s has no chain %x", repo.ErrNoPoint, req.Backup, req.ChainId))
	}
	if len(chain.Points) < 2 || !bytes.Equal(chain.Points[1].FileID[:], req.PointId) {
		return nil, toStatus(fmt.Errorf("%w: the second point of chain %x is not %x; list the points again", errBadRequest, req.ChainId, req.PointId))
	}
	var extents map[uint64]uint64
	if req.HasExtents {
		extents = req.Extents
		if extents == nil {
			extents = map[uint64]uint64{}
		}
	}
	done := s.Metrics.TrackSession(telemetry.KindMerge)
	res, err := r.Repo.Merge(req.Backup, chain, extents)
	done(err)
	if err != nil {
		return nil, toStatus(err)
	}
	s.Log.Info("retention: merged a chain's oldest point into the next", "repository", r.Name, "backup", req.Backup,
		"removed", res.Removed, "merged", res.Merged.FileID, "bytes_before", res.BytesBefore, "bytes_after", res.BytesAfter,
		"records_dropped", res.Superseded+res.Outside)
	return &repositoryv1.MergeResponse{
		RemovedId: res.Removed[:], Merged: PointProto(req.Backup, res.Merged),
		BytesBefore: res.BytesBefore, BytesAfter: res.BytesAfter,
		RecordsKept:    int64(res.FromFull + res.FromInc),
		RecordsDropped: int64(res.Superseded + res.Outside),
	}, nil
}

// DeletePoints deletes whole backup files for GFS retention, holding the
// backup's lock: only the newest points of a chain, or all of it.
func (s *Repositories) DeletePoints(ctx context.Context, req *repositoryv1.DeletePointsRequest) (*repositoryv1.DeletePointsResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	r, err := s.repo(req.Repository)
	if err != nil {
		return nil, toStatus(err)
	}
	ids := make([]format.ID, len(req.PointIds))
	for i, b := range req.PointIds {
		if !copyID(&ids[i], b) {
			return nil, toStatus(fmt.Errorf("%w: malformed point id", errBadRequest))
		}
	}
	lock, err := r.Repo.Lock(req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	defer lock.Unlock()
	files, n, err := r.Repo.DeletePoints(req.Backup, ids)
	if err != nil {
		return nil, toStatus(err)
	}
	s.Log.Info("retention: deleted points", "repository", r.Name, "backup", req.Backup, "files", files, "bytes", n)
	return &repositoryv1.DeletePointsResponse{Files: int64(files), Bytes: n}, nil
}
