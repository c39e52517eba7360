package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/grant"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
)

var (
	sourcePassword = []byte("source side password")
	copyPassword   = []byte("copy job password")
	sentinel       = []byte("FERRY-SENTINEL-9f3c1b-PLAINTEXT-MUST-NOT-LEAK")
)

// recorder keeps every message the target server received.
type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (rec *recorder) add(m any) {
	if pm, ok := m.(proto.Message); ok {
		b, _ := proto.Marshal(pm)
		rec.mu.Lock()
		rec.msgs = append(rec.msgs, b)
		rec.mu.Unlock()
	}
}

type recStream struct {
	grpc.ServerStream
	rec *recorder
}

func (s *recStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.rec.add(m)
	}
	return err
}

// targetEnv is a target agent served in-process on loopback with real mTLS.
type targetEnv struct {
	svc    *Target
	pki    *pki.TestPKI
	addr   string
	repo   *repo.Repo
	signer *grant.Signer
	rec    *recorder
}

func startTarget(t *testing.T, requireEncryption bool) *targetEnv {
	t.Helper()
	p := pki.NewTestPKI(t, "")
	r, err := repo.Create(filepath.Join(t.TempDir(), "target-repo"))
	if err != nil {
		t.Fatal(err)
	}
	signer, err := grant.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	env := &targetEnv{pki: p, repo: r, signer: signer, rec: &recorder{}}
	svc := NewTarget("target", []*Repository{{Name: "local", Repo: r, RequireEncryption: requireEncryption}},
		[]ed25519Key{signer.Public()}, hclog.NewNullLogger())
	env.svc = svc
	opts := append(ServerOptions(),
		grpc.Creds(credentials.NewTLS(p.ServerTLS("target", pki.RoleTarget, pki.RoleSource, pki.RoleController))),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, &recStream{ServerStream: ss, rec: env.rec})
		}),
		grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			env.rec.add(req)
			return h(ctx, req)
		}))
	s := grpc.NewServer(opts...)
	targetv1.RegisterTargetServiceServer(s, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	env.addr = ln.Addr().String()
	return env
}

func (env *targetEnv) client(t *testing.T, name string, role pki.Role) targetv1.TargetServiceClient {
	t.Helper()
	return env.clientTLS(t, env.pki.ClientTLS(name, role, pki.RoleTarget))
}

