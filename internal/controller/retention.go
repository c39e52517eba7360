package controller

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/format"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// dropOldest says whether retention drops the oldest of a chain's points
// (oldest first): both --retain and --retain-days must allow it, the newest
// point always stays, and a job without retention keeps everything.
func dropOldest(j catalog.Job, pts []catalog.Point, now time.Time) bool {
	if len(pts) < 2 || (j.Retain == 0 && j.RetainDays == 0) {
		return false
	}
	if j.Retain > 0 && len(pts) <= j.Retain {
		return false
	}
	if j.RetainDays > 0 && pts[0].Created.After(now.Add(-time.Duration(j.RetainDays)*24*time.Hour)) {
		return false
	}
	return true
}

// retentionChain is the chain retention works on after a session: the
// one its point went into, else the job's latest point's.
func (s *Server) retentionChain(j catalog.Job, pt *catalog.Point) []byte {
	if pt != nil {
		return pt.ChainID
	}
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		return nil
	}
	if l := latest(pts); l != nil {
		return l.ChainID
	}
	return nil
}

// applyRetention merges the oldest points of a copy job's chain away until
// the job's retention holds. The target agent merges without any key; the
// controller only tells it which blocks the surviving point still has,
// read from that point's catalog. It returns notes for the session.
func (s *Server) applyRetention(ctx context.Context, j catalog.Job, chainID []byte, log hclog.Logger) []string {
	if j.Kind != kindCopy || (j.Retain == 0 && j.RetainDays == 0) || chainID == nil {
		return nil
	}
	var notes []string
	note := func(format string, args ...any) {
		msg := "retention: " + fmt.Sprintf(format, args...)
		notes = append(notes, msg)
		log.Info(msg)
	}
	a, repoName, rc, err := s.holderClient(j)
	if err != nil {
		note("not applied: %v", err)
		return notes
	}
	for {
		all, err := s.store.ListPoints(j.UID)
		if err != nil {
			note("not applied: %v", err)
			return notes
		}
		var pts []catalog.Point
		for _, p := range all {
			if bytes.Equal(p.ChainID, chainID) {
				pts = append(pts, p)
			}
		}
		sort.Slice(pts, func(a, b int) bool { return pts[a].Sequence < pts[b].Sequence })
		if !dropOldest(j, pts, time.Now()) {
			return notes
		}
		old, next := pts[0], pts[1]
		extents, err := s.extentsOf(ctx, j, rc, repoName, next)
		if err != nil {
			note("could not read the blocks point %x keeps (%v); merging without, so no record is dropped", next.FileID, err)
		}
		resp, err := rc.Merge(ctx, &repositoryv1.MergeRequest{Repository: repoName, Backup: j.Name, ChainId: chainID,
			PointId: next.FileID, Extents: extents, HasExtents: extents != nil})
		if err != nil {
			note("merging point %x into %x failed on agent %s: %v", old.FileID, next.FileID, a.Name, agentErr(a, "merge", err))
			return notes
		}
		// The old point's secret stays for the records the merged file
		// took over; so do those of points merged into it before.
		err = s.recordMerge(j, old, resp.Merged)
		if err != nil {
			note("the merge ran on agent %s but recording it failed: %v", a.Name, err)
			return notes
		}
		note("merged point %x (sequence %d) into point %x (sequence %d) on agent %s, without any key: %d -> %d bytes, %d records kept, %d dropped",
			old.FileID, old.Sequence, next.FileID, next.Sequence, a.Name, resp.BytesBefore, resp.BytesAfter, resp.RecordsKept, resp.RecordsDropped)
	}
}

// extentsOf reads a point's catalog from the agent holding it (sealed, if
// the file is encrypted) and opens it here: for each object with data, its
// number of blocks. The agent receives no key.
func (s *Server) extentsOf(ctx context.Context, j catalog.Job, rc repositoryv1.RepositoryServiceClient, repoName string, p catalog.Point) (map[uint64]uint64, error) {
	resp, err := rc.GetCatalog(ctx, &repositoryv1.GetCatalogRequest{Repository: repoName, Backup: j.Name, PointId: p.FileID})
	if err != nil {
		return nil, err
	}
	name := fmt.Sprintf("point %x", p.FileID)
	h, err := format.ParseHeader(name, resp.Header)
	if err != nil {
		return nil, err
	}
	var meta *keys.Session
	if h.Encrypted() {
		id, ok := format.CatalogKeyID(resp.Catalog)
		if !ok {
			return nil, fmt.Errorf("%s: no catalog key id", name)
		}
		ks, err := s.secretsOf(ctx, j.UID, func(q catalog.Point) bool { return bytes.Equal(q.FileID, p.FileID) })
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if sess, err := keys.SessionFromSecret(k.Secret); err == nil && sess.ID() == id {
				meta = sess
			}
		}
		if meta == nil {
			return nil, fmt.Errorf("%s: the controller has no key for its catalog", name)
		}
	}
	var cat *format.Catalog
	if meta != nil {
		cat, err = format.OpenCatalog(name, 0, resp.Catalog, h, meta.Meta())
	} else {
		cat, err = format.OpenCatalog(name, 0, resp.Catalog, h, nil)
	}
	if err != nil {
		return nil, err
	}
	return repo.CatalogExtents(cat), nil
}
