package daemon

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// TestTargetDiskFull: the target's repository lives on a 48 MiB tmpfs that
// fills up during a copy. The session fails with an error that names the
// repository and the cause, the partial file's space is released, the
// earlier point still restores, and a session that fits succeeds.
func TestTargetDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a small tmpfs needs root; CI runs as root")
	}
	ctx := context.Background()
	dir := t.TempDir()
	repos := filepath.Join(dir, "target", "repos")
	if err := os.MkdirAll(repos, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", repos).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", repos).Run() })
	free := func() uint64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(repos, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bavail * uint64(st.Bsize)
	}

	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	os.MkdirAll(src, 0o755)
	// Random data: incompressible, so sizes on disk are predictable.
	writeRandom := func(name string, size int64, seed uint64) {
		f, _ := os.Create(filepath.Join(src, name))
		defer f.Close()
		r := datagen.NewRandom(seed, size)
		if _, err := r.WriteTo(f); err != nil {
			t.Fatal(err)
		}
	}
	writeRandom("a.bin", 20<<20, 1)
	for _, spec := range []*controllerv1.JobSpec{
		{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src},
		{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw")},
	} {
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	runJob(t, c, "site")
	runJob(t, c, "offsite")
	before := free()

	writeRandom("b.bin", 40<<20, 2) // does not fit in what is left
	runJob(t, c, "site")
	s := runJobResult(t, c, "offsite")
	if s.Result != controllerv1.SessionResult_SESSION_RESULT_FAILED || !strings.Contains(s.Error, "no space left") || !strings.Contains(s.Error, repos) {
		t.Fatalf("copy into a full disk: %v %q", s.Result, s.Error)
	}
	if after := free(); after+1<<20 < before {
		t.Fatalf("the failed session's partial file still holds space: %d free before, %d after", before, after)
	}
	partials, _ := filepath.Glob(filepath.Join(repos, "local", "backups", "offsite", "*", "*.partial"))
	if len(partials) != 0 {
		t.Fatalf("partial files left: %v", partials)
	}
	pts, _ := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	if len(pts.Points) != 1 {
		t.Fatalf("%d points after the failed session", len(pts.Points))
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: to}); err != nil {
		t.Fatalf("the earlier point no longer restores: %v", err)
	}
	// Smaller change: the next session fits and commits.
	os.Remove(filepath.Join(src, "b.bin"))
	writeRandom("c.bin", 4<<20, 3)
	runJob(t, c, "site")
	runJob(t, c, "offsite")
	if v, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "offsite"}); err != nil || len(v.Problems) > 0 {
		t.Fatalf("verify: %v %v", v, err)
	}
}
