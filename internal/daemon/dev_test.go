package daemon

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
)

type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

func devClient(t *testing.T, env *DevEnv) controllerv1.ControllerServiceClient {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(env.ClientCert, env.ClientKey, env.CACert, pki.RoleController)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(env.Controller.Addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return controllerv1.NewControllerServiceClient(conn)
}

func runJob(t *testing.T, c controllerv1.ControllerServiceClient, name string) *controllerv1.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := c.RunJob(ctx, &controllerv1.RunJobRequest{Name: name, Wait: true})
	if err != nil {
		t.Fatal(err)
	}
	var last *controllerv1.Session
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		last = resp.Session
	}
	if last == nil || last.Result != controllerv1.SessionResult_SESSION_RESULT_SUCCESS {
		t.Fatalf("run %s: %+v", name, last)
	}
	return last
}

func TestDevBackupThenCopy(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)

	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 2, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{
		Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
		Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("backup pw"), BlockSize: 256 << 10,
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{
		Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("copy pw"),
	}}); err != nil {
		t.Fatal(err)
	}
	snap := filepath.Join(t.TempDir(), "snap1")
	runJob(t, c, "site")
	if out, err := exec.Command("cp", "-a", src, snap).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	runJob(t, c, "offsite")
	if _, err := datagen.MutateTree(src, 3); err != nil {
		t.Fatal(err)
	}
	runJob(t, c, "site")
	runJob(t, c, "offsite")

	pts, err := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	if err != nil {
		t.Fatal(err)
	}
	if len(pts.Points) != 2 || pts.Points[0].Kind != commonv1.PointKind_POINT_KIND_FULL || pts.Points[1].Kind != commonv1.PointKind_POINT_KIND_INCREMENTAL {
		t.Fatalf("copy points: %v", pts.Points)
	}
	for i, want := range []string{snap, src} {
		to := filepath.Join(t.TempDir(), "restored")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", PointId: pts.Points[i].FileId, Agent: "target", Path: to}); err != nil {
			t.Fatalf("restore point %d: %v", i, err)
		}
		datagen.SameTree(t, want, to)
	}
	for _, keyless := range []bool{true, false} {
		v, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "offsite", Keyless: keyless})
		if err != nil || len(v.Problems) > 0 || v.Files != 2 {
			t.Fatalf("verify keyless=%v: %v %+v", keyless, err, v)
		}
	}
	_ = os.Getpid
}
