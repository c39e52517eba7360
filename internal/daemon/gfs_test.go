package daemon

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// TestGFSWeeklyAndMonthly: a copy job keeping 1 weekly and 1 monthly full
// copies on five days over four weeks (the controller's clock is moved):
// each new week starts a chain with a full, archived chains are trimmed to
// their full, and only the first full of the newest past week and of the
// newest past month stay; every point left restores as the source was.
func TestGFSWeeklyAndMonthly(t *testing.T) {
	var now atomic.Int64
	testControllerNow = func() time.Time { return time.Unix(0, now.Load()) }
	defer func() { testControllerNow = nil }()
	day := func(s string) time.Time {
		d, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return d.Add(12 * time.Hour)
	}
	now.Store(day("2026-11-16").UnixNano())
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 121, datagen.TreeOptions{Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, BlockSize: 256 << 10})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw"),
		KeepWeekly: 1, KeepMonthly: 1})

	snaps := map[string]string{} // point id -> the source when it was made
	var ids []string
	// want: the points (by session number) the job holds after each session.
	for i, step := range []struct {
		day  string
		want []int
	}{
		{"2026-11-16", []int{0}},       // W47: chain A
		{"2026-11-17", []int{0, 1}},    // W47: A grows
		{"2026-11-23", []int{0, 2}},    // W48: chain B; A trimmed to its full
		{"2026-11-30", []int{0, 2, 3}}, // W49: chain C; A (November), B (W48) kept
		{"2026-12-07", []int{0, 3, 4}}, // W50: chain D; C is the newest week, A still November's first; B goes
	} {
		now.Store(day(step.day).UnixNano())
		if i > 0 {
			if _, err := datagen.MutateTree(src, uint64(130+i)); err != nil {
				t.Fatal(err)
			}
		}
		runJob(t, c, "site")
		snap := filepath.Join(t.TempDir(), "snap")
		snapshot(t, src, snap)
		runJob(t, c, "offsite")
		pts := points(t, c, "offsite")
		latest := pts[len(pts)-1]
		id := string(latest.FileId)
		ids = append(ids, id)
		snaps[id] = snap
		if step.day != "2026-11-17" && (latest.Sequence != 1 || latest.Kind != commonv1.PointKind_POINT_KIND_FULL) {
			t.Fatalf("session %d (%s, a new week) made sequence %d %v, not a full in a new chain", i, step.day, latest.Sequence, latest.Kind)
		}
		var want []string
		for _, k := range step.want {
			want = append(want, ids[k])
		}
		got := map[string]bool{}
		for _, p := range pts {
			got[string(p.FileId)] = true
		}
		if len(got) != len(want) {
			t.Fatalf("after session %d (%s): %d points, want sessions %v", i, step.day, len(got), step.want)
		}
		for k, w := range want {
			if !got[w] {
				t.Fatalf("after session %d (%s): the point of session %d is gone", i, step.day, step.want[k])
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "target", "repos", "local", "backups", "offsite", "*", "*.ferry"))
	if len(files) != 3 {
		t.Fatalf("%d files at the target, want 3: %v", len(files), files)
	}
	for _, p := range points(t, c, "offsite") {
		to := filepath.Join(t.TempDir(), "r")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", PointId: p.FileId, Agent: "target", Path: to}); err != nil {
			t.Fatal(err)
		}
		datagen.SameTree(t, snaps[string(p.FileId)], to)
	}
	if v, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "offsite"}); err != nil || len(v.Problems) > 0 || v.Files != 3 {
		t.Fatalf("verify: %v %v", v, err)
	}
}
