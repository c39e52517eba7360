package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/pki"
)

// fakeController records what the CLI asks and answers with canned data.
// It checks how the CLI builds requests and prints answers; the real
// controller has its own end-to-end tests.
type fakeController struct {
	controllerv1.UnimplementedControllerServiceServer
	mu   sync.Mutex
	reqs []proto.Message
}

func (f *fakeController) record(m proto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, proto.Clone(m))
}

func (f *fakeController) last() proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.reqs) == 0 {
		return nil
	}
	return f.reqs[len(f.reqs)-1]
}

var (
	fakeFileID  = []byte{0xab, 0xcd, 0x01, 0x02, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14}
	fakeChainID = []byte{0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 1, 2, 3, 4, 5, 6, 7, 8}
	fakeStart   = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
)

func fakePoint(seq uint32) *commonv1.Point {
	id := append([]byte{}, fakeFileID...)
	id[15] = byte(seq)
	kind := commonv1.PointKind_POINT_KIND_FULL
	if seq > 1 {
		kind = commonv1.PointKind_POINT_KIND_INCREMENTAL
	}
	return &commonv1.Point{Backup: "web-offsite", FileId: id, ChainId: fakeChainID, Sequence: seq, Kind: kind, Encrypted: true,
		CreatedUnixNano: fakeStart.Add(time.Duration(seq) * time.Hour).UnixNano(), Size: 5 << 20, KeyRefs: []string{"password"}, PasswordHint: "the usual"}
}

func fakeSession(id string, result controllerv1.SessionResult, read int64) *controllerv1.Session {
	s := &controllerv1.Session{Id: id, Job: "web-offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, Mode: "default", Result: result,
		StartedUnixNano: fakeStart.UnixNano(),
		Stats:           &commonv1.SessionStats{BytesRead: read, BytesSent: read / 2, BytesWritten: read / 2, Records: 7, DurationNanos: int64(2 * time.Second)}}
	switch result {
	case controllerv1.SessionResult_SESSION_RESULT_SUCCESS:
		s.EndedUnixNano = fakeStart.Add(2 * time.Second).UnixNano()
		s.Point = fakePoint(1)
	case controllerv1.SessionResult_SESSION_RESULT_FAILED:
		s.EndedUnixNano = fakeStart.Add(2 * time.Second).UnixNano()
		s.Error = "target agent vault-b: disk full"
	}
	return s
}

func (f *fakeController) AddAgent(_ context.Context, r *controllerv1.AddAgentRequest) (*controllerv1.AddAgentResponse, error) {
	f.record(r)
	return &controllerv1.AddAgentResponse{Agent: r.Agent}, nil
}

func (f *fakeController) ListAgents(_ context.Context, r *controllerv1.ListAgentsRequest) (*controllerv1.ListAgentsResponse, error) {
	f.record(r)
	return &controllerv1.ListAgentsResponse{Agents: []*controllerv1.Agent{
		{Name: "site-a", Address: "10.0.0.5:7401", Role: controllerv1.AgentRole_AGENT_ROLE_SOURCE},
		{Name: "vault-b", Address: "vault-b.example.net:7402", Role: controllerv1.AgentRole_AGENT_ROLE_TARGET},
	}}, nil
}

func withoutPassword(s *controllerv1.JobSpec) *controllerv1.JobSpec {
	c := proto.Clone(s).(*controllerv1.JobSpec)
	c.Password = nil
	return c
}

func (f *fakeController) CreateJob(_ context.Context, r *controllerv1.CreateJobRequest) (*controllerv1.CreateJobResponse, error) {
	f.record(r)
	if r.Spec.GetName() == "taken" {
		return nil, status.Error(codes.AlreadyExists, "job taken exists already (change it with `controller job update`)")
	}
	return &controllerv1.CreateJobResponse{Job: &controllerv1.Job{Spec: withoutPassword(r.Spec), CreatedUnix: fakeStart.Unix()}}, nil
}

func (f *fakeController) UpdateJob(_ context.Context, r *controllerv1.UpdateJobRequest) (*controllerv1.UpdateJobResponse, error) {
	f.record(r)
	return &controllerv1.UpdateJobResponse{Job: &controllerv1.Job{Spec: withoutPassword(r.Spec)}}, nil
}

