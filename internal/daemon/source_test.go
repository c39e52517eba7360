package daemon

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// TestEncryptedSources: a copy job decrypts an encrypted source and
// re-encrypts it under its own key, or writes plaintext when its own
// encryption is off; a source backup the controller did not make opens
// with --source-password-file, and without it the session says what to do.
func TestEncryptedSources(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 14, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	create := func(spec *controllerv1.JobSpec) {
		t.Helper()
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	// An encrypted backup job, copied with encryption off: the target gets
	// plaintext, as configured.
	create(&controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
		Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("site pw")})
	create(&controllerv1.JobSpec{Name: "plain-copy", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_NONE})
	runJob(t, c, "site")
	s := runJob(t, c, "plain-copy")
	if s.Point == nil || s.Point.Encrypted {
		t.Fatalf("copy with encryption off of an encrypted source: %+v", s.Point)
	}
	tr, _ := repo.Open(filepath.Join(dir, "target", "repos", "local"))
	to := filepath.Join(t.TempDir(), "plain")
	if _, err := backup.Restore(ctx, tr, "plain-copy", to, backup.RestoreOptions{}); err != nil {
		t.Fatalf("the plaintext copy needs no key: %v", err)
	}
	datagen.SameTree(t, src, to)

	// A backup made offline, which the controller knows nothing about.
	sr, _ := repo.Open(filepath.Join(dir, "source", "repos", "local"))
	if _, err := backup.Backup(ctx, sr, "legacy", src, backup.Options{Password: []byte("legacy pw"), KDF: keys.TestKDF,
		Compression: backup.Compression{Algorithm: format.CompressionZstd}}); err != nil {
		t.Fatal(err)
	}
	create(&controllerv1.JobSpec{Name: "legacy-copy", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "legacy",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("copy pw"),
		SourcePassword: []byte("legacy pw")})
	create(&controllerv1.JobSpec{Name: "legacy-nokey", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "legacy",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("copy pw")})
	if s := runJobResult(t, c, "legacy-nokey"); s.Result != controllerv1.SessionResult_SESSION_RESULT_FAILED || !strings.Contains(s.Error, "--source-password-file") {
		t.Fatalf("a foreign encrypted source without its password: %v %q", s.Result, s.Error)
	}
	s = runJob(t, c, "legacy-copy")
	if s.Point == nil || !s.Point.Encrypted {
		t.Fatalf("copy of a foreign source: %+v", s.Point)
	}
	to2 := filepath.Join(t.TempDir(), "legacy")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "legacy-copy", Agent: "target", Path: to2}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, src, to2)
	// An unknown source name is refused when the job is made.
	_, err = c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{Name: "ghost-copy", Kind: controllerv1.JobKind_JOB_KIND_COPY,
		FromAgent: "source", FromRepository: "local", FromJob: "no-such-backup", ToAgent: "target", ToRepository: "local"}})
	if err == nil || !strings.Contains(err.Error(), "no-such-backup") {
		t.Fatalf("copy job from a backup that does not exist: %v", err)
	}
}
