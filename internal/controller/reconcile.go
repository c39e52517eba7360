package controller

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"github.com/hashicorp/go-hclog"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// Reconcile compares the points each job's agent holds with the catalog,
// as a controller does when it starts: a point committed on disk but not
// recorded (the controller died in between) is adopted, with its session
// secret recovered from the file's key table under the job's key; a point
// the catalog lists but the agent no longer holds is reported; what the
// agent's own recovery did (partial files removed, journals replayed) is
// collected. Each job's findings are logged and added to the notes of its
// latest session (the one cut off by the restart, if any), where
// `session show` shows them. It returns every finding.
func (s *Server) Reconcile(ctx context.Context) []string {
	jobs, err := s.store.ListJobs()
	if err != nil {
		s.log.Warn("reconcile: cannot read the jobs", "error", err)
		return []string{fmt.Sprintf("cannot read the jobs: %v", err)}
	}
	var report []string
	for _, j := range jobs {
		notes := s.reconcileJob(ctx, j, s.log.With("job", j.Name))
		if len(notes) == 0 {
			continue
		}
		report = append(report, notes...)
		if err := s.noteLatestSession(j, notes); err != nil {
			s.log.Warn("reconcile: could not record the findings in the job's latest session", "job", j.Name, "error", err)
		}
	}
	return report
}

// noteLatestSession appends notes to the newest finished session of a job.
func (s *Server) noteLatestSession(j catalog.Job, notes []string) error {
	ss, err := s.store.ListSessions(j.UID)
	if err != nil {
		return err
	}
	var last *catalog.Session
	for i := range ss {
		if ss[i].Result != resultRunning && (last == nil || ss[i].StartedAt.After(last.StartedAt)) {
			last = &ss[i]
		}
	}
	if last == nil {
		return nil
	}
	s.mu.Lock()
	_, running := s.sessions[last.ID]
	s.mu.Unlock()
	if running {
		return nil
	}
	last.Notes = append(last.Notes, notes...)
	return s.store.PutSession(*last)
}

// reconcileJob brings one job's catalog points in line with what its
// agent holds, and returns (and logs) what it found and did.
func (s *Server) reconcileJob(ctx context.Context, j catalog.Job, log hclog.Logger) []string {
	var report []string
	say := func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		report = append(report, msg)
		log.Warn("reconcile: " + msg)
	}
	a, repoName, rc, err := s.holderClient(j)
	if err != nil {
		say("job %s: %v", j.Name, err)
		return report
	}
	list, err := rc.ListPoints(ctx, &repositoryv1.ListPointsRequest{Repository: repoName, Backup: j.Name, TakeRecoveryNotes: true})
	if err != nil && status.Code(err) != codes.NotFound {
		say("job %s: could not list its points on agent %s: %v", j.Name, a.Name, status.Convert(err).Message())
		return report
	}
	for _, n := range list.GetRecoveryNotes() {
		say("agent %s: %s", a.Name, n)
	}
	onDisk := map[string]*commonv1.Point{}
	for _, p := range list.GetPoints() {
		if p.Damaged == "" {
			onDisk[string(p.FileId)] = p
		}
	}
	known, err := s.store.ListPoints(j.UID)
	if err != nil {
		say("job %s: %v", j.Name, err)
		return report
	}
	inCatalog := map[string]bool{}
	for _, p := range known {
		inCatalog[string(p.FileID)] = true
		if onDisk[string(p.FileID)] != nil {
			continue
		}
		if gfsOn(j) && !bytes.Equal(p.ChainID, newestChain(onDisk)) {
			// GFS deleted it from an archived chain, and the controller
			// stopped before it forgot the point.
			if err := s.store.DeletePoint(j.UID, p.FileID); err != nil {
				say("job %s: point %x of a GFS archive is gone from agent %s, and forgetting it failed: %v", j.Name, p.FileID, a.Name, err)
			} else {
				say("job %s: point %x of a GFS archive is gone from agent %s; forgotten", j.Name, p.FileID, a.Name)
			}
			continue
		}
		if into := mergedInto(p, onDisk); into != nil {
			if err := s.recordMerge(j, p, into); err != nil {
				say("job %s: point %x was merged into %x by retention, and recording it failed: %v", j.Name, p.FileID, into.FileId, err)
			} else {
				say("job %s: point %x was merged into point %x by retention (the controller had not recorded it)", j.Name, p.FileID, into.FileId)
			}
			continue
		}
		say("job %s: point %x is in the catalog but agent %s no longer holds it", j.Name, p.FileID, a.Name)
	}
	var orphans []*commonv1.Point
	for fid, p := range onDisk {
		if !inCatalog[fid] {
			orphans = append(orphans, p)
		}
	}
	if len(orphans) == 0 {
		return report
	}
	// Oldest first, so a chain's points are adopted parent before child.
	sort.Slice(orphans, func(a, b int) bool { return orphans[a].Sequence < orphans[b].Sequence })
	kt, err := rc.GetKeyTables(ctx, &repositoryv1.GetKeyTablesRequest{Repository: repoName, Backup: j.Name})
	if err != nil {
		say("job %s: could not read key tables on agent %s: %v", j.Name, a.Name, status.Convert(err).Message())
		return report
	}
	tables := map[string][]byte{}
	for _, t := range kt.Tables {
		tables[string(t.FileId)] = t.KeyTable
	}
	for _, p := range orphans {
		if err := s.adopt(j, a, repoName, p, tables[string(p.FileId)]); err != nil {
			say("job %s: point %x on agent %s is not in the catalog and could not be adopted: %v", j.Name, p.FileId, a.Name, err)
			continue
		}
		say("job %s: adopted point %s (sequence %d) found on agent %s but missing from the catalog", j.Name, hex.EncodeToString(p.FileId), p.Sequence, a.Name)
	}
	return report
}