func fakeCopyJob() *controllerv1.Job {
	return &controllerv1.Job{Spec: &controllerv1.JobSpec{Name: "web-offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY,
		FromAgent: "site-a", FromRepository: "main", FromJob: "web", ToAgent: "vault-b", ToRepository: "offsite",
		Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, PasswordHint: "the usual", BlockSize: 1 << 20,
		Compression: commonv1.Compression_COMPRESSION_ZSTD, CompressionLevel: 1},
		CreatedUnix: fakeStart.Unix(), LastSession: "s1", LastResult: controllerv1.SessionResult_SESSION_RESULT_SUCCESS}
}

func (f *fakeController) GetJob(_ context.Context, r *controllerv1.GetJobRequest) (*controllerv1.GetJobResponse, error) {
	f.record(r)
	switch r.Name {
	case "missing":
		return nil, status.Error(codes.NotFound, `no job named "missing" (see `+"`controller job list`"+`)`)
	case "agentdown":
		// The controller reports an agent it cannot reach as Unavailable.
		return nil, status.Error(codes.Unavailable, "source agent site-a at 10.0.0.5:7401 is unreachable (connection refused): check that it runs")
	}
	return &controllerv1.GetJobResponse{Job: fakeCopyJob()}, nil
}

func (f *fakeController) ListJobs(_ context.Context, r *controllerv1.ListJobsRequest) (*controllerv1.ListJobsResponse, error) {
	f.record(r)
	return &controllerv1.ListJobsResponse{Jobs: []*controllerv1.Job{
		{Spec: &controllerv1.JobSpec{Name: "web", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "site-a", Repository: "main", Path: "/var/www",
			Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_NONE}},
		fakeCopyJob(),
	}}, nil
}

func (f *fakeController) DeleteJob(_ context.Context, r *controllerv1.DeleteJobRequest) (*controllerv1.DeleteJobResponse, error) {
	f.record(r)
	return &controllerv1.DeleteJobResponse{}, nil
}

// RunJob plays a session: job "fails" ends in failure, "vanishes" ends the
// stream without a verdict, others succeed.
func (f *fakeController) RunJob(r *controllerv1.RunJobRequest, stream controllerv1.ControllerService_RunJobServer) error {
	f.record(r)
	const total = 10 << 20
	running := controllerv1.SessionResult_SESSION_RESULT_RUNNING
	if err := stream.Send(&controllerv1.RunJobResponse{Session: fakeSession("s1", running, 0), TotalBytes: total}); err != nil {
		return err
	}
	if !r.Wait {
		return nil
	}
	stream.Send(&controllerv1.RunJobResponse{Session: fakeSession("s1", running, total/2), TotalBytes: total})
	switch r.Name {
	case "vanishes":
		return nil
	case "fails":
		return stream.Send(&controllerv1.RunJobResponse{Session: fakeSession("s1", controllerv1.SessionResult_SESSION_RESULT_FAILED, total/2), TotalBytes: total})
	}
	return stream.Send(&controllerv1.RunJobResponse{Session: fakeSession("s1", controllerv1.SessionResult_SESSION_RESULT_SUCCESS, total), TotalBytes: total})
}

func (f *fakeController) ListSessions(_ context.Context, r *controllerv1.ListSessionsRequest) (*controllerv1.ListSessionsResponse, error) {
	f.record(r)
	return &controllerv1.ListSessionsResponse{Sessions: []*controllerv1.Session{
		fakeSession("s2", controllerv1.SessionResult_SESSION_RESULT_FAILED, 1<<20),
		fakeSession("s1", controllerv1.SessionResult_SESSION_RESULT_SUCCESS, 10<<20),
	}}, nil
}

func (f *fakeController) GetSession(_ context.Context, r *controllerv1.GetSessionRequest) (*controllerv1.GetSessionResponse, error) {
	f.record(r)
	if r.Id == "wan1" {
		return &controllerv1.GetSessionResponse{Session: fakeWANSession()}, nil
	}
	if r.Id == "s1" {
		// What "vanishes" ended up as.
		return &controllerv1.GetSessionResponse{Session: fakeSession("s1", controllerv1.SessionResult_SESSION_RESULT_SUCCESS, 10<<20)}, nil
	}
	return &controllerv1.GetSessionResponse{Session: fakeSession(r.Id, controllerv1.SessionResult_SESSION_RESULT_FAILED, 1<<20)}, nil
}

func (f *fakeController) ListPoints(_ context.Context, r *controllerv1.ListPointsRequest) (*controllerv1.ListPointsResponse, error) {
	f.record(r)
	return &controllerv1.ListPointsResponse{Points: []*commonv1.Point{fakePoint(1), fakePoint(2)}}, nil
}

