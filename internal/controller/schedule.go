package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/ferrybackup/ferry/internal/catalog"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	"github.com/ferrybackup/ferry/internal/schedule"
)

// How the scheduler names what it runs besides a job's own schedule.
const (
	healthPrefix = "health:"    // a copy job's health check
	pollPrefix   = "immediate:" // an immediate copy job looking for new source points
)

// immediatePoll is how often an immediate copy job looks for source points
// made outside this controller's sessions (a backup job's success starts
// its immediate copies at once).
var immediatePoll = schedule.MustParse("1m")

// fullCheckEvery is how old the last full health check may be before the
// next health check is a full verify instead of a keyless one.
const fullCheckEvery = 7 * 24 * time.Hour

// RunScheduler runs job schedules, immediate copies and health checks
// until ctx ends. A job due while the controller was down runs once when it
// starts, not once per missed time; a job whose session is still running is
// not started again.
func (s *Server) RunScheduler(ctx context.Context) {
	r := schedule.NewRunner(schedule.RunnerOptions{
		Jobs:   s.scheduled,
		Start:  s.startScheduled,
		Logger: s.log.Named("scheduler"),
		Retry:  30 * time.Second,
	})
	s.mu.Lock()
	s.sched = r
	s.mu.Unlock()
	r.Run(ctx)
}

// kick makes the scheduler look at the jobs again (after a change).
func (s *Server) kick() {
	s.mu.Lock()
	r := s.sched
	s.mu.Unlock()
	if r != nil {
		r.Kick()
	}
}

// scheduled lists what the scheduler runs, with what each counts from.
func (s *Server) scheduled() ([]schedule.Job, error) {
	jobs, err := s.store.ListJobs()
	if err != nil {
		return nil, err
	}
	var out []schedule.Job
	for _, j := range jobs {
		last, lastHealth := s.lastStarts(j.UID)
		if j.Schedule != "" && j.Mode != modeImmediate {
			if sch, err := schedule.Parse(j.Schedule); err == nil {
				out = append(out, schedule.Job{Name: j.Name, Schedule: sch, Anchor: schedule.Anchor(last, j.CreatedAt)})
			}
		}
		if j.Kind == kindCopy && j.Mode == modeImmediate {
			out = append(out, schedule.Job{Name: pollPrefix + j.Name, Schedule: immediatePoll, Anchor: schedule.Anchor(s.lastPoll(j.UID), j.CreatedAt)})
		}
		if j.Kind == kindCopy && j.HealthCheck != "" {
			if sch, err := schedule.Parse(j.HealthCheck); err == nil {
				out = append(out, schedule.Job{Name: healthPrefix + j.Name, Schedule: sch, Anchor: schedule.Anchor(lastHealth, j.CreatedAt)})
			}
		}
	}
	return out, nil
}

// lastStarts returns when a job's last session and last health check
// started.
func (s *Server) lastStarts(jobUID string) (last, health time.Time) {
	ss, err := s.store.ListSessions(jobUID)
	if err != nil {
		return
	}
	for _, sess := range ss {
		t := &last
		if isHealthCheck(sess) {
			t = &health
		}
		if sess.StartedAt.After(*t) {
			*t = sess.StartedAt
		}
	}
	return
}

func (s *Server) lastPoll(jobUID string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polled[jobUID]
}

// startScheduled starts what the scheduler found due.
func (s *Server) startScheduled(name string) error {
	var err error
	switch {
	case strings.HasPrefix(name, healthPrefix):
		var j catalog.Job
		if j, err = s.job(strings.TrimPrefix(name, healthPrefix)); err == nil {
			_, err = s.startMode(j, false, s.healthMode(j))
		}
	case strings.HasPrefix(name, pollPrefix):
		var j catalog.Job
		if j, err = s.job(strings.TrimPrefix(name, pollPrefix)); err == nil {
			s.mu.Lock()
			s.polled[j.UID] = time.Now()
			s.mu.Unlock()
			err = s.copyIfNew(j)
		}
	default:
		var j catalog.Job
		if j, err = s.job(name); err == nil {
			_, err = s.start(j, false)
		}
	}
	if errors.Is(err, errBusy) {
		return fmt.Errorf("%w: %v", schedule.ErrBusy, err)
	}
	return err
}

// healthMode chooses a keyless check, or a full one when the last
// successful full check is older than fullCheckEvery.
func (s *Server) healthMode(j catalog.Job) string {
	ss, err := s.store.ListSessions(j.UID)
	if err != nil {
		return sessHealthKeyless
	}
	for _, sess := range ss {
		if sess.Mode == sessHealthFull && sess.Result == resultSuccess && time.Since(sess.StartedAt) < fullCheckEvery {
			return sessHealthKeyless
		}
	}
	return sessHealthFull
}

