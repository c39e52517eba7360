package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// TestPasswordChangeThenRewrap: a new password continues the chain under
// a new key; after `key rewrap` every point of the chain opens with the new
// password alone and no longer with the old one.
func TestPasswordChangeThenRewrap(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 9, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	oldPW, newPW := []byte("old password"), []byte("new password")
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP,
		Agent: "source", Repository: "local", Path: src, Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: oldPW}}); err != nil {
		t.Fatal(err)
	}
	runJob(t, c, "site")
	if _, err := c.UpdateJob(ctx, &controllerv1.UpdateJobRequest{Spec: &controllerv1.JobSpec{Name: "site", Password: newPW,
		Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD}, Fields: []string{"password-file"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := datagen.MutateTree(src, 10); err != nil {
		t.Fatal(err)
	}
	s := runJob(t, c, "site")
	if s.Point == nil || s.Point.Kind != commonv1.PointKind_POINT_KIND_INCREMENTAL || s.Point.Sequence != 2 {
		t.Fatalf("a password change must continue the chain with an incremental: %+v", s.Point)
	}
	r, err := repo.Open(filepath.Join(dir, "source", "repos", "local"))
	if err != nil {
		t.Fatal(err)
	}
	// Before the rewrap the chain needs both passwords.
	if _, err := backup.Restore(ctx, r, "site", filepath.Join(t.TempDir(), "a"), backup.RestoreOptions{Keys: keyring.New(newPW)}); !errors.Is(err, keyring.ErrWrongPassword) {
		t.Fatalf("before rewrap, the new password alone opened the chain: %v", err)
	}
	if _, err := backup.Restore(ctx, r, "site", filepath.Join(t.TempDir(), "b"), backup.RestoreOptions{Keys: keyring.New(oldPW, newPW)}); err != nil {
		t.Fatalf("both passwords: %v", err)
	}
	if resp, err := c.RewrapKeys(ctx, &controllerv1.RewrapKeysRequest{Job: "site"}); err != nil || resp.Files != 2 {
		t.Fatalf("rewrap: %v %v", resp, err)
	}
	to := filepath.Join(t.TempDir(), "c")
	if _, err := backup.Restore(ctx, r, "site", to, backup.RestoreOptions{Keys: keyring.New(newPW)}); err != nil {
		t.Fatalf("after rewrap, the new password alone: %v", err)
	}
	datagen.SameTree(t, src, to)
	if _, err := backup.Verify(ctx, r, "site", backup.VerifyOptions{Keys: keyring.New(oldPW)}); !errors.Is(err, keyring.ErrWrongPassword) {
		t.Fatalf("after rewrap the old password still opens the chain: %v", err)
	}
}
