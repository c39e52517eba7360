package daemon

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/kms"
	"github.com/ferrybackup/ferry/internal/transittest"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// TestSecretsNeverLogged runs password and KMS jobs, a failed session, a
// restore, verifies and a rewrap with debug logging, then scans every log
// line for each password, the Vault token and every session secret, raw,
// hex and base64.
func TestSecretsNeverLogged(t *testing.T) {
	vault := transittest.NewTest(t, transittest.Options{RootToken: "s.supersecret-vault-token-1234"})
	t.Setenv("VAULT_ADDR", vault.URL())
	t.Setenv("VAULT_TOKEN", vault.RootToken())
	t.Setenv("FERRY_LOG_LEVEL", "trace")
	logs := &syncBuffer{}
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logs, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 12, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	password := []byte("correct-horse-log-sentinel")
	for _, spec := range []*controllerv1.JobSpec{
		{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
			Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: password},
		{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_KMS, KmsKey: "ferry-logs"},
		// WAN mode hands the session secret to the target: it must not
		// reach any log there either.
		{Name: "offsite-wan", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: password, Wan: true},
	} {
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
		runJob(t, c, spec.Name)
	}
	if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", Agent: "target", Path: filepath.Join(t.TempDir(), "r")}); err != nil {
		t.Fatal(err)
	}
	c.Verify(ctx, &controllerv1.VerifyRequest{Job: "site"})
	c.RewrapKeys(ctx, &controllerv1.RewrapKeysRequest{Job: "offsite"})
	vault.Seal()
	runJobResult(t, c, "site") // a password job: Vault is not needed
	runJobResult(t, c, "offsite")
	vault.Unseal()
	env.Stop()

	// Every secret used: the password, the token, each session secret.
	secrets := [][]byte{password, []byte(vault.RootToken())}
	store, err := catalog.Open(filepath.Join(dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	for _, name := range []string{"site", "offsite", "offsite-wan"} {
		j, _ := store.GetJob(name)
		ss, _ := store.ListSessionSecrets(j.UID)
		for _, s := range ss {
			secrets = append(secrets, []byte(s.Secret))
		}
		pts, _ := store.ListPoints(j.UID)
		vc, err := kms.New(ctx, kms.Config{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pts {
			if p.Wrapped != "" {
				plain, err := vc.Unwrap(ctx, p.WrappedKey, []string{p.Wrapped})
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, plain[0])
			}
		}
		vc.Close()
	}
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets gathered", len(secrets))
	}
	out := logs.b.Bytes()
	if len(out) < 1000 {
		t.Fatalf("suspiciously little logging: %d bytes", len(out))
	}
	for i, s := range secrets {
		for _, form := range [][]byte{s, []byte(hex.EncodeToString(s)), []byte(base64.StdEncoding.EncodeToString(s)), []byte(base64.RawURLEncoding.EncodeToString(s))} {
			if bytes.Contains(out, form) {
				t.Fatalf("secret %d appears in the logs", i)
			}
		}
	}
	t.Logf("scanned %d bytes of trace logs for %d secrets", len(out), len(secrets))
}

// TestSessionLogLinesCarryIDs: with JSON logs, every line any daemon
// writes about a session (controller, source agent, target agent) carries
// that session's id and its job's name, so a log shipper can follow one
// session across hosts.
func TestSessionLogLinesCarryIDs(t *testing.T) {
	t.Setenv("FERRY_LOG_FORMAT", "json")
	t.Setenv("FERRY_LOG_LEVEL", "debug")
	logs := &syncBuffer{}
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logs, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 13, datagen.TreeOptions{Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	sessionJob := map[string]string{}
	for _, spec := range []*controllerv1.JobSpec{
		{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src},
		{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
			ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw")},
	} {
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatal(err)
		}
		sessionJob[runJob(t, c, spec.Name).Id] = spec.Name
	}
	env.Stop()

	// daemon -> session -> lines
	seen := map[string]map[string]int{}
	for _, line := range bytes.Split(logs.b.Bytes(), []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Fatalf("a log line is not JSON: %v\n%s", err, line)
		}
		for id, job := range sessionJob {
			if !bytes.Contains(line, []byte(id)) {
				continue
			}
			if m["session"] != id || m["job"] != job {
				t.Errorf("a line about session %s (job %s) lacks session or job: %s", id, job, line)
			}
			name, _ := m["@module"].(string)
			if seen[name] == nil {
				seen[name] = map[string]int{}
			}
			seen[name][id]++
		}
	}
	for _, daemon := range []string{"controller", "agent-source"} {
		if len(seen[daemon]) != 2 {
			t.Errorf("%s logged %d of the 2 sessions with their ids: %v", daemon, len(seen[daemon]), seen)
		}
	}
	if len(seen["agent-target"]) != 1 {
		t.Errorf("agent-target logged %d sessions with ids, want the copy: %v", len(seen["agent-target"]), seen)
	}
}