// afterPoint runs when a session committed a point: the immediate copy
// jobs of a backup job start, and an immediate copy job goes on with the
// next source point it has not copied yet.
func (s *Server) afterPoint(j catalog.Job) {
	jobs, err := s.store.ListJobs()
	if err != nil {
		return
	}
	for _, c := range jobs {
		if c.Kind != kindCopy || c.Mode != modeImmediate {
			continue
		}
		mine := c.UID == j.UID
		from := j.Kind == kindBackup && c.FromJob == j.Name && c.FromAgent == j.Agent && c.FromRepository == j.Repository
		if !mine && !from {
			continue
		}
		// Called from a running session (counted in s.wg), so Close waits
		// for this too.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if s.ctx.Err() != nil {
				return
			}
			if err := s.copyIfNew(c); err != nil && !errors.Is(err, errBusy) {
				s.log.Warn("immediate copy not started", "job", c.Name, "error", err)
			}
		}()
	}
}

// copyIfNew starts a session of an immediate copy job when its source has
// a point it has not copied, so that polling leaves no empty sessions. A
// job that is running picks the point up when its session ends.
func (s *Server) copyIfNew(j catalog.Job) error {
	src, err := s.agent(j.FromAgent, "source")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.o.AgentTimeout)
	defer cancel()
	srcPts, _, err := s.copySource(ctx, j, src)
	if err != nil {
		return err
	}
	// Checked again once the job is idle: a session that just ended may
	// have copied the point already.
	_, err = s.startIf(j, false, sessionMode(j), func() bool {
		mine, err := s.store.ListPoints(j.UID)
		return err == nil && nextToCopy(j, srcPts, mine) != nil
	})
	return err
}

// nextToCopy is the source point a copy session copies, or nil when the
// job is up to date. A periodic job copies the latest point. An immediate
// job copies, in order, the points made after the last one it copied (the
// latest when it copied none, or when that one is gone at the source).
func nextToCopy(j catalog.Job, srcPts, mine []catalog.Point) *catalog.Point {
	p := latest(srcPts)
	if p == nil {
		return nil
	}
	last := latest(mine)
	if last == nil {
		return p
	}
	if j.Mode == modeImmediate {
		sorted := append([]catalog.Point(nil), srcPts...)
		sort.SliceStable(sorted, func(a, b int) bool { return sorted[a].Created.Before(sorted[b].Created) })
		for i, sp := range sorted {
			if bytes.Equal(sp.FileID, last.SourceFileID) {
				if i+1 < len(sorted) {
					return &sorted[i+1]
				}
				return nil
			}
		}
		return p
	}
	if bytes.Equal(last.SourceFileID, p.FileID) {
		return nil
	}
	return p
}

// nextRun is when a job's schedule runs it next (zero without one).
func (s *Server) nextRun(j catalog.Job) time.Time {
	if j.Schedule == "" || j.Mode == modeImmediate {
		return time.Time{}
	}
	sch, err := schedule.Parse(j.Schedule)
	if err != nil {
		return time.Time{}
	}
	last, _ := s.lastStarts(j.UID)
	now := time.Now()
	due, next := sch.Due(schedule.Anchor(last, j.CreatedAt), now)
	if due {
		return now
	}
	return next
}

// runHealthCheck verifies the latest point of a copy job at its target:
// keyless (structure, checksums, footer hash), or fully with the job's
// keys handed to the target for this call only. Problems fail the session.
func (s *Server) runHealthCheck(ctx context.Context, ls *liveSession, j catalog.Job) error {
	a, repoName, err := s.holder(j)
	if err != nil {
		return err
	}
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		return err
	}
	p := latest(pts)
	if p == nil {
		return fmt.Errorf("job %s has no restore point to check yet", j.Name)
	}
	r, err := s.verifyAt(ctx, j, a, repoName, p.FileID, ls.sess.Mode == sessHealthKeyless)
	if err != nil {
		return err
	}
	ls.progress(&commonv1.SessionStats{BytesRead: r.Bytes, Records: r.Records}, 0)
	ls.mu.Lock()
	ls.sess.FileID, ls.sess.Sequence = p.FileID, p.Sequence
	ls.mu.Unlock()
	if len(r.Problems) > 0 {
		return fmt.Errorf("health check of point %x (sequence %d) found %d problems: %s", p.FileID, p.Sequence, len(r.Problems), strings.Join(r.Problems, "; "))
	}
	return nil
}
