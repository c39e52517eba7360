package daemon

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/transittest"
)

// recorder keeps every message an agent's gRPC server receives.
type recorder struct {
	mu      sync.Mutex
	msgs    []recMsg
	methods map[string]int
}

type recMsg struct {
	method string
	b      []byte
}

func (r *recorder) add(method string, m any) {
	b, _ := proto.Marshal(m.(proto.Message))
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, recMsg{method, b})
	r.methods[method]++
}

type recordingStream struct {
	grpc.ServerStream
	r      *recorder
	method string
}

func (s recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.r.add(s.method, m)
	}
	return err
}

func (r *recorder) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			r.add(info.FullMethod, req)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, recordingStream{ServerStream: ss, r: r, method: info.FullMethod})
		}),
	}
}

// TestRetentionMergesWithoutKeys: a copy job keeping 3 points runs 6
// sessions (N+3) over a tree with changed, added and deleted files; the
// chain then holds 3 points, the oldest a merged full, the target agent
// merged three times and received no key or password in any message, and
// every remaining point restores byte-identical to the source as it was.
func TestRetentionMergesWithoutKeys(t *testing.T) {
	rec := &recorder{methods: map[string]int{}}
	testAgentOptions["target"] = rec.options()
	defer delete(testAgentOptions, "target")
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 41, datagen.TreeOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	backupPW, copyPW := []byte("backup-password-sentinel"), []byte("copy-password-sentinel")
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src,
		BlockSize: 256 << 10, Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: backupPW})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: copyPW, Retain: 3})

	const n, sessions = 3, 6
	var snaps []string
	for i := 0; i < sessions; i++ {
		if i > 0 {
			if _, err := datagen.MutateTree(src, uint64(50+i)); err != nil {
				t.Fatal(err)
			}
		}
		runJob(t, c, "site")
		snap := filepath.Join(t.TempDir(), "snap")
		snapshot(t, src, snap)
		snaps = append(snaps, snap)
		s := runJob(t, c, "offsite")
		got, _ := c.GetSession(ctx, &controllerv1.GetSessionRequest{Id: s.Id})
		merged := strings.Count(strings.Join(got.Session.Notes, "\n"), "retention: merged point")
		if (i+1 > n) != (merged == 1) {
			t.Errorf("session %d: %d merges noted (chain of %d, keep %d): %v", i, merged, i+1, n, got.Session.Notes)
		}
	}

	pts := points(t, c, "offsite")
	if len(pts) != n {
		t.Fatalf("%d points after %d sessions with retain %d", len(pts), sessions, n)
	}
	for i, p := range pts {
		if p.Sequence != uint32(sessions-n+1+i) {
			t.Errorf("point %d has sequence %d", i, p.Sequence)
		}
		if (i == 0) != (p.Kind == commonv1.PointKind_POINT_KIND_FULL) {
			t.Errorf("point %d (sequence %d) is %v", i, p.Sequence, p.Kind)
		}
		to := filepath.Join(t.TempDir(), "r")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", PointId: p.FileId, Agent: "target", Path: to}); err != nil {
			t.Fatalf("restore of sequence %d: %v", p.Sequence, err)
		}
		datagen.SameTree(t, snaps[sessions-n+i], to)
	}
	if _, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "offsite"}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "target", "repos", "local", "backups", "offsite", "*", "*.ferry"))
	if len(files) != n {
		t.Fatalf("%d files at the target: %v", len(files), files)
	}
	rec.mu.Lock()
	merges, catalogs := rec.methods["/ferry.repository.v1.RepositoryService/Merge"], rec.methods["/ferry.repository.v1.RepositoryService/GetCatalog"]
	rec.mu.Unlock()
	if merges != sessions-n || catalogs != sessions-n {
		t.Fatalf("the target got %d Merge and %d GetCatalog calls; want %d each (%v)", merges, catalogs, sessions-n, rec.methods)
	}
	env.Stop()

	// The target got no key in any message: no copy session secret, no
	// password. (Restore and verify hand it the keys for that call, as
	// documented; the messages are checked up to the last copy session.)
	store, err := catalog.Open(filepath.Join(dir, "controller"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	j, _ := store.GetJob("offsite")
	ss, _ := store.ListSessionSecrets(j.UID)
	all, _ := store.ListAllPoints(j.UID)
	if len(ss) != sessions || len(all) != sessions {
		t.Fatalf("catalog: %d secrets, %d points (merged away included); want %d", len(ss), len(all), sessions)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for i, m := range rec.msgs {
		if bytes.Contains(m.b, backupPW) || bytes.Contains(m.b, copyPW) {
			t.Fatalf("message %d to the target (%s) holds a password", i, m.method)
		}
	}
	checked := 0
	for i, m := range rec.msgs {
		if strings.HasSuffix(m.method, "/Restore") || strings.HasSuffix(m.method, "/Verify") {
			break
		}
		checked++
		for _, s := range ss {
			if bytes.Contains(m.b, []byte(s.Secret)) {
				t.Fatalf("message %d to the target (%s) holds a session secret", i, m.method)
			}
		}
	}
	if checked < 20 {
		t.Fatalf("only %d messages checked", checked)
	}
	t.Logf("%d messages to the target before the first restore hold no key or password", checked)
}

// TestRetentionKMSThenRewrap: retention on a copy job whose secrets Vault
// Transit wraps; the merged full holds records under two sessions' secrets,
// and after a key rotation and rewrap every remaining point still restores.
func TestRetentionKMSThenRewrap(t *testing.T) {
	vaultAddr, vaultToken, _ := transittest.Target(t)
	t.Setenv("VAULT_ADDR", vaultAddr)
	t.Setenv("VAULT_TOKEN", vaultToken)
	key := fmt.Sprintf("ferry-retention-%d", time.Now().UnixNano())
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 42, datagen.TreeOptions{Size: 6 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src, BlockSize: 256 << 10})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_KMS, KmsKey: key, Retain: 2})
	var snaps []string
	for i := 0; i < 4; i++ {
		if i > 0 {
			if _, err := datagen.MutateTree(src, uint64(60+i)); err != nil {
				t.Fatal(err)
			}
		}
		runJob(t, c, "site")
		snap := filepath.Join(t.TempDir(), "snap")
		snapshot(t, src, snap)
		snaps = append(snaps, snap)
		runJob(t, c, "offsite")
	}
	// Vault calls show in the controller's metrics.
	m := scrape(t, env, env.Controller.MetricsAddr, pki.RoleController)
	if m[`ferry_vault_requests_total{op="encrypt"}`] < 4 || m[`ferry_vault_requests_total{op="decrypt"}`] < 1 {
		t.Errorf("vault request counters: encrypt %v, decrypt %v", m[`ferry_vault_requests_total{op="encrypt"}`], m[`ferry_vault_requests_total{op="decrypt"}`])
	}
	if _, err := c.RotateKey(ctx, &controllerv1.RotateKeyRequest{Job: "offsite"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RewrapKeys(ctx, &controllerv1.RewrapKeysRequest{Job: "offsite"}); err != nil {
		t.Fatal(err)
	}
	// Only the rewrapped forms open now: a secret the rewrap missed (one a
	// merged file inherited) would fail the restores below.
	vapi, err := api.NewClient(&api.Config{Address: vaultAddr})
	if err != nil {
		t.Fatal(err)
	}
	vapi.SetToken(vaultToken)
	if _, err := vapi.Logical().Write("transit/keys/"+key+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
		t.Fatal(err)
	}
	pts := points(t, c, "offsite")
	if len(pts) != 2 {
		t.Fatalf("%d points; want 2", len(pts))
	}
	for i, p := range pts {
		if !strings.Contains(strings.Join(p.KeyRefs, " "), "v2") {
			t.Errorf("point %d not rewrapped: %v", i, p.KeyRefs)
		}
		to := filepath.Join(t.TempDir(), "r")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "offsite", PointId: p.FileId, Agent: "target", Path: to}); err != nil {
			t.Fatalf("restore of sequence %d after rewrap: %v", p.Sequence, err)
		}
		datagen.SameTree(t, snaps[2+i], to)
	}
}
