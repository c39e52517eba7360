package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/transittest"
)

// TestWANSeedFromEncryptedChain: a default-mode copy job leaves an
// encrypted chain at the target (its cache empty); `wan seed` fills the
// target's cache from it with the job's keys for that call; a new WAN job
// copying the same data then sends no block, only digests, and restores
// byte-identical. A second seed adds nothing; a job that does not copy to
// that target is refused.
func TestWANSeedFromEncryptedChain(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 101, datagen.TreeOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	pw := commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
		BlockSize: 256 << 10, Encryption: pw, Password: []byte("backup pw")})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: pw, Password: []byte("copy pw")})
	runJob(t, c, "site")
	runJob(t, c, "offsite")

	if _, err := c.SeedWanCache(ctx, &controllerv1.SeedWanCacheRequest{Target: "target", Job: "site"}); err == nil || !strings.Contains(err.Error(), "does not copy to target agent target") {
		t.Fatalf("seeding from a backup job: %v", err)
	}
	r, err := c.SeedWanCache(ctx, &controllerv1.SeedWanCacheRequest{Target: "target", Job: "offsite"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Blocks == 0 || r.Added == 0 || r.Added+r.Already != r.Blocks || r.AddedBytes == 0 {
		t.Fatalf("seed: %+v", r)
	}
	again, err := c.SeedWanCache(ctx, &controllerv1.SeedWanCacheRequest{Target: "target", Job: "offsite"})
	if err != nil || again.Added != 0 || again.Already != again.Blocks {
		t.Fatalf("second seed: %+v %v", again, err)
	}

	createJob(t, c, &controllerv1.JobSpec{Name: "offsite-wan", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: pw, Password: []byte("wan pw"), Wan: true})
	s := runJob(t, c, "offsite-wan")
	st := s.Stats
	if s.Mode != "wan" || st.Blocks == 0 || st.CacheHitBlocks != st.Blocks || st.BlocksSent != 0 || st.BlockBytesSent != 0 {
		t.Fatalf("WAN copy after the seed: mode %s, stats %+v", s.Mode, st)
	}
	t.Logf("seeded %d blocks (%d bytes); the WAN copy sent %d digest bytes and no block", r.Added, r.AddedBytes, st.DigestBytesSent)
	m := scrape(t, env, env.Target.MetricsAddr, pki.RoleTarget)
	if m["ferry_wan_cache_hits_total"] != float64(st.Blocks) || m["ferry_wan_cache_bytes"] <= 0 {
		t.Errorf("target metrics: cache hits %v (want %d), cache bytes %v", m["ferry_wan_cache_hits_total"], st.Blocks, m["ferry_wan_cache_bytes"])
	}
	to := filepath.Join(t.TempDir(), "r")
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite-wan", Agent: "target", Path: to}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, src, to)
}

// TestWANCopyPlainSourceKMS: a WAN copy of an unencrypted source backup,
// sealed at the target under a session secret Vault Transit wraps, full
// then incremental, restores byte-identical; the target's files hold no
// plaintext of the source.
func TestWANCopyPlainSourceKMS(t *testing.T) {
	vaultAddr, vaultToken, _ := transittest.Target(t)
	t.Setenv("VAULT_ADDR", vaultAddr)
	t.Setenv("VAULT_TOKEN", vaultToken)
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 102, datagen.TreeOptions{Size: 6 << 20}); err != nil {
		t.Fatal(err)
	}
	sentinel := []byte("FERRY-WAN-KMS-SENTINEL-0b1d")
	if err := os.WriteFile(filepath.Join(src, "sentinel.txt"), bytes.Repeat(sentinel, 1000), 0o600); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, BlockSize: 256 << 10})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_KMS,
		KmsKey: fmt.Sprintf("ferry-wan-%d", time.Now().UnixNano()), Wan: true})
	for i := 0; i < 2; i++ {
		if i > 0 {
			if _, err := datagen.MutateTree(src, 103); err != nil {
				t.Fatal(err)
			}
		}
		runJob(t, c, "site")
		if s := runJob(t, c, "offsite"); s.Mode != "wan" {
			t.Fatalf("session mode %q", s.Mode)
		}
		to := filepath.Join(t.TempDir(), "r")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: to}); err != nil {
			t.Fatal(err)
		}
		datagen.SameTree(t, src, to)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "target", "repos", "local", "backups", "offsite", "*", "*.ferry"))
	if len(files) != 2 {
		t.Fatalf("target files: %v", files)
	}
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, sentinel) {
			t.Fatalf("%s holds source plaintext", f)
		}
	}
}