func (env *targetEnv) clientTLS(t *testing.T, cfg any) targetv1.TargetServiceClient {
	t.Helper()
	var creds grpc.DialOption
	switch c := cfg.(type) {
	case credentials.TransportCredentials:
		creds = grpc.WithTransportCredentials(c)
	default:
		creds = grpc.WithTransportCredentials(credentials.NewTLS(c.(*tlsConfig)))
	}
	conn, err := grpc.NewClient(env.addr, append(DialOptions(), creds)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return targetv1.NewTargetServiceClient(conn)
}

// copyPlan is one copy session as the controller would set it up.
type copyPlan struct {
	spec     backup.CopySpec
	grant    *targetv1.Grant
	session  *keys.Session
	grantMsg []byte
	grantSig []byte
}

func newID(t *testing.T) format.ID {
	var id format.ID
	rand.Read(id[:])
	return id
}

func planCopy(t *testing.T, env *targetEnv, pk *keys.PasswordKey, point, base string, backupID, chainID, parent format.ID, seq uint32) *copyPlan {
	t.Helper()
	s, err := keys.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	kt, err := keyring.PasswordTable(pk, s)
	if err != nil {
		t.Fatal(err)
	}
	fileID := newID(t)
	cp := &copyPlan{session: s}
	cp.spec = backup.CopySpec{
		Point: point, Base: base, SourceKeys: keyring.New(sourcePassword),
		FileID: fileID, BackupID: backupID, ChainID: chainID, ParentID: parent, Sequence: seq,
		BackupName: "copyjob", Session: s, KeyTable: kt,
	}
	cp.grant = &targetv1.Grant{
		SessionId: fmt.Sprintf("s%d", seq), Job: "copyjob", Repository: "local", Backup: "copyjob",
		BackupId: backupID[:], ChainId: chainID[:], FileId: fileID[:], Sequence: seq,
		SourceAgent: "source", ExpiresUnix: time.Now().Add(time.Hour).Unix(),
	}
	cp.sign(t, env.signer)
	return cp
}

func (cp *copyPlan) sign(t *testing.T, s *grant.Signer) {
	t.Helper()
	var err error
	if cp.grantMsg, cp.grantSig, err = s.Sign(cp.grant); err != nil {
		t.Fatal(err)
	}
}

// sourceTree makes a source tree with a file full of the sentinel among
// random bytes, so that an unencrypted copy would show it.
func sourceTree(t *testing.T, dir string) {
	t.Helper()
	if err := datagen.Tree(dir, 8, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	rnd := datagen.NewRandom(3, 1<<20)
	chunk := make([]byte, 4096)
	for off := int64(0); off < 1<<20; off += 4096 {
		rnd.ReadAt(chunk, off)
		b.Write(chunk)
		b.Write(sentinel)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret.db"), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func snapshot(t *testing.T, dir string) string {
	t.Helper()
	to := filepath.Join(t.TempDir(), "snap")
	if out, err := execCommand("cp", "-a", dir, to); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return to
}

func TestCopyFullThenIncremental(t *testing.T) {
	env := startTarget(t, true)
	ctx := context.Background()

	// The source side: an encrypted backup with two points.
	srcDir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, srcDir)
	srcRepo, err := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	if err != nil {
		t.Fatal(err)
	}
	bo := backup.Options{BlockSize: 256 << 10, Password: sourcePassword, KDF: keys.TestKDF,
		Compression: backup.Compression{Algorithm: format.CompressionZstd}}
	p1, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, bo)
	if err != nil {
		t.Fatal(err)
	}
	snap1 := snapshot(t, srcDir)
	if _, err := datagen.MutateTree(srcDir, 4); err != nil {
		t.Fatal(err)
	}
	p2, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, bo)
	if err != nil {
		t.Fatal(err)
	}

	pk, err := keys.NewPasswordKey(copyPassword, keys.TestKDF, "copy hint")
	if err != nil {
		t.Fatal(err)
	}
	client := env.client(t, "source", pki.RoleSource)
	backupID, chainID := newID(t), newID(t)

	full := planCopy(t, env, pk, p1.FileID.String(), "", backupID, chainID, format.ID{}, 1)
	res1, c1, err := SendCopy(ctx, client, srcRepo, "nightly", full.spec, full.grantMsg, full.grantSig)
	if err != nil {
		t.Fatalf("full copy: %v", err)
	}
	inc := planCopy(t, env, pk, p2.FileID.String(), p1.FileID.String(), backupID, chainID, full.spec.FileID, 2)
	res2, c2, err := SendCopy(ctx, client, srcRepo, "nightly", inc.spec, inc.grantMsg, inc.grantSig)
	if err != nil {
		t.Fatalf("incremental copy: %v", err)
	}
	if res1.Kind != format.KindFull || res2.Kind != format.KindIncremental || c1.Size == 0 || c2.Size == 0 {
		t.Fatalf("kinds %v %v, sizes %d %d", res1.Kind, res2.Kind, c1.Size, c2.Size)
	}
	if res2.Records*2 > res1.Records {
		t.Errorf("the incremental copy sent %d records, the full %d", res2.Records, res1.Records)
	}

	// Restore both points at the target site, with the copy job's password.
	for i, want := range []string{snap1, srcDir} {
		id := []format.ID{full.spec.FileID, inc.spec.FileID}[i]
		to := filepath.Join(t.TempDir(), "restored")
		if _, err := backup.Restore(ctx, env.repo, "copyjob", to, backup.RestoreOptions{Point: id.String(), Keys: keyring.New(copyPassword)}); err != nil {
			t.Fatalf("restore copy point %d: %v", i+1, err)
		}
		datagen.SameTree(t, want, to)
	}
	for _, keyless := range []bool{true, false} {
		if res, err := backup.Verify(ctx, env.repo, "copyjob", backup.VerifyOptions{Keyless: keyless, Keys: keyring.New(copyPassword)}); err != nil {
			t.Fatalf("verify at target (keyless %v): %v %v", keyless, err, res.Problems)
		}
	}
	// The source password does not open the copies: they are under the
	// copy job's own keys.
	if _, err := backup.Restore(ctx, env.repo, "copyjob", filepath.Join(t.TempDir(), "x"), backup.RestoreOptions{Keys: keyring.New(sourcePassword)}); err == nil {
		t.Fatal("the source password opened the copy")
	}

	// The target learned nothing: no sentinel in its repository, and no
	// secret or password in any message it received.
	filepath.Walk(env.repo.Dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, sentinel) {
				t.Errorf("the sentinel is in %s at the target", p)
			}
		}
		return nil
	})
	secrets := [][]byte{full.session.Secret(), inc.session.Secret(), copyPassword, sourcePassword}
	for _, pt := range []*backup.Result{p1, p2} {
		f, fd, err := format.OpenPath(pt.Path)
		if err != nil {
			t.Fatal(err)
		}
		ss, err := keyring.New(sourcePassword).Open(f)
		fd.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ss {
			secrets = append(secrets, s.Secret())
		}
	}
	env.rec.mu.Lock()
	defer env.rec.mu.Unlock()
	if len(env.rec.msgs) < 4 {
		t.Fatalf("recorded only %d messages", len(env.rec.msgs))
	}
	for _, m := range env.rec.msgs {
		for _, s := range secrets {
			if bytes.Contains(m, s) {
				t.Fatalf("the target received a secret in a message")
			}
		}
		if bytes.Contains(m, sentinel) {
			t.Fatalf("the target received plaintext")
		}
	}
}

