package daemon

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// runCheck runs a health check of a copy job and returns its session.
func runCheck(t *testing.T, c controllerv1.ControllerServiceClient, name string, full bool) *controllerv1.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.RunJob(ctx, &controllerv1.RunJobRequest{Name: name, Wait: true, HealthCheck: !full, HealthCheckFull: full})
	if err != nil {
		t.Fatal(err)
	}
	var last *controllerv1.Session
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return last
		}
		if err != nil {
			t.Fatalf("health check of %s: %v", name, err)
		}
		last = resp.Session
	}
}

func createJob(t *testing.T, c controllerv1.ControllerServiceClient, spec *controllerv1.JobSpec) {
	t.Helper()
	if _, err := c.CreateJob(context.Background(), &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
		t.Fatalf("create job %s: %v", spec.Name, err)
	}
}

func points(t *testing.T, c controllerv1.ControllerServiceClient, job string) []*commonv1.Point {
	t.Helper()
	r, err := c.ListPoints(context.Background(), &controllerv1.ListPointsRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	pts := r.Points
	sort.Slice(pts, func(a, b int) bool { return pts[a].CreatedUnixNano < pts[b].CreatedUnixNano })
	return pts
}

func snapshot(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
}

// TestImmediateAndPeriodicCopies: three source points made in quick
// succession are copied by an immediate copy job, on its own, as three
// target points in order (each restores to the source as it was); a
// periodic copy job run afterwards copies only the latest, and running it
// again copies nothing.
func TestImmediateAndPeriodicCopies(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 21, datagen.TreeOptions{Size: 6 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, BlockSize: 256 << 10})
	copyJob := func(name, mode string) *controllerv1.JobSpec {
		return &controllerv1.JobSpec{Name: name, Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("copy pw"), Mode: mode}
	}
	createJob(t, c, copyJob("now", "immediate"))
	createJob(t, c, copyJob("nightly", "periodic"))

	snaps := make([]string, 3)
	for i := range snaps {
		if i > 0 {
			if _, err := datagen.MutateTree(src, uint64(30+i)); err != nil {
				t.Fatal(err)
			}
		}
		runJob(t, c, "site")
		snaps[i] = filepath.Join(t.TempDir(), "snap")
		snapshot(t, src, snaps[i])
	}

	// Nobody runs "now": the controller does, once per new source point.
	deadline := time.Now().Add(90 * time.Second)
	for len(points(t, c, "now")) < 3 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	got := points(t, c, "now")
	if len(got) != 3 {
		t.Fatalf("the immediate copy job has %d points; want 3", len(got))
	}
	for i, p := range got {
		if p.Sequence != uint32(i+1) {
			t.Errorf("point %d has sequence %d", i, p.Sequence)
		}
		to := filepath.Join(t.TempDir(), "r")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "now", PointId: p.FileId, Agent: "target", Path: to}); err != nil {
			t.Fatal(err)
		}
		datagen.SameTree(t, snaps[i], to)
	}
	ss, _ := c.ListSessions(ctx, &controllerv1.ListSessionsRequest{Job: "now"})
	if len(ss.Sessions) != 3 {
		t.Errorf("the immediate job ran %d sessions; want 3 (one per point, none empty)", len(ss.Sessions))
	}

	// Periodic: the latest point only.
	runJob(t, c, "nightly")
	got = points(t, c, "nightly")
	if len(got) != 1 {
		t.Fatalf("the periodic copy job has %d points; want 1", len(got))
	}
	to := filepath.Join(t.TempDir(), "r")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "nightly", Agent: "target", Path: to}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, snaps[2], to)
	runJob(t, c, "nightly")
	if n := len(points(t, c, "nightly")); n != 1 {
		t.Fatalf("a second periodic run with nothing new made a point: %d points", n)
	}
}

