package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/kms"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transittest"
)

// runJobResult runs a job to its end and returns the last session state.
func runJobResult(t *testing.T, c controllerv1.ControllerServiceClient, name string) *controllerv1.Session {
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
			return last
		}
		if err != nil {
			t.Fatalf("run %s: %v", name, err)
		}
		last = resp.Session
	}
}

// TestKMSBackupAndCopy: a backup job and a copy job whose session secrets
// Vault Transit wraps (an AES and an RSA key), full and incremental,
// restored and verified through the controller; the catalog keeps no
// unwrapped secret of theirs; a sealed Vault fails the session before
// anything is committed, with an error that says so.
func TestKMSBackupAndCopy(t *testing.T) {
	// The in-repo Transit server, or a real Vault when VAULT_ADDR and
	// VAULT_TOKEN are set (the sealed case then runs only in-repo).
	vaultAddr, vaultToken, vault := transittest.Target(t)
	t.Setenv("VAULT_ADDR", vaultAddr)
	t.Setenv("VAULT_TOKEN", vaultToken)
	suffix := fmt.Sprintf("-%d", time.Now().UnixNano()) // fresh keys on a real Vault
	if vault == nil {
		if va, err := api.NewClient(&api.Config{Address: vaultAddr}); err == nil {
			va.SetToken(vaultToken)
			va.Sys().Mount("transit", &api.MountInput{Type: "transit"}) // an existing mount is fine
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 4, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	kmsJob := func(spec *controllerv1.JobSpec, key, typ string) {
		spec.Encryption, spec.KmsKey, spec.KmsKeyType = commonv1.EncryptionMode_ENCRYPTION_MODE_KMS, key, typ
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
	}
	kmsJob(&controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, BlockSize: 256 << 10}, "ferry-site"+suffix, "aes256-gcm96")
	kmsJob(&controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local"}, "ferry-offsite"+suffix, "rsa-4096")
	kmsJob(&controllerv1.JobSpec{Name: "offsite-aes", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local"}, "ferry-offsite-aes"+suffix, "aes256-gcm96")

	for round := range 2 {
		if round == 1 {
			if _, err := datagen.MutateTree(src, 8); err != nil {
				t.Fatal(err)
			}
		}
		for _, j := range []string{"site", "offsite", "offsite-aes"} {
			if s := runJobResult(t, c, j); s.Result != controllerv1.SessionResult_SESSION_RESULT_SUCCESS {
				t.Fatalf("round %d, job %s: %v", round, j, s.Error)
			}
		}
	}
	pts, err := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	if err != nil || len(pts.Points) != 2 {
		t.Fatalf("points: %v %v", pts, err)
	}
	for _, p := range pts.Points {
		if len(p.KeyRefs) != 1 || !strings.HasPrefix(p.KeyRefs[0], "kms transit/ferry-offsite"+suffix+" v1") {
			t.Fatalf("key reference %v", p.KeyRefs)
		}
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: to}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, src, to)
	toAES := filepath.Join(t.TempDir(), "restored-aes")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite-aes", Agent: "target", Path: toAES}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, src, toAES)
	if v, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "offsite"}); err != nil || len(v.Problems) > 0 {
		t.Fatalf("verify: %v %v", v, err)
	}

	// The copies open with nothing but the target's repository and Vault;
	// without Vault they do not open at all.
	tr, err := repo.Open(filepath.Join(dir, "target", "repos", "local"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, tr, "offsite", filepath.Join(t.TempDir(), "x"), backup.RestoreOptions{}); !errors.Is(err, keyring.ErrNeedKey) || !strings.Contains(err.Error(), "ferry-offsite"+suffix) {
		t.Fatalf("restore without Vault: %v", err)
	}
	vc, err := kms.New(ctx, kms.Config{})
	if err != nil {
		t.Fatal(err)
	}
	to2 := filepath.Join(t.TempDir(), "offline")
	if _, err := backup.Restore(ctx, tr, "offsite", to2, backup.RestoreOptions{Keys: keyring.New().WithTransit(vc)}); err != nil {
		t.Fatalf("offline restore through Vault: %v", err)
	}
	datagen.SameTree(t, src, to2)

	// Rotate + rewrap: records byte-identical, key tables changed, every
	// point restores, and the old wrapped form fails once Vault's
	// min_decryption_version is raised.
	files, _ := filepath.Glob(filepath.Join(dir, "target", "repos", "local", "backups", "offsite", "*", "*.ferry"))
	if len(files) != 2 {
		t.Fatalf("files: %v", files)
	}
	type split struct{ outside, table []byte }
	cut := func(path string) split {
		f, fd, err := format.OpenPath(path)
		if err != nil {
			t.Fatal(err)
		}
		fd.Close()
		b, _ := os.ReadFile(path)
		return split{append(append([]byte(nil), b[:f.KeyTableOffset]...), b[f.Footer.RecordsOffset:]...), append([]byte(nil), b[f.KeyTableOffset:f.Footer.RecordsOffset]...)}
	}
	before := map[string]split{}
	var oldWrapped []string
	for _, path := range files {
		before[path] = cut(path)
		f, fd, _ := format.OpenPath(path)
		fd.Close()
		for _, e := range f.KeyTable.Entries {
			if e.Type == format.EntryTransit {
				te, _ := keys.ParseTransitEntry(e.Data)
				oldWrapped = append(oldWrapped, te.Ciphertext)
			}
		}
	}
	if _, err := c.RotateKey(ctx, &controllerv1.RotateKeyRequest{Job: "offsite"}); err != nil {
		t.Fatal(err)
	}
	if r, err := c.RewrapKeys(ctx, &controllerv1.RewrapKeysRequest{Job: "offsite"}); err != nil || r.Files != 2 {
		t.Fatalf("rewrap: %v %v", r, err)
	}
	for _, path := range files {
		now := cut(path)
		if !bytes.Equal(now.outside, before[path].outside) {
			t.Fatalf("%s: bytes outside the key table changed in a rewrap", path)
		}
		if bytes.Equal(now.table, before[path].table) {
			t.Fatalf("%s: the key table did not change", path)
		}
	}
	vc0, err := kms.New(ctx, kms.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vc0.Unwrap(ctx, "ferry-offsite"+suffix, oldWrapped); err != nil {
		t.Fatalf("before min_decryption_version the old form still unwraps: %v", err)
	}
	vapi, err := api.NewClient(&api.Config{Address: vaultAddr})
	if err != nil {
		t.Fatal(err)
	}
	vapi.SetToken(vaultToken)
	if _, err := vapi.Logical().Write("transit/keys/ferry-offsite"+suffix+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := vc0.Unwrap(ctx, "ferry-offsite"+suffix, oldWrapped); !errors.Is(err, kms.ErrTooOld) {
		t.Fatalf("the old wrapped form unwraps after min_decryption_version: %v", err)
	}
	pts, _ = c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "offsite"})
	for _, p := range pts.Points {
		if !strings.Contains(p.KeyRefs[0], " v2") {
			t.Fatalf("point still refers to %v", p.KeyRefs)
		}
		to := filepath.Join(t.TempDir(), "after-rewrap")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", PointId: p.FileId, Agent: "target", Path: to}); err != nil {
			t.Fatalf("restore after rewrap: %v", err)
		}
	}

	// Vault sealed (in-repo server only; TestKMSSessionFailures covers more):
	// the session fails and says so; nothing is committed.
	if vault != nil {
		vault.Seal()
		s := runJobResult(t, c, "site")
		if s.Result != controllerv1.SessionResult_SESSION_RESULT_FAILED || !strings.Contains(s.Error, "sealed") || !strings.Contains(s.Error, vault.URL()) {
			t.Fatalf("session with Vault sealed: %v %q", s.Result, s.Error)
		}
		after, _ := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "site"})
		if len(after.Points) != 2 {
			t.Fatalf("a session with Vault sealed committed a point: %d points", len(after.Points))
		}
		vault.Unseal()
	}

	// The catalog holds no unwrapped session secret of KMS jobs.
	env.Stop()
	store, err := catalog.Open(filepath.Join(dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, name := range []string{"site", "offsite", "offsite-aes"} {
		j, err := store.GetJob(name)
		if err != nil {
			t.Fatal(err)
		}
		if ss, err := store.ListSessionSecrets(j.UID); err != nil || len(ss) != 0 {
			t.Fatalf("job %s: %d session secrets kept in the catalog (%v)", name, len(ss), err)
		}
	}
	_ = os.Getpid
}
