package schedule

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ErrBusy is what a Runner's Start callback returns when the job's previous run is still
// going. The Runner tries again after RunnerOptions.Retry, or sooner when Kick is called
// (call it when a run ends).
var ErrBusy = errors.New("previous run still going")

// Job is what a Runner needs to know about one scheduled job.
type Job struct {
	Name     string
	Schedule Schedule
	// Anchor is the start of the job's last run, or its creation time if it never ran
	// (see the Anchor function).
	Anchor time.Time
}

// Clock is the time source of a Runner; tests replace it so they need not sleep.
type Clock interface {
	Now() time.Time
	NewTimer(d time.Duration) Timer
}

// Timer is the part of *time.Timer a Runner uses.
type Timer interface {
	C() <-chan time.Time
	Stop() bool
}

// SystemClock is the Clock of the time package.
var SystemClock Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) NewTimer(d time.Duration) Timer { return systemTimer{time.NewTimer(d)} }

type systemTimer struct{ t *time.Timer }

func (t systemTimer) C() <-chan time.Time { return t.t.C }
func (t systemTimer) Stop() bool          { return t.t.Stop() }

// RunnerOptions configure a Runner. Jobs and Start are required.
type RunnerOptions struct {
	// Jobs lists the scheduled jobs; it is called on every wake.
	Jobs func() ([]Job, error)
	// Start begins a run of the named job and returns without waiting for it to finish.
	// It returns ErrBusy (possibly wrapped) if the job's previous run is still going.
	Start func(name string) error
	// Clock defaults to SystemClock.
	Clock Clock
	// Logger defaults to a null logger.
	Logger hclog.Logger
	// Retry is how long to wait before trying a job again after Start failed or reported
	// ErrBusy, and before listing again after Jobs failed. Default 1m.
	Retry time.Duration
	// MaxWait bounds each sleep, so that a wall clock step or a suspended host delays a run
	// by at most this much. Default 5m.
	MaxWait time.Duration
}

// Runner starts jobs when they are due. It sleeps until the earliest next scheduled time of
// any job (or until Kick), starts each due job once however many of its times were missed,
// and does not start a job whose Start reports ErrBusy until a later wake.
type Runner struct {
	o    RunnerOptions
	kick chan struct{}

	// Owned by the Run goroutine.
	started map[string]time.Time // when Run last started a job, until Jobs reports it
	retryAt map[string]time.Time // not before this, after Start failed
}

// NewRunner returns a Runner; call Run to start it.
func NewRunner(o RunnerOptions) *Runner {
	if o.Jobs == nil || o.Start == nil {
		panic("schedule: NewRunner needs Jobs and Start")
	}
	if o.Clock == nil {
		o.Clock = SystemClock
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Retry <= 0 {
		o.Retry = time.Minute
	}
	if o.MaxWait <= 0 {
		o.MaxWait = 5 * time.Minute
	}
	return &Runner{
		o:       o,
		kick:    make(chan struct{}, 1),
		started: map[string]time.Time{},
		retryAt: map[string]time.Time{},
	}
}

// Kick makes the Runner list the jobs again now, e.g. after a job was added, changed or
// deleted, or after a run ended; jobs waiting to retry are tried at once. It does not block.
func (r *Runner) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run starts due jobs until ctx is done. Call it once.
func (r *Runner) Run(ctx context.Context) {
	for ctx.Err() == nil {
		t := r.o.Clock.NewTimer(r.tick())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-r.kick:
			t.Stop()
			clear(r.retryAt) // something changed, e.g. a busy job's run ended
		}
	}
}

// tick starts the jobs due now and returns how long to sleep.
func (r *Runner) tick() time.Duration {
	now := r.o.Clock.Now()
	jobs, err := r.o.Jobs()
	if err != nil {
		r.o.Logger.Error("list scheduled jobs", "error", err)
		return min(r.o.Retry, r.o.MaxWait)
	}
	wake := now.Add(r.o.MaxWait)
	seen := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		seen[j.Name] = true
		if next := r.consider(j, now); !next.IsZero() && next.Before(wake) {
			wake = next
		}
	}
	for name := range r.started {
		if !seen[name] {
			delete(r.started, name)
		}
	}
	for name := range r.retryAt {
		if !seen[name] {
			delete(r.retryAt, name)
		}
	}
	return max(wake.Sub(now), 0)
}

// consider starts j if it is due and returns when it next needs a look.
func (r *Runner) consider(j Job, now time.Time) time.Time {
	anchor := j.Anchor
	if st, ok := r.started[j.Name]; ok {
		if st.After(anchor) {
			anchor = st // Jobs does not show the run we started yet
		} else {
			delete(r.started, j.Name)
		}
	}
	due, next := j.Schedule.Due(anchor, now)
	if !due {
		return next
	}
	if at, ok := r.retryAt[j.Name]; ok && now.Before(at) {
		return at
	}
	err := r.o.Start(j.Name)
	switch {
	case err == nil:
		r.o.Logger.Debug("started scheduled job", "job", j.Name)
		r.started[j.Name] = now
		delete(r.retryAt, j.Name)
		return j.Schedule.Next(now)
	case errors.Is(err, ErrBusy):
		r.o.Logger.Debug("scheduled job still running, will retry", "job", j.Name, "retry", r.o.Retry)
	default:
		r.o.Logger.Warn("start scheduled job", "job", j.Name, "error", err, "retry", r.o.Retry)
	}
	r.retryAt[j.Name] = now.Add(r.o.Retry)
	return r.retryAt[j.Name]
}