// TestStatusAndHealthCheck: `status` reports agents (and one that is down),
// jobs with their points, size, last result and next run; a health check
// passes, then detects a flipped byte in the latest point at the target,
// fails as a session and shows in status.
func TestStatusAndHealthCheck(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 22, datagen.TreeOptions{Size: 6 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, Schedule: "6h"})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw"), HealthCheck: "@daily"})
	// The 6h schedule counts from the job's creation: nothing is due now.
	started := time.Now()
	runJob(t, c, "site")
	runJob(t, c, "offsite")

	st, err := c.GetStatus(ctx, &controllerv1.GetStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Agents) != 2 || !st.Agents[0].Reachable || !st.Agents[1].Reachable || st.Agents[0].Version == "" || st.Agents[0].LastSeenUnixNano == 0 {
		t.Fatalf("agents: %v", st.Agents)
	}
	jobs := map[string]*controllerv1.JobStatus{}
	for _, j := range st.Jobs {
		jobs[j.Name] = j
	}
	site, off := jobs["site"], jobs["offsite"]
	if site == nil || off == nil || site.Points != 1 || off.Points != 1 || off.SizeBytes <= 0 ||
		off.LastSession.GetResult() != controllerv1.SessionResult_SESSION_RESULT_SUCCESS {
		t.Fatalf("jobs: %v", st.Jobs)
	}
	next := time.Unix(0, site.NextRunUnixNano)
	if d := next.Sub(started); d < 6*time.Hour-time.Minute || d > 6*time.Hour+time.Minute {
		t.Errorf("site runs next at %v, %v after its last run; want 6h", next, d)
	}

	if s := runCheck(t, c, "offsite", false); s.Result != controllerv1.SessionResult_SESSION_RESULT_SUCCESS || s.Mode != "health-check keyless" {
		t.Fatalf("keyless health check of an intact point: %+v", s)
	}
	if s := runCheck(t, c, "offsite", true); s.Result != controllerv1.SessionResult_SESSION_RESULT_SUCCESS || s.Mode != "health-check full" {
		t.Fatalf("full health check of an intact point: %+v", s)
	}

	// One flipped byte in the middle of the target's file.
	files, _ := filepath.Glob(filepath.Join(env.Dir, "target", "repos", "local", "backups", "offsite", "*", "*.ferry"))
	if len(files) != 1 {
		t.Fatalf("target files: %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x20
	if err := os.WriteFile(files[0], b, 0o600); err != nil {
		t.Fatal(err)
	}
	bad := runCheck(t, c, "offsite", false)
	if bad.Result != controllerv1.SessionResult_SESSION_RESULT_FAILED || !strings.Contains(bad.Error, "problems") {
		t.Fatalf("health check of a damaged point: %+v", bad)
	}
	st, _ = c.GetStatus(ctx, &controllerv1.GetStatusRequest{})
	for _, j := range st.Jobs {
		if j.Name == "offsite" {
			h := j.LastHealthCheck
			if h.GetId() != bad.Id || h.GetResult() != controllerv1.SessionResult_SESSION_RESULT_FAILED {
				t.Fatalf("status shows the last health check as %+v", h)
			}
			if j.LastSession.GetMode() != "default" {
				t.Errorf("status's last session of offsite is a health check: %+v", j.LastSession)
			}
		}
	}

	// An agent that is down shows as unreachable, with why.
	env.Target.Stop()
	st, _ = c.GetStatus(ctx, &controllerv1.GetStatusRequest{})
	for _, a := range st.Agents {
		if want := a.Agent.Name == "source"; a.Reachable != want {
			t.Errorf("agent %s reachable = %v", a.Agent.Name, a.Reachable)
		}
		if a.Agent.Name == "target" && (a.Error == "" || a.LastSeenUnixNano == 0) {
			t.Errorf("the stopped target: %+v", a)
		}
	}
}

// TestScheduleCatchesUpOnce: a job on an hourly schedule whose last run was
// five hours ago (the controller was down) runs once when the controller
// starts, not five times, and then waits for its next time.
func TestScheduleCatchesUpOnce(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 23, datagen.TreeOptions{Size: 2 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, Schedule: "1h"})
	env.Stop()

	// What a controller down for five hours leaves: the last run long ago.
	store, err := catalog.Open(filepath.Join(dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := store.GetJob("site")
	old := time.Now().Add(-5 * time.Hour).UTC()
	if err := store.PutSession(catalog.Session{ID: catalog.NewID(), Job: j.Name, JobUID: j.UID, Kind: j.Kind, Mode: "default",
		Result: "success", StartedAt: old, EndedAt: old.Add(time.Minute)}); err != nil {
		t.Fatal(err)
	}
	store.Close()

	env, err = StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c = devClient(t, env)
	count := func() (n int, done bool) {
		ss, err := c.ListSessions(ctx, &controllerv1.ListSessionsRequest{Job: "site"})
		if err != nil {
			t.Fatal(err)
		}
		done = true
		for _, s := range ss.Sessions {
			if s.StartedUnixNano > old.UnixNano() {
				n++
				done = done && s.Result != controllerv1.SessionResult_SESSION_RESULT_RUNNING
			}
		}
		return n, done
	}
	deadline := time.Now().Add(60 * time.Second)
	for n, done := count(); (n == 0 || !done) && time.Now().Before(deadline); n, done = count() {
		time.Sleep(50 * time.Millisecond)
	}
	// Give a burst the time to show itself.
	time.Sleep(2 * time.Second)
	if n, _ := count(); n != 1 {
		t.Fatalf("%d sessions after five missed hourly runs; want 1", n)
	}
	st, _ := c.GetStatus(ctx, &controllerv1.GetStatusRequest{})
	for _, js := range st.Jobs {
		if next := time.Unix(0, js.NextRunUnixNano); js.Name == "site" && time.Until(next) < 30*time.Minute {
			t.Errorf("next run at %v: the missed runs are not caught up one by one", next)
		}
	}
}

// TestRunningSettingsRefused: schedules, modes, retention and health
// checks that cannot work are refused when a job is created, with the
// reason.
func TestRunningSettingsRefused(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := t.TempDir()
	backup := func(mod func(*controllerv1.JobSpec)) *controllerv1.JobSpec {
		s := &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src}
		mod(s)
		return s
	}
	cp := func(mod func(*controllerv1.JobSpec)) *controllerv1.JobSpec {
		s := &controllerv1.JobSpec{Name: "off", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local"}
		mod(s)
		return s
	}
	createJob(t, c, backup(func(*controllerv1.JobSpec) {}))
	for _, tc := range []struct {
		spec *controllerv1.JobSpec
		want string
	}{
		{cp(func(s *controllerv1.JobSpec) { s.Schedule = "every tuesday" }), "neither an interval nor a cron expression"},
		{cp(func(s *controllerv1.JobSpec) { s.Schedule = "30s" }), "shorter than the minimum 1m"},
		{cp(func(s *controllerv1.JobSpec) { s.Mode = "eventually" }), "use immediate or periodic"},
		{cp(func(s *controllerv1.JobSpec) { s.Mode, s.Schedule = "immediate", "1h" }), "drop --schedule"},
		{cp(func(s *controllerv1.JobSpec) { s.Retain = 1 }), "keep at least 2 points"},
		{cp(func(s *controllerv1.JobSpec) { s.HealthCheck = "0 99 * * *" }), "--health-check"},
	} {
		_, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: tc.spec})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want %q", tc.spec, err, tc.want)
		}
	}
	if _, err := c.GetJob(ctx, &controllerv1.GetJobRequest{Name: "off"}); err == nil {
		t.Fatal("a refused job was stored")
	}
}