func (f *fakeController) Restore(_ context.Context, r *controllerv1.RestoreRequest) (*controllerv1.RestoreResponse, error) {
	f.record(r)
	return &controllerv1.RestoreResponse{Objects: 12, Bytes: 3 << 20}, nil
}

func (f *fakeController) Verify(_ context.Context, r *controllerv1.VerifyRequest) (*controllerv1.VerifyResponse, error) {
	f.record(r)
	resp := &controllerv1.VerifyResponse{Files: 2, Records: 40, Bytes: 40 << 20}
	if !r.Keyless {
		resp.Problems = []string{"abcd0102.ferry offset 4096: record checksum mismatch"}
	}
	return resp, nil
}

// startFakeController serves f with mutual TLS on loopback and points the
// FERRY_* variables at it.
func startFakeController(t *testing.T) *fakeController {
	t.Helper()
	f := &fakeController{}
	p := pki.NewTestPKI(t, "")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(p.ServerTLS("controller", pki.RoleController, pki.RoleClient))))
	controllerv1.RegisterControllerServiceServer(g, f)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	cert, key := p.Issue("admin", pki.RoleClient)
	setConnEnv(t, lis.Addr().String(), p.CAFile, cert, key)
	return f
}

func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	code, out, stderr := run(t, args...)
	if code != 0 {
		t.Fatalf("%q: exit %d\n%s\n%s", args, code, out, stderr)
	}
	return out
}

