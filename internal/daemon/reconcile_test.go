package daemon

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
)

// TestReconcileAdoptsCommittedPoints: a point committed at the target but
// missing from the catalog (the controller died between the two) is
// adopted when the controller starts, with its session secret recovered
// from the file, and restores through the controller; the start says so.
func TestReconcileAdoptsCommittedPoints(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 51, datagen.TreeOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []*controllerv1.JobSpec{
		{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src},
		{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw")},
	} {
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
		runJob(t, c, spec.Name)
	}
	pts, _ := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	lost := pts.Points[0].FileId
	env.Stop()

	// What a controller that died after the target's commit leaves.
	store, err := catalog.Open(filepath.Join(dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	j, _ := store.GetJob("offsite")
	if err := store.DeletePoint(j.UID, lost); err != nil {
		t.Fatal(err)
	}
	store.Close()
	// And what a target killed mid-transfer leaves: a partial file, which
	// the target removes when it starts.
	chains, _ := filepath.Glob(filepath.Join(dir, "target", "repos", "local", "backups", "offsite", "????????????????????????????????"))
	if len(chains) != 1 {
		t.Fatalf("target chains: %v", chains)
	}
	if err := os.WriteFile(filepath.Join(chains[0], "00000002-0123456789abcdef0123456789abcdef.ferry.partial"), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}

	logs := &syncBuffer{}
	env, err = StartDev(ctx, dir, logs, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c = devClient(t, env)
	if !strings.Contains(logs.b.String(), "adopted point") {
		t.Fatalf("the start did not report the adoption:\n%s", logs.b.String())
	}
	pts, _ = c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	if len(pts.Points) != 1 || !bytes.Equal(pts.Points[0].FileId, lost) {
		t.Fatalf("points after the start: %v", pts.Points)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: to}); err != nil {
		t.Fatalf("the adopted point does not restore: %v", err)
	}
	datagen.SameTree(t, src, to)

	// session show of the job's last session says what recovery did.
	ss, err := c.ListSessions(ctx, &controllerv1.ListSessionsRequest{Job: "offsite"})
	if err != nil || len(ss.Sessions) != 1 {
		t.Fatalf("sessions: %v %v", ss, err)
	}
	got, err := c.GetSession(ctx, &controllerv1.GetSessionRequest{Id: ss.Sessions[0].Id})
	if err != nil {
		t.Fatal(err)
	}
	notes := strings.Join(got.Session.Notes, "\n")
	if !strings.Contains(notes, "adopted point "+hex.EncodeToString(lost)) || !strings.Contains(notes, "removed the partial file 00000002-0123456789abcdef0123456789abcdef.ferry.partial") {
		t.Fatalf("notes of the last session:\n%s", notes)
	}
	// Taken once: the next session of the job starts with no old news.
	runJob(t, c, "offsite")
	ss, _ = c.ListSessions(ctx, &controllerv1.ListSessionsRequest{Job: "offsite"})
	for _, x := range ss.Sessions {
		if x.Id != got.Session.Id && len(x.Notes) != 0 {
			t.Fatalf("the next session repeats old notes: %v", x.Notes)
		}
	}
}
