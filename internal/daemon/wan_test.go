package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/agent"
	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
)

// received keeps every message a server received.
type received struct {
	mu   sync.Mutex
	msgs []proto.Message
}

func (r *received) add(m any) {
	if pm, ok := m.(proto.Message); ok {
		r.mu.Lock()
		r.msgs = append(r.msgs, proto.Clone(pm))
		r.mu.Unlock()
	}
}

type recvStream struct {
	grpc.ServerStream
	r *received
}

func (s *recvStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.r.add(m)
	}
	return err
}

// startRecordingSource starts a second source agent, name, on loopback with
// a certificate of the dev PKI, recording every message it receives, and
// adds it to the controller.
func startRecordingSource(t *testing.T, env *DevEnv, c controllerv1.ControllerServiceClient, name string) *received {
	t.Helper()
	certFile, keyFile, err := pki.Issue(filepath.Join(env.Dir, "pki"), pki.IssueRequest{Name: name, Role: pki.RoleSource})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := pki.LoadPool(env.CACert)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Create(filepath.Join(t.TempDir(), name+"-repo"))
	if err != nil {
		t.Fatal(err)
	}
	repos := []*agent.Repository{{Name: "local", Repo: r}}
	dial := func(ctx context.Context, addr string, role pki.Role, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
		ctls, err := pki.ClientConfig(cert, roots, role)
		if err != nil {
			return nil, err
		}
		return grpc.NewClient(addr, append(append(agent.DialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(ctls))), opts...)...)
	}
	stls, err := pki.ServerConfig(cert, roots, pki.RoleController)
	if err != nil {
		t.Fatal(err)
	}
	rec := &received{}
	g := grpc.NewServer(append(agent.ServerOptions(), grpc.Creds(credentials.NewTLS(stls)),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &recvStream{ServerStream: ss, r: rec})
		}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rec.add(req)
			return h(ctx, req)
		}))...)
	repositoryv1.RegisterRepositoryServiceServer(g, agent.NewRepositories(name, "source", repos))
	sourcev1.RegisterSourceServiceServer(g, agent.NewSource(name, repos, dial, hclog.NewNullLogger()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	if _, err := c.AddAgent(context.Background(), &controllerv1.AddAgentRequest{Agent: &controllerv1.Agent{
		Name: name, Address: ln.Addr().String(), Role: controllerv1.AgentRole_AGENT_ROLE_SOURCE}}); err != nil {
		t.Fatal(err)
	}
	return rec
}

func getSession(t *testing.T, c controllerv1.ControllerServiceClient, id string) *controllerv1.Session {
	t.Helper()
	resp, err := c.GetSession(context.Background(), &controllerv1.GetSessionRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.Session
}

// TestDevWANCopy runs WAN-mode copy jobs through the controller: a full and
// an incremental restore byte-identical with the copy job's password; the
// source agent never receives the copy's session secret; a second branch
// copying the same data to the same target sends no block (the target's
// cache has them all); the sessions' WAN statistics are recorded.
func TestDevWANCopy(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c := devClient(t, env)
	branch := startRecordingSource(t, env, c, "branch")

	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 21, datagen.TreeOptions{Size: 24 << 20}); err != nil {
		t.Fatal(err)
	}
	create := func(spec *controllerv1.JobSpec) {
		t.Helper()
		if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec}); err != nil {
			t.Fatalf("create %s: %v", spec.Name, err)
		}
	}
	pw := commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD
	for _, a := range []string{"source", "branch"} {
		create(&controllerv1.JobSpec{Name: a + "-site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: a, Repository: "local", Path: src,
			Encryption: pw, Password: []byte(a + " backup pw"), BlockSize: 256 << 10})
		create(&controllerv1.JobSpec{Name: a + "-offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: a, FromRepository: "local", FromJob: a + "-site",
			ToAgent: "target", ToRepository: "local", Encryption: pw, Password: []byte(a + " copy pw"), Wan: true})
	}
	// --wan is for copy jobs.
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{Name: "bad", Kind: controllerv1.JobKind_JOB_KIND_BACKUP,
		Agent: "source", Repository: "local", Path: src, Wan: true}}); err == nil {
		t.Fatal("a backup job took --wan")
	}
	if j, err := c.GetJob(ctx, &controllerv1.GetJobRequest{Name: "branch-offsite"}); err != nil || !j.Job.Spec.Wan {
		t.Fatalf("job show: %v %v", j, err)
	}

	runJob(t, c, "source-site")
	snap := filepath.Join(t.TempDir(), "snap1")
	if out, err := exec.Command("cp", "-a", src, snap).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	full := getSession(t, c, runJob(t, c, "source-offsite").Id)
	fs := full.Stats
	t.Logf("source full: %+v", fs)
	if full.Mode != "wan" || fs.Blocks == 0 || fs.BlocksSent+fs.CacheHitBlocks != fs.Blocks || fs.BlockBytesSent == 0 || fs.DigestBytesSent == 0 ||
		fs.WireBytesReceived == 0 || fs.PlainBytes == 0 || fs.Records != fs.Blocks || fs.BytesWritten == 0 {
		t.Fatalf("the full WAN session's stats: mode %q %+v", full.Mode, fs)
	}

	// Another branch, the same data: the target's cache has every block.
	runJob(t, c, "branch-site")
	second := getSession(t, c, runJob(t, c, "branch-offsite").Id).Stats
	t.Logf("branch full: %+v", second)
	if second.Blocks != fs.Blocks || second.CacheHitBlocks != second.Blocks || second.BlocksSent != 0 || second.BlockBytesSent != 0 {
		t.Fatalf("the second branch sent blocks the target had: %+v", second)
	}
	t.Logf("wire bytes toward the target: first copy %d, second copy of the same data from another branch %d (%.2f%%)",
		fs.WireBytesSent, second.WireBytesSent, 100*float64(second.WireBytesSent)/float64(fs.WireBytesSent))

	if _, err := datagen.MutateTree(src, 5); err != nil {
		t.Fatal(err)
	}
	runJob(t, c, "source-site")
	inc := getSession(t, c, runJob(t, c, "source-offsite").Id)
	if inc.Point.Kind != commonv1.PointKind_POINT_KIND_INCREMENTAL || inc.Stats.Blocks == 0 || inc.Stats.Blocks >= fs.Blocks {
		t.Fatalf("the incremental WAN session: %+v %+v", inc.Point, inc.Stats)
	}
	pts, err := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "source-offsite"})
	if err != nil || len(pts.Points) != 2 {
		t.Fatalf("points: %v %v", pts, err)
	}
	for i, want := range []string{snap, src} {
		to := filepath.Join(t.TempDir(), "restored")
		if _, err := c.Restore(ctx, &controllerv1.RestoreRequest{Job: "source-offsite", PointId: pts.Points[i].FileId, Agent: "target", Path: to}); err != nil {
			t.Fatalf("restore point %d: %v", i, err)
		}
		datagen.SameTree(t, want, to)
	}
	for _, keyless := range []bool{true, false} {
		if v, err := c.Verify(ctx, &controllerv1.VerifyRequest{Job: "source-offsite", Keyless: keyless}); err != nil || len(v.Problems) > 0 || v.Files != 2 {
			t.Fatalf("verify keyless=%v: %v %+v", keyless, err, v)
		}
	}
	// The copy job's password opens the target's files (outside ferry too).
	tr, _ := repo.Open(filepath.Join(dir, "target", "repos", "local"))
	to := filepath.Join(t.TempDir(), "offline")
	if _, err := backup.Restore(ctx, tr, "branch-offsite", to, backup.RestoreOptions{Keys: keyring.New([]byte("branch copy pw"))}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, snap, to)

	// The branch source agent never got the copy's session secret: its
	// Copy requests carry no key, and no message it received holds the
	// secret the target's file is sealed with.
	var secrets [][]byte
	ix, err := tr.Index("branch-offsite")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ix.Points() {
		f, fd, err := format.OpenPath(tr.Path("branch-offsite", p))
		if err != nil {
			t.Fatal(err)
		}
		ss, err := keyring.New([]byte("branch copy pw")).Open(f)
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			secrets = append(secrets, s.Secret())
		}
	}
	branch.mu.Lock()
	defer branch.mu.Unlock()
	copies := 0
	for _, m := range branch.msgs {
		if cr, ok := m.(*sourcev1.CopyRequest); ok {
			copies++
			if cr.Key != nil || !cr.Wan || len(cr.KeyTable) == 0 {
				t.Errorf("a WAN copy request to the source: key %v, wan %v, key table %d bytes", cr.Key != nil, cr.Wan, len(cr.KeyTable))
			}
		}
		b, _ := proto.Marshal(m)
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				t.Errorf("the source agent received the copy's session secret in a %T", m)
			}
		}
	}
	if copies != 1 || len(secrets) != 1 {
		t.Fatalf("recorded %d copy requests, %d secrets", copies, len(secrets))
	}
}