func TestAgainstFakeController(t *testing.T) {
	f := startFakeController(t)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("s3cret words\n"), 0o600)

	t.Run("agents", func(t *testing.T) {
		out := mustRun(t, "agent", "add", "site-a", "--address", "10.0.0.5:7401", "--role", "source")
		got := f.last().(*controllerv1.AddAgentRequest).Agent
		if got.Name != "site-a" || got.Address != "10.0.0.5:7401" || got.Role != controllerv1.AgentRole_AGENT_ROLE_SOURCE {
			t.Fatalf("request %v", got)
		}
		if !strings.Contains(out, "agent site-a added") {
			t.Fatalf("%s", out)
		}
		out = mustRun(t, "agent", "list")
		if !strings.Contains(out, "NAME") || !strings.Contains(out, "vault-b.example.net:7402") || !strings.Contains(out, "target") {
			t.Fatalf("%s", out)
		}
		var js struct{ Agents []agentView }
		if err := json.Unmarshal([]byte(mustRun(t, "agent", "list", "-o", "json")), &js); err != nil || len(js.Agents) != 2 || js.Agents[1].Role != "target" {
			t.Fatalf("%+v %v", js, err)
		}
	})

	t.Run("create", func(t *testing.T) {
		mustRun(t, "job", "create", "web", "--kind", "backup", "--agent", "site-a", "--repo", "main", "--path", "/var/www")
		s := f.last().(*controllerv1.CreateJobRequest).Spec
		want := &controllerv1.JobSpec{Name: "web", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "site-a", Repository: "main", Path: "/var/www",
			Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_NONE, BlockSize: 1 << 20, Compression: commonv1.Compression_COMPRESSION_ZSTD, CompressionLevel: 1}
		if !proto.Equal(s, want) {
			t.Fatalf("backup spec\n got %v\nwant %v", s, want)
		}

		out := mustRun(t, "job", "create", "web-offsite", "--kind", "copy", "--from", "site-a:main/web", "--to", "vault-b:offsite",
			"--password-file", pw, "--password-hint", "the usual")
		s = f.last().(*controllerv1.CreateJobRequest).Spec
		want = &controllerv1.JobSpec{Name: "web-offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY,
			FromAgent: "site-a", FromRepository: "main", FromJob: "web", ToAgent: "vault-b", ToRepository: "offsite",
			Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("s3cret words"), PasswordHint: "the usual"}
		if !proto.Equal(s, want) {
			t.Fatalf("copy spec\n got %v\nwant %v", s, want)
		}
		if !strings.Contains(out, "copy of site-a:main/web into vault-b:offsite, encryption password") || strings.Contains(out, "s3cret") {
			t.Fatalf("%s", out)
		}

		code, _, stderr := run(t, "job", "create", "taken", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p")
		if code != ExitFailure || !strings.Contains(stderr, "Error: job taken exists already") {
			t.Fatalf("exit %d: %q", code, stderr)
		}
		code, _, stderr = run(t, "job", "create", "w", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p", "--password-file", filepath.Join(t.TempDir(), "none"))
		if code != ExitFailure || !strings.Contains(stderr, "read password file") {
			t.Fatalf("missing password file: exit %d: %q", code, stderr)
		}
	})

	t.Run("update", func(t *testing.T) {
		mustRun(t, "job", "update", "web-offsite", "--password-file", pw, "--password-hint", "new")
		r := f.last().(*controllerv1.UpdateJobRequest)
		if strings.Join(r.Fields, ",") != "password-file,password-hint" || string(r.Spec.Password) != "s3cret words" ||
			r.Spec.PasswordHint != "new" || r.Spec.Name != "web-offsite" {
			t.Fatalf("update: %v", r)
		}
		mustRun(t, "job", "update", "web", "--compression-level", "3", "--block-size", "4MiB")
		r = f.last().(*controllerv1.UpdateJobRequest)
		if strings.Join(r.Fields, ",") != "block-size,compression-level" || r.Spec.CompressionLevel != 3 || r.Spec.BlockSize != 4<<20 ||
			r.Spec.Encryption != commonv1.EncryptionMode_ENCRYPTION_MODE_UNSPECIFIED || r.Spec.Compression != commonv1.Compression_COMPRESSION_UNSPECIFIED {
			t.Fatalf("update: %v", r)
		}
		mustRun(t, "job", "update", "web-offsite", "--encryption", "none", "--to", "vault-c:cold")
		r = f.last().(*controllerv1.UpdateJobRequest)
		if strings.Join(r.Fields, ",") != "to,encryption" || r.Spec.ToAgent != "vault-c" || r.Spec.ToRepository != "cold" ||
			r.Spec.Encryption != commonv1.EncryptionMode_ENCRYPTION_MODE_NONE {
			t.Fatalf("update: %v", r)
		}
	})

	t.Run("show", func(t *testing.T) {
		out := mustRun(t, "job", "list")
		for _, want := range []string{"NAME", "site-a:/var/www", "site-a:main/web", "vault-b:offsite", "success"} {
			if !strings.Contains(out, want) {
				t.Fatalf("job list: no %q in\n%s", want, out)
			}
		}
		out = mustRun(t, "job", "show", "web-offsite")
		if !strings.Contains(out, "password hint:") || !strings.Contains(out, "the usual") || !strings.Contains(out, "1.0 MiB") {
			t.Fatalf("job show:\n%s", out)
		}
		var jv jobView
		if err := json.Unmarshal([]byte(mustRun(t, "job", "show", "web-offsite", "-o", "json")), &jv); err != nil ||
			jv.Kind != "copy" || jv.Encryption != "password" || jv.FromJob != "web" || jv.LastResult != "success" || jv.Created == nil {
			t.Fatalf("%+v %v", jv, err)
		}
		code, _, stderr := run(t, "job", "show", "missing")
		if code != ExitFailure || !strings.Contains(stderr, `Error: no job named "missing"`) {
			t.Fatalf("not found: exit %d: %q", code, stderr)
		}
		code, _, stderr = run(t, "job", "show", "agentdown")
		if code != ExitFailure || !strings.Contains(stderr, "source agent site-a") || strings.Contains(stderr, "cannot reach the controller") {
			t.Fatalf("agent down: exit %d: %q", code, stderr)
		}
		if out := mustRun(t, "job", "delete", "web"); !strings.Contains(out, "job web deleted") {
			t.Fatal(out)
		}
	})

	t.Run("run", func(t *testing.T) {
		out := mustRun(t, "job", "run", "web-offsite", "--full")
		if out != "s1\n" {
			t.Fatalf("run: %q", out)
		}
		if r := f.last().(*controllerv1.RunJobRequest); r.Wait || !r.Full || r.Name != "web-offsite" {
			t.Fatalf("run: %v", r)
		}
		out = mustRun(t, "job", "run", "web-offsite", "--wait")
		if !strings.Contains(out, "session s1 of job web-offsite succeeded: point abcd0102") || !strings.Contains(out, "10.0 MiB read") {
			t.Fatalf("run --wait:\n%s", out)
		}
		code, out, stderr := run(t, "job", "run", "fails", "--wait")
		if code != ExitFailure || !strings.Contains(out, "failed") || !strings.Contains(stderr, "session s1 failed: target agent vault-b: disk full") {
			t.Fatalf("failed session: exit %d\n%s\n%s", code, out, stderr)
		}
		out = mustRun(t, "job", "run", "vanishes", "--wait")
		if !strings.Contains(out, "succeeded") {
			t.Fatalf("stream ended early:\n%s", out)
		}
	})

	t.Run("sessions", func(t *testing.T) {
		out := mustRun(t, "session", "list", "--job", "web-offsite")
		if f.last().(*controllerv1.ListSessionsRequest).Job != "web-offsite" || !strings.Contains(out, "SESSION") || !strings.Contains(out, "failed") {
			t.Fatalf("session list:\n%s", out)
		}
		out = mustRun(t, "session", "show", "s2")
		for _, want := range []string{"mode:", "default", "bytes read:", "1.0 MiB", "bytes sent:", "bytes written:", "speed:", "duration:", "2s", "result:", "error:", "disk full"} {
			if !strings.Contains(out, want) {
				t.Fatalf("session show: no %q in\n%s", want, out)
			}
		}
		var sv sessionView
		if err := json.Unmarshal([]byte(mustRun(t, "session", "show", "s1", "-o", "json")), &sv); err != nil ||
			sv.Result != "success" || sv.BytesRead != 10<<20 || sv.DurationSeconds != 2 || sv.Point == nil || sv.Point.Chain != "11223344556677880102030405060708" {
			t.Fatalf("%+v %v", sv, err)
		}
	})

	t.Run("points", func(t *testing.T) {
		out := mustRun(t, "point", "list", "--job", "web-offsite")
		for _, want := range []string{"CHAIN", "112233445566", "incremental", "abcd0102030405060708090a0b0c0d02", "aes-256-gcm (password)", "5.0 MiB"} {
			if !strings.Contains(out, want) {
				t.Fatalf("point list: no %q in\n%s", want, out)
			}
		}
		var ls struct{ Backups []lsBackup }
		if err := json.Unmarshal([]byte(mustRun(t, "point", "list", "--job", "web-offsite", "-o", "json")), &ls); err != nil ||
			len(ls.Backups) != 1 || len(ls.Backups[0].Chains) != 1 || len(ls.Backups[0].Chains[0].Points) != 2 || ls.Backups[0].Chains[0].Points[1].Kind != "incremental" {
			t.Fatalf("%+v %v", ls, err)
		}
	})

	t.Run("restore and verify", func(t *testing.T) {
		out := mustRun(t, "restore", "--job", "web-offsite", "--point", "ABCD", "--to", "vault-b:/tmp/web")
		r := f.last().(*controllerv1.RestoreRequest)
		if !bytes.Equal(r.PointId, []byte{0xab, 0xcd}) || r.Agent != "vault-b" || r.Path != "/tmp/web" || r.Job != "web-offsite" {
			t.Fatalf("restore: %v", r)
		}
		if !strings.Contains(out, "12 objects") {
			t.Fatal(out)
		}
		mustRun(t, "restore", "--job", "web-offsite", "--to", "vault-b:/tmp/web")
		if r := f.last().(*controllerv1.RestoreRequest); len(r.PointId) != 0 {
			t.Fatalf("restore of the latest point sent %x", r.PointId)
		}
		out = mustRun(t, "verify", "--job", "web-offsite", "--keyless", "--point", "abcd0102030405060708090a0b0c0d01")
		if v := f.last().(*controllerv1.VerifyRequest); !v.Keyless || len(v.PointId) != 16 {
			t.Fatalf("verify: %v", v)
		}
		if !strings.Contains(out, "keyless verify ok") {
			t.Fatal(out)
		}
		code, out, stderr := run(t, "verify", "--job", "web-offsite")
		if code != ExitFailure || !strings.Contains(out, "PROBLEM: abcd0102.ferry offset 4096") || !strings.Contains(out, "verify FAILED") {
			t.Fatalf("verify with problems: exit %d\n%s\n%s", code, out, stderr)
		}
	})
}

func TestLineViewThrottles(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	v := &lineView{w: &buf, id: "s1", now: func() time.Time { return now }}
	s := func(n int64) *controllerv1.Session {
		return &controllerv1.Session{Stats: &commonv1.SessionStats{BytesRead: n}}
	}
	v.update(s(0), 1<<30)
	for i := 1; i <= 10; i++ {
		now = now.Add(250 * time.Millisecond)
		v.update(s(int64(i)*250e6/4), 1<<30)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines in 2.5 s:\n%s", len(lines), buf.String())
	}
	if lines[0] != "session s1: 238.4 MiB of 1.0 GiB, 250 MB/s" {
		t.Fatalf("%q", lines[0])
	}
	buf.Reset()
	v = &lineView{w: &buf, id: "s2", now: func() time.Time { return now }}
	v.update(s(0), 0)
	now = now.Add(2 * time.Second)
	v.update(s(10e6), 0)
	if got := buf.String(); got != "session s2: 9.5 MiB, 5.0 MB/s\n" {
		t.Fatalf("%q", got)
	}
}
