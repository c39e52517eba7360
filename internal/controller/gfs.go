package controller

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/catalog"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
)

// GFS (grandfather-father-son) on a copy job: the first copy of each new
// week (or month, when only monthly fulls are kept) starts a new chain
// with a full. The chain being written is the job's current chain, which
// --retain merges keep short; every older chain is a GFS archive that
// merges never touch. An archive is trimmed to its full, and kept while it
// is the first full of one of the last --keep-weekly weeks or
// --keep-monthly months; others are deleted.

func gfsOn(j catalog.Job) bool { return j.Kind == kindCopy && (j.KeepWeekly > 0 || j.KeepMonthly > 0) }

// pointDay is the controller's date of the session that made a point (the
// point's own time for points made before GFS recorded it).
func pointDay(p catalog.Point) string {
	if p.Day != "" {
		return p.Day
	}
	return p.Created.UTC().Format(time.DateOnly)
}

// week and month name the GFS periods of a date (ISO weeks, from Monday).
func week(day string) string {
	t, err := time.Parse(time.DateOnly, day)
	if err != nil {
		return day
	}
	y, w := t.ISOWeek()
	return fmt.Sprintf("%d-W%02d", y, w)
}

func month(day string) string {
	if len(day) >= 7 {
		return day[:7]
	}
	return day
}

// gfsRotate says whether a copy made on day starts a new chain: it falls
// in another GFS period than the job's latest point.
func gfsRotate(j catalog.Job, last catalog.Point, day string) bool {
	if !gfsOn(j) {
		return false
	}
	period := month
	if j.KeepWeekly > 0 {
		period = week
	}
	return period(pointDay(last)) != period(day)
}

// gfsArchive is an archived chain: its points, oldest first.
type gfsArchive struct {
	chain  []byte
	points []catalog.Point
}

func (a gfsArchive) day() string { return pointDay(a.points[0]) }

// gfsKeep returns the archives to keep: the first (oldest) archive of each
// of the newest keepWeekly weeks and keepMonthly months they fall in.
func gfsKeep(archives []gfsArchive, keepWeekly, keepMonthly int) map[string]bool {
	keep := map[string]bool{}
	for _, rule := range []struct {
		n      int
		period func(string) string
	}{{keepWeekly, week}, {keepMonthly, month}} {
		if rule.n <= 0 {
			continue
		}
		first := map[string]gfsArchive{} // period -> its oldest archive
		for _, a := range archives {
			p := rule.period(a.day())
			if cur, ok := first[p]; !ok || a.day() < cur.day() {
				first[p] = a
			}
		}
		periods := make([]string, 0, len(first))
		for p := range first {
			periods = append(periods, p)
		}
		sort.Sort(sort.Reverse(sort.StringSlice(periods)))
		for i, p := range periods {
			if i < rule.n {
				keep[string(first[p].chain)] = true
			}
		}
	}
	return keep
}

// applyGFS trims and expires a copy job's GFS archives after a session:
// an archive keeps only its full; an archive no week or month keeps goes.
// Points are deleted from the newest of a chain backward, so what is left
// of a chain always restores. It returns notes for the session.
func (s *Server) applyGFS(ctx context.Context, j catalog.Job, current []byte, log hclog.Logger) []string {
	if !gfsOn(j) || current == nil {
		return nil
	}
	var notes []string
	note := func(format string, args ...any) {
		msg := "gfs: " + fmt.Sprintf(format, args...)
		notes = append(notes, msg)
		log.Info(msg)
	}
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		note("not applied: %v", err)
		return notes
	}
	byChain := map[string][]catalog.Point{}
	for _, p := range pts {
		if !bytes.Equal(p.ChainID, current) {
			byChain[string(p.ChainID)] = append(byChain[string(p.ChainID)], p)
		}
	}
	var archives []gfsArchive
	for c, ps := range byChain {
		sort.Slice(ps, func(a, b int) bool { return ps[a].Sequence < ps[b].Sequence })
		archives = append(archives, gfsArchive{chain: []byte(c), points: ps})
	}
	keep := gfsKeep(archives, j.KeepWeekly, j.KeepMonthly)
	var drop []catalog.Point
	for _, a := range archives {
		if keep[string(a.chain)] {
			drop = append(drop, a.points[1:]...)
		} else {
			drop = append(drop, a.points...)
		}
	}
	if len(drop) == 0 {
		return notes
	}
	a, repoName, rc, err := s.holderClient(j)
	if err != nil {
		note("not applied: %v", err)
		return notes
	}
	ids := make([][]byte, len(drop))
	for i, p := range drop {
		ids[i] = p.FileID
	}
	resp, err := rc.DeletePoints(ctx, &repositoryv1.DeletePointsRequest{Repository: repoName, Backup: j.Name, PointIds: ids})
	if err != nil {
		note("deleting %d points on agent %s failed: %v", len(ids), a.Name, agentErr(a, "delete points", err))
		return notes
	}
	gone := map[string]bool{}
	for _, id := range ids {
		gone[string(id)] = true
	}
	err = s.store.Update(func(tx *catalog.Tx) error {
		all, err := tx.ListPoints(j.UID)
		if err != nil {
			return err
		}
		for _, p := range all {
			if gone[string(p.FileID)] || gone[string(p.MergedInto)] {
				if err := tx.DeletePoint(j.UID, p.FileID); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		note("the points are deleted on agent %s but the catalog could not forget them: %v", a.Name, err)
		return notes
	}
	note("kept %d archived fulls; deleted %d points (%d bytes) on agent %s", len(keep), len(ids), resp.Bytes, a.Name)
	return notes
}