// adopt records a point found on disk, recovering its session secret
// from its key table with the job's current key. For a copy job the source
// point it came from is not known, so the job's next copy is a full.
func (s *Server) adopt(j catalog.Job, a catalog.Agent, repoName string, p *commonv1.Point, table []byte) error {
	pt := s.pointRecord(j, p, a.Name, repoName)
	var secret catalog.SessionSecret
	if p.Encrypted {
		if table == nil {
			return fmt.Errorf("no key table")
		}
		kt, err := format.ParseKeyTable("adopted", 0, table, uint32(len(table)/2))
		if err != nil {
			return err
		}
		found := false
		for _, e := range kt.Entries {
			switch {
			case e.Type == format.EntryTransit && j.Encryption == encKMS:
				te, err := keys.ParseTransitEntry(e.Data)
				if err != nil {
					return err
				}
				pt.Wrapped, pt.WrappedKey = te.Ciphertext, te.Key
				pt.KeyRefs = []string{te.Ref()}
				found = true
			case e.Type == format.EntryPassword && j.Encryption == encPass:
				pe, err := keys.ParsePasswordEntry(e.Data)
				if err != nil {
					return err
				}
				pk, err := s.passwordKey(j)
				if err != nil {
					return err
				}
				sess, err := pk.Unwrap(pe, e.Secret)
				if err != nil {
					continue // wrapped under an older password of the job
				}
				secret = secretRecord(p.FileId, sess)
				found = true
			}
			if found {
				break
			}
		}
		if !found {
			return fmt.Errorf("none of its key table entries opens with the job's current key")
		}
	}
	return s.store.Update(func(tx *catalog.Tx) error {
		if err := tx.PutPoint(*pt); err != nil {
			return err
		}
		if len(secret.Secret) > 0 {
			if err := tx.PutSessionSecret(j.UID, secret); err != nil {
				return err
			}
		}
		// The session that made the point would have moved the job onto
		// its chain; do it now, so the next session continues that chain.
		cur, err := tx.GetJob(j.Name)
		if err != nil || cur.UID != j.UID {
			return nil
		}
		if len(cur.ChainID) == 0 || (cur.NewChainPending && !bytes.Equal(cur.ChainID, pt.ChainID)) {
			cur.ChainID, cur.BackupID, cur.NewChainPending = pt.ChainID, pt.BackupID, false
			_, err = tx.PutJob(cur)
		}
		return err
	})
}

// mergedInto finds, for a catalog point its agent no longer holds, the
// merged full that took it over: a full of the same chain with a higher
// sequence (retention merges a chain's first point into the next one).
func mergedInto(p catalog.Point, onDisk map[string]*commonv1.Point) *commonv1.Point {
	var into *commonv1.Point
	for _, d := range onDisk {
		if bytes.Equal(d.ChainId, p.ChainID) && d.Kind == commonv1.PointKind_POINT_KIND_FULL && d.Sequence > p.Sequence &&
			(into == nil || d.Sequence < into.Sequence) {
			into = d
		}
	}
	return into
}

// recordMerge records in the catalog a merge the agent did: the point is
// hidden but keeps its secret for the merged file, which is now a full.
func (s *Server) recordMerge(j catalog.Job, p catalog.Point, into *commonv1.Point) error {
	return s.store.Update(func(tx *catalog.Tx) error {
		all, err := tx.ListPoints(j.UID)
		if err != nil {
			return err
		}
		for _, q := range all {
			switch {
			case bytes.Equal(q.FileID, p.FileID), bytes.Equal(q.MergedInto, p.FileID):
				q.MergedInto = into.FileId
			case bytes.Equal(q.FileID, into.FileId):
				q.Kind, q.ParentID, q.Size = "full", nil, into.Size
			default:
				continue
			}
			if err := tx.PutPoint(q); err != nil {
				return err
			}
		}
		return nil
	})
}

// newestChain is the chain of the newest point an agent holds.
func newestChain(onDisk map[string]*commonv1.Point) []byte {
	var newest *commonv1.Point
	for _, d := range onDisk {
		if newest == nil || d.CreatedUnixNano > newest.CreatedUnixNano {
			newest = d
		}
	}
	if newest == nil {
		return nil
	}
	return newest.ChainId
}
