package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/schedule"
)

// fakeClock moves only when told. Each NewTimer reports the requested wait on waits, which
// also tells the test that the Runner finished a pass and went back to sleep.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	timers []*fakeTimer
	waits  chan time.Duration
}

type fakeTimer struct {
	c     chan time.Time
	at    time.Time
	clock *fakeClock
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan time.Duration, 100)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) NewTimer(d time.Duration) schedule.Timer {
	c.mu.Lock()
	t := &fakeTimer{c: make(chan time.Time, 1), at: c.now.Add(d), clock: c}
	if d <= 0 {
		t.c <- c.now
	} else {
		c.timers = append(c.timers, t)
	}
	c.mu.Unlock()
	c.waits <- d
	return t
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

func (t *fakeTimer) Stop() bool {
	c := t.clock
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(c.timers)
	c.timers = slices.DeleteFunc(c.timers, func(x *fakeTimer) bool { return x == t })
	return len(c.timers) < n
}

// Advance moves the clock and fires the timers that are due.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.timers = slices.DeleteFunc(c.timers, func(t *fakeTimer) bool {
		if t.at.After(c.now) {
			return false
		}
		t.c <- c.now
		return true
	})
}

// fakeJobs is a job store whose Start behaves like the controller's: a job whose run is
// still going is busy, and a started run becomes the job's anchor.
type fakeJobs struct {
	mu       sync.Mutex
	clock    *fakeClock
	jobs     map[string]*schedule.Job
	running  map[string]bool
	starts   []string // "name@offset" of each run begun
	attempts int      // Start calls, including busy ones
	t0       time.Time
	lagging  bool  // do not record runs as anchors, as a store that lags would
	listErr  error // returned by list
}

func newFakeJobs(clock *fakeClock) *fakeJobs {
	return &fakeJobs{clock: clock, jobs: map[string]*schedule.Job{}, running: map[string]bool{}, t0: clock.Now()}
}

func (f *fakeJobs) add(name, expr string, anchor time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.jobs[name] = &schedule.Job{Name: name, Schedule: schedule.MustParse(expr), Anchor: anchor}
}

func (f *fakeJobs) list() ([]schedule.Job, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.listErr != nil {
		return nil, f.listErr
	}
	var out []schedule.Job
	for _, j := range f.jobs {
		out = append(out, *j)
	}
	return out, nil
}

func (f *fakeJobs) start(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.attempts++
	if f.running[name] {
		return fmt.Errorf("start %s: %w", name, schedule.ErrBusy)
	}
	now := f.clock.Now()
	f.running[name] = true
	f.starts = append(f.starts, fmt.Sprintf("%s@%s", name, now.Sub(f.t0)))
	if !f.lagging {
		f.jobs[name].Anchor = now
	}
	return nil
}

func (f *fakeJobs) finish(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.running[name] = false
}

func (f *fakeJobs) finishAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.running)
}

func (f *fakeJobs) started() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.starts)
}

type harness struct {
	t     *testing.T
	clock *fakeClock
	jobs  *fakeJobs
	r     *schedule.Runner
}

var t0 = time.Date(2026, 3, 10, 0, 0, 0, 0, time.UTC)

func newHarness(t *testing.T, setup func(*fakeJobs)) *harness {
	t.Helper()
	clock := newFakeClock(t0)
	jobs := newFakeJobs(clock)
	if setup != nil {
		setup(jobs)
	}
	r := schedule.NewRunner(schedule.RunnerOptions{
		Jobs:    jobs.list,
		Start:   jobs.start,
		Clock:   clock,
		Logger:  hclog.New(&hclog.LoggerOptions{Output: hclog.DefaultOutput, Level: hclog.Off}),
		Retry:   time.Minute,
		MaxWait: 24 * time.Hour,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	return &harness{t: t, clock: clock, jobs: jobs, r: r}
}

// slept waits for the Runner to go back to sleep and checks how long it asked to sleep.
func (h *harness) slept(want time.Duration) {
	h.t.Helper()
	select {
	case got := <-h.clock.waits:
		if got != want {
			h.t.Fatalf("Runner sleeps %v, want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		h.t.Fatal("Runner did not go back to sleep")
	}
}

// quiet checks that the Runner is asleep: it did not wake up.
func (h *harness) quiet() {
	h.t.Helper()
	select {
	case got := <-h.clock.waits:
		h.t.Fatalf("Runner woke up unexpectedly and now sleeps %v", got)
	case <-time.After(20 * time.Millisecond):
	}
}

func (h *harness) wantStarts(want ...string) {
	h.t.Helper()
	if got := h.jobs.started(); !slices.Equal(got, want) {
		h.t.Fatalf("runs started = %v, want %v", got, want)
	}
}

func TestRunnerStartsOnSchedule(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) {
		f.add("hourly", "1h", t0)                          // created now
		f.add("quarter", "TZ=UTC 10,25,40,55 * * * *", t0) // cron, first at 00:10
	})
	h.slept(10 * time.Minute) // the earliest job, not a poll
	h.wantStarts()

	h.clock.Advance(9 * time.Minute)
	h.quiet()
	h.wantStarts()

	h.clock.Advance(time.Minute) // 00:10
	h.slept(15 * time.Minute)
	h.wantStarts("quarter@10m0s")

	h.jobs.finishAll()
	h.clock.Advance(15 * time.Minute) // 00:25
	h.slept(15 * time.Minute)
	h.jobs.finishAll()
	h.clock.Advance(15 * time.Minute) // 00:40
	h.slept(15 * time.Minute)
	h.jobs.finishAll()
	h.clock.Advance(15 * time.Minute) // 00:55
	h.slept(5 * time.Minute)
	h.jobs.finishAll()
	h.clock.Advance(5 * time.Minute) // 01:00
	h.slept(10 * time.Minute)
	h.wantStarts("quarter@10m0s", "quarter@25m0s", "quarter@40m0s", "quarter@55m0s", "hourly@1h0m0s")
}

func TestRunnerCatchUpOnceAfterDowntime(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) {
		// The controller was down for a day: the last runs were 24 hours ago.
		f.add("interval", "1h", t0.Add(-24*time.Hour))
		f.add("cron", "TZ=UTC 30 * * * *", t0.Add(-24*time.Hour-30*time.Minute))
	})
	h.slept(30 * time.Minute) // cron's 00:30, after both caught up
	if got := h.jobs.started(); len(got) != 2 {
		t.Fatalf("runs started after downtime = %v, want one of each job", got)
	}
	h.jobs.finishAll()

	h.clock.Advance(30 * time.Minute)
	h.slept(30 * time.Minute)
	h.jobs.finishAll()
	h.clock.Advance(30 * time.Minute)
	h.slept(30 * time.Minute)
	got := h.jobs.started()
	slices.Sort(got[:2])
	want := []string{"cron@0s", "interval@0s", "cron@30m0s", "interval@1h0m0s"}
	if !slices.Equal(got, want) {
		t.Fatalf("runs started = %v, want %v", got, want)
	}
}

