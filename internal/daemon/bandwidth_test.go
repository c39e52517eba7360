package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// TestJobBandwidthLimit: a copy job with --bandwidth 4MB/s moves 12 MiB of
// incompressible data no faster than that (a lower bound only: the limit
// is what is checked, not speed), and the copy restores byte-identical.
func TestJobBandwidthLimit(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(src, "random.img"))
	if err != nil {
		t.Fatal(err)
	}
	const size = 12 << 20
	if _, err := datagen.NewRandom(81, size).WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
		Compression: commonv1.Compression_COMPRESSION_NONE})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw"), Bandwidth: "4MB/s"})
	runJob(t, c, "site")
	start := time.Now()
	runJob(t, c, "offsite")
	took := time.Since(start)
	// 12 MiB at 4 MB/s is 3.1 s; the token bucket starts with a burst of
	// 200 kB, so anything under 2.5 s means the limit was not applied.
	if took < 2500*time.Millisecond {
		t.Fatalf("12 MiB crossed a 4 MB/s limit in %v", took)
	}
	t.Logf("12 MiB under a 4 MB/s job limit took %v (%.2f MB/s)", took.Round(time.Millisecond), size/took.Seconds()/1e6)
	to := filepath.Join(t.TempDir(), "r")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: to}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, src, to)

	// The limit can be lifted, and a rate that is none is refused.
	if _, err := c.UpdateJob(ctx, &controllerv1.UpdateJobRequest{Spec: &controllerv1.JobSpec{Name: "offsite", Bandwidth: "0"}, Fields: []string{"bandwidth"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{Name: "bad", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Bandwidth: "fast"}}); err == nil {
		t.Fatal("--bandwidth fast was accepted")
	}
}