func TestTransferRefusals(t *testing.T) {
	env := startTarget(t, true)
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, srcDir)
	srcRepo, _ := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	bo := backup.Options{BlockSize: 256 << 10, Password: sourcePassword, KDF: keys.TestKDF}
	p1, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, bo)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	other, _ := grant.NewSigner()
	backupID, chainID := newID(t), newID(t)

	for _, tc := range []struct {
		name   string
		caller string
		tweak  func(cp *copyPlan)
		code   codes.Code
		says   string
	}{
		{"expired", "source", func(cp *copyPlan) {
			cp.grant.ExpiresUnix = time.Now().Add(-time.Minute).Unix()
			cp.sign(t, env.signer)
		}, codes.PermissionDenied, "expired"},
		{"forged", "source", func(cp *copyPlan) { cp.sign(t, other) }, codes.PermissionDenied, "not the controller's"},
		{"tampered", "source", func(cp *copyPlan) { cp.grantMsg = append(cp.grantMsg, 0x08, 0x01) }, codes.PermissionDenied, "signature"},
		{"another source agent", "branch-b", func(cp *copyPlan) {}, codes.PermissionDenied, `not "branch-b"`},
		{"another chain", "source", func(cp *copyPlan) {
			c := newID(t)
			cp.grant.ChainId = c[:]
			cp.sign(t, env.signer)
		}, codes.InvalidArgument, "not the one granted"},
		{"another job's backup", "source", func(cp *copyPlan) {
			cp.grant.Backup, cp.grant.Job = "otherjob", "otherjob"
			cp.sign(t, env.signer)
		}, codes.InvalidArgument, "grant for \"otherjob\""},
		{"unknown repository", "source", func(cp *copyPlan) {
			cp.grant.Repository = "nope"
			cp.sign(t, env.signer)
		}, codes.NotFound, "no such repository"},
		{"plaintext into a repository that requires encryption", "source", func(cp *copyPlan) {
			cp.spec.Session, cp.spec.KeyTable = nil, format.KeyTable{}
		}, codes.InvalidArgument, "requires encryption"},
		{"incremental without its chain", "source", func(cp *copyPlan) {
			cp.spec.Sequence, cp.grant.Sequence = 2, 2
			cp.spec.ParentID = newID(t)
			cp.spec.Base = p1.FileID.String()
			cp.sign(t, env.signer)
		}, codes.InvalidArgument, "does not exist here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := planCopy(t, env, pk, p1.FileID.String(), "", backupID, chainID, format.ID{}, 1)
			tc.tweak(cp)
			before := listFiles(t, env.repo.Dir)
			_, _, err := SendCopy(ctx, env.client(t, tc.caller, pki.RoleSource), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig)
			if status.Code(errorsCause(err)) != tc.code || !strings.Contains(fmt.Sprint(err), tc.says) {
				t.Fatalf("want %v saying %q, got %v", tc.code, tc.says, err)
			}
			if after := listFiles(t, env.repo.Dir); after != before {
				t.Fatalf("a refused transfer changed the repository:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	// After all that, the right grant still works.
	cp := planCopy(t, env, pk, p1.FileID.String(), "", backupID, chainID, format.ID{}, 1)
	if _, _, err := SendCopy(ctx, env.client(t, "source", pki.RoleSource), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig); err != nil {
		t.Fatalf("valid copy after refusals: %v", err)
	}
}

// listFiles lists the backup files and partial files under dir.
func listFiles(t *testing.T, dir string) string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && (strings.HasSuffix(p, ".ferry") || strings.HasSuffix(p, ".partial")) {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return strings.Join(out, ",")
}