func TestRunnerBusyJobNotStartedTwice(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) { f.add("slow", "1h", t0.Add(-time.Hour)) })
	h.slept(time.Hour)
	h.wantStarts("slow@0s")

	// The run takes about three hours: every wake meanwhile finds the job busy.
	h.clock.Advance(time.Hour)
	h.slept(time.Minute) // Retry, not a hot loop
	for range 119 {
		h.clock.Advance(time.Minute)
		h.slept(time.Minute)
	}
	h.wantStarts("slow@0s")
	if h.jobs.attempts != 121 {
		t.Fatalf("Start called %d times, want 121 (1 run, 120 busy retries)", h.jobs.attempts)
	}

	// The run ends between retries; the controller kicks the runner, which starts the job
	// once, at once.
	h.clock.Advance(30 * time.Second)
	h.jobs.finish("slow")
	h.r.Kick()
	h.slept(time.Hour)
	h.wantStarts("slow@0s", "slow@2h59m30s")
	h.r.Kick()
	h.slept(time.Hour)
	h.wantStarts("slow@0s", "slow@2h59m30s")
}

// A store that shows a run only when it ends must not make the runner start a job twice.
func TestRunnerRemembersRunsNotYetListed(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) {
		f.lagging = true
		f.add("job", "TZ=UTC @hourly", t0.Add(-time.Hour))
	})
	h.slept(time.Hour)
	h.jobs.finish("job")
	h.r.Kick()
	h.slept(time.Hour)
	h.r.Kick()
	h.slept(time.Hour)
	h.wantStarts("job@0s")
	if h.jobs.attempts != 1 {
		t.Fatalf("Start called %d times, want 1", h.jobs.attempts)
	}
	h.jobs.finish("job")
	h.clock.Advance(time.Hour)
	h.slept(time.Hour)
	h.wantStarts("job@0s", "job@1h0m0s")
}

func TestRunnerKickPicksUpNewJob(t *testing.T) {
	h := newHarness(t, nil)
	h.slept(24 * time.Hour) // MaxWait: nothing to do
	h.clock.Advance(10 * time.Minute)
	h.quiet()

	h.jobs.add("new", "2h", h.clock.Now())
	h.r.Kick()
	h.slept(2 * time.Hour)
	h.wantStarts()

	h.jobs.add("now", "6h", time.Time{}) // never ran, no creation time: due at once
	h.r.Kick()
	h.slept(2 * time.Hour)
	h.wantStarts("now@10m0s")

	h.clock.Advance(2 * time.Hour)
	h.slept(2 * time.Hour)
	h.wantStarts("now@10m0s", "new@2h10m0s")
}

func TestRunnerRetriesAfterListError(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) {
		f.listErr = errors.New("catalog closed")
		f.add("job", "1h", t0.Add(-time.Hour))
	})
	h.slept(time.Minute)
	h.wantStarts()
	h.jobs.mu.Lock()
	h.jobs.listErr = nil
	h.jobs.mu.Unlock()
	h.clock.Advance(time.Minute)
	h.slept(time.Hour)
	h.wantStarts("job@1m0s")
}

func TestRunnerMaxWaitBoundsSleep(t *testing.T) {
	clock := newFakeClock(t0)
	jobs := newFakeJobs(clock)
	jobs.add("daily", "24h", t0)
	r := schedule.NewRunner(schedule.RunnerOptions{Jobs: jobs.list, Start: jobs.start, Clock: clock})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	if got := <-clock.waits; got != 5*time.Minute {
		t.Fatalf("default MaxWait: Runner sleeps %v, want 5m", got)
	}
}

func TestRunnerBusyRetriesWithoutKick(t *testing.T) {
	h := newHarness(t, func(f *fakeJobs) {
		f.add("job", "1h", t0.Add(-time.Hour))
		f.running["job"] = true // started by hand, still going
	})
	h.slept(time.Minute)
	h.wantStarts()
	h.jobs.finish("job")
	h.clock.Advance(time.Minute)
	h.slept(time.Hour)
	h.wantStarts("job@1m0s")
	if h.jobs.attempts != 2 {
		t.Fatalf("Start called %d times, want 2", h.jobs.attempts)
	}
}
