package daemon

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transittest"
)

// TestRecoveryKeyOpensEveryPoint: with a recovery public key configured,
// password points (a backup job) and KMS points (a copy job) restore with
// nothing but their repository and the recovery private key: no password,
// no Vault.
func TestRecoveryKeyOpensEveryPoint(t *testing.T) {
	priv, err := keys.NewRecoveryKey()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FERRY_RECOVERY_PUBLIC_KEY", priv.Public().Marshal())
	vault := transittest.NewTest(t, transittest.Options{})
	t.Setenv("VAULT_ADDR", vault.URL())
	t.Setenv("VAULT_TOKEN", vault.RootToken())
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 5, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	for _, spec := range []*controllerv1.JobSpec{
		{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
			Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("forgotten by morning")},
		{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_KMS, KmsKey: "ferry-offsite"},
	} {
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
		if s := runJobResult(t, c, spec.Name); s.Result != controllerv1.SessionResult_SESSION_RESULT_SUCCESS {
			t.Fatalf("%s: %s", spec.Name, s.Error)
		}
	}
	env.Stop()
	vault.Seal() // no Vault from here on
	for _, where := range []struct{ agent, backup string }{{"source", "site"}, {"target", "offsite"}} {
		r, err := repo.Open(filepath.Join(dir, where.agent, "repos", "local"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := backup.Restore(ctx, r, where.backup, filepath.Join(t.TempDir(), "none"), backup.RestoreOptions{}); err == nil {
			t.Fatalf("%s: restored without any key", where.backup)
		}
		other, _ := keys.NewRecoveryKey()
		if _, err := backup.Restore(ctx, r, where.backup, filepath.Join(t.TempDir(), "other"), backup.RestoreOptions{Keys: keyring.New().WithRecovery(other)}); err == nil {
			t.Fatalf("%s: another recovery key opened it", where.backup)
		}
		to := filepath.Join(t.TempDir(), "restored")
		if _, err := backup.Restore(ctx, r, where.backup, to, backup.RestoreOptions{Keys: keyring.New().WithRecovery(priv)}); err != nil {
			t.Fatalf("%s: restore with the recovery key: %v", where.backup, err)
		}
		datagen.SameTree(t, src, to)
	}
}
