package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/pki"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ferry-e2e-bin-")
	if err != nil {
		panic(err)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/",
		"github.com/ferrybackup/ferry/controller", "github.com/ferrybackup/ferry/agent-source",
		"github.com/ferrybackup/ferry/agent-target", "github.com/ferrybackup/ferry/cmd/ferry-datagen")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// stack is a controller and two agents running as separate processes.
type stack struct {
	t                         *testing.T
	dir                       string
	ctlAddr, srcAddr, tgtAddr string
	env                       []string
	procs                     []*exec.Cmd
	target                    *exec.Cmd
	daemons                   [3]*exec.Cmd // controller, source agent, target agent
}

// ctl runs the controller CLI and returns its exit code and output.
func (s *stack) ctl(args ...string) (int, string, string) {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "controller"), args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Dir = s.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("run controller %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

func (s *stack) mustCtl(args ...string) string {
	s.t.Helper()
	code, out, errs := s.ctl(args...)
	if code != 0 {
		s.t.Fatalf("controller %s: exit %d\n%s\n%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (s *stack) start(name string, args ...string) *exec.Cmd {
	s.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Dir = s.dir
	// Appended to, so a daemon started again keeps its earlier log.
	logf, err := os.OpenFile(filepath.Join(s.dir, name+".log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.procs = append(s.procs, cmd)
	s.t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if s.t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			s.t.Logf("%s log:\n%s", name, b)
		}
	})
	return cmd
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startStack sets up a PKI with the CLI, writes configs and starts the
// three daemons, then adds both agents.
func startStack(t *testing.T, requireEncryption bool, targetExtra ...string) *stack {
	t.Helper()
	return startStackVia(t, requireEncryption, nil, targetExtra...)
}

// startStackVia is startStack with the target agent registered at the
// address via returns for its real one (a link simulator in front of it).
func startStackVia(t *testing.T, requireEncryption bool, via func(targetAddr string) string, targetExtra ...string) *stack {
	t.Helper()
	s := &stack{t: t, dir: t.TempDir(), ctlAddr: freePort(t), srcAddr: freePort(t), tgtAddr: freePort(t)}
	s.mustCtl("pki", "init", "--dir", "pki")
	for _, n := range [][2]string{{"controller", "controller"}, {"source", "source"}, {"target", "target"}, {"admin", "client"}} {
		s.mustCtl("pki", "issue", "--dir", "pki", "--name", n[0], "--role", n[1])
	}
	tlsBlock := func(name string) string {
		return fmt.Sprintf("tls {\n  cert_file = \"pki/%s.crt\"\n  key_file = \"pki/%s.key\"\n  ca_file = \"pki/ca.crt\"\n}\n", name, name)
	}
	writeFile(t, filepath.Join(s.dir, "controller.hcl"), fmt.Sprintf("listen = %q\nstate_dir = \"state/controller\"\nlog_level = \"debug\"\n%s", s.ctlAddr, tlsBlock("controller")))
	writeFile(t, filepath.Join(s.dir, "source.hcl"), fmt.Sprintf("name = \"source\"\nrole = \"source\"\nlisten = %q\nstate_dir = \"state/source\"\nlog_level = \"debug\"\n%srepository \"local\" {\n  path = \"repos/source\"\n}\n", s.srcAddr, tlsBlock("source")))
	writeFile(t, filepath.Join(s.dir, "target.hcl"), fmt.Sprintf("name = \"target\"\nrole = \"target\"\nlisten = %q\nstate_dir = \"state/target\"\nlog_level = \"debug\"\n%srepository \"local\" {\n  path = \"repos/target\"\n  require_encryption = %v\n}\n%s\n", s.tgtAddr, tlsBlock("target"), requireEncryption, strings.Join(targetExtra, "\n")))
	s.daemons[0] = s.start("controller", "serve", "-config", "controller.hcl")
	s.daemons[1] = s.start("agent-source", "-config", "source.hcl")
	s.target = s.start("agent-target", "-config", "target.hcl")
	s.daemons[2] = s.target
	s.env = []string{"FERRY_ADDR=" + s.ctlAddr, "FERRY_CACERT=" + filepath.Join(s.dir, "pki/ca.crt"),
		"FERRY_CLIENT_CERT=" + filepath.Join(s.dir, "pki/admin.crt"), "FERRY_CLIENT_KEY=" + filepath.Join(s.dir, "pki/admin.key")}
	for _, addr := range []string{s.ctlAddr, s.srcAddr, s.tgtAddr} {
		waitListening(t, addr)
	}
	s.mustCtl("agent", "add", "source", "--address", s.srcAddr, "--role", "source")
	tgt := s.tgtAddr
	if via != nil {
		tgt = via(s.tgtAddr)
	}
	s.mustCtl("agent", "add", "target", "--address", tgt, "--role", "target")
	return s
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

var sentinel = "FERRY-E2E-SENTINEL-7d1e-PLAINTEXT"

func TestBackupCopyRestoreThreeProcesses(t *testing.T) {
	s := startStack(t, true)
	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, 6, datagen.TreeOptions{Size: 20 << 20}); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&sb, "%s %d\n", sentinel, i)
	}
	writeFile(t, filepath.Join(site, "sentinel.txt"), sb.String())
	writeFile(t, filepath.Join(s.dir, "backup.pw"), "backup password\n")
	writeFile(t, filepath.Join(s.dir, "copy.pw"), "copy password\n")

	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site,
		"--password-file", "backup.pw", "--block-size", "512KiB")
	// Plaintext toward a repository that requires encryption is refused.
	code, _, errs := s.ctl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--encryption", "none")
	if code != 1 || !strings.Contains(errs, "requires encryption") {
		t.Fatalf("plaintext copy job into a repository that requires encryption: exit %d %q", code, errs)
	}
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local",
		"--password-file", "copy.pw", "--password-hint", "the copy one")

	s.mustCtl("job", "run", "site", "--wait")
	snap := filepath.Join(s.dir, "snap-day1")
	if out, err := exec.Command("cp", "-a", site, snap).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	s.mustCtl("job", "run", "offsite", "--wait")
	if _, err := datagen.MutateTree(site, 7); err != nil {
		t.Fatal(err)
	}
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "offsite", "--wait")

	// The target site holds no plaintext of the source, in its
	// repository or its state.
	for _, d := range []string{"repos/target", "state/target"} {
		filepath.Walk(filepath.Join(s.dir, d), func(p string, info os.FileInfo, err error) error {
			if err == nil && info.Mode().IsRegular() {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(sentinel)) {
					t.Errorf("the sentinel is in %s", p)
				}
			}
			return nil
		})
	}

	out := s.mustCtl("point", "list", "--job", "offsite")
	if !strings.Contains(out, "full") || !strings.Contains(out, "incremental") {
		t.Fatalf("point list:\n%s", out)
	}
	s.mustCtl("verify", "--job", "offsite", "--keyless")
	s.mustCtl("verify", "--job", "offsite")
	to := filepath.Join(s.dir, "restored")
	s.mustCtl("restore", "--job", "offsite", "--to", "target:"+to)
	datagen.SameTree(t, site, to)

	out = s.mustCtl("session", "list", "--job", "offsite")
	if strings.Count(out, "success") != 2 {
		t.Fatalf("session list:\n%s", out)
	}
}

// TestEveryListenerRequiresMTLS: no client certificate, a certificate of
// another CA, and a certificate of a role the listener does not serve are
// each refused by the controller and both agents.
func TestEveryListenerRequiresMTLS(t *testing.T) {
	s := startStack(t, false)
	ca, err := pki.LoadCA(filepath.Join(s.dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	own := func(name string, role pki.Role) tls.Certificate {
		leaf, err := ca.Sign(pki.IssueRequest{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		c, err := leaf.TLSCertificate()
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	other := pki.NewTestPKI(t, "")
	for _, l := range []struct {
		name      string
		addr      string
		role      pki.Role // the listener's own role
		okRole    pki.Role // a role it serves
		wrongRole pki.Role // a role it refuses
	}{
		{"controller", s.ctlAddr, pki.RoleController, pki.RoleClient, pki.RoleSource},
		{"source agent", s.srcAddr, pki.RoleSource, pki.RoleController, pki.RoleClient},
		{"target agent", s.tgtAddr, pki.RoleTarget, pki.RoleSource, pki.RoleClient},
	} {
		t.Run(l.name, func(t *testing.T) {
			check := func(what string, cfg *tls.Config, wantOK bool) {
				t.Helper()
				var creds grpc.DialOption
				if cfg == nil {
					creds = grpc.WithTransportCredentials(insecure.NewCredentials())
				} else {
					creds = grpc.WithTransportCredentials(credentials.NewTLS(cfg))
				}
				conn, err := grpc.NewClient(l.addr, creds)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
				if wantOK && err != nil {
					t.Fatalf("%s: refused: %v", what, err)
				}
				if !wantOK && err == nil {
					t.Fatalf("%s: accepted", what)
				}
			}
			roots := ca.Pool()
			client := func(cert tls.Certificate, pool any) *tls.Config {
				cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "127.0.0.1"}
				if cert.Certificate != nil {
					cfg.Certificates = []tls.Certificate{cert}
				}
				return cfg
			}
			check("a certificate of a role it serves", client(own("ok-"+string(l.okRole), l.okRole), nil), true)
			check("plaintext", nil, false)
			check("no client certificate", client(tls.Certificate{}, nil), false)
			check("a certificate of another CA", client(other.Cert("intruder", l.okRole), nil), false)
			check("a certificate of the wrong role", client(own("wrong-"+string(l.wrongRole), l.wrongRole), nil), false)
		})
	}
}

// TestCLIErrors: unknown agents, repositories and jobs, bad flags and an
// unreachable agent each give a clear error and exit status 1 or 2.
func TestCLIErrors(t *testing.T) {
	s := startStack(t, false)
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"job", "create", "j", "--kind", "backup", "--agent", "nosuch", "--repo", "local", "--path", "/tmp"}, 1, `no agent named "nosuch"`},
		{[]string{"job", "create", "j", "--kind", "backup", "--agent", "source", "--repo", "nope", "--path", "/tmp"}, 1, `no repository "nope"`},
		{[]string{"job", "create", "j", "--kind", "backup", "--agent", "target", "--repo", "local", "--path", "/tmp"}, 1, "source agent is needed"},
		{[]string{"job", "run", "nosuch"}, 1, `no job named "nosuch"`},
		{[]string{"job", "show", "nosuch"}, 1, `no job named "nosuch"`},
		{[]string{"job", "create", "j", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", "/tmp", "--bogus"}, 2, "unknown flag"},
		{[]string{"agent", "add", "ghost", "--address", freePort(t), "--role", "source"}, 1, "unreachable"},
		{[]string{"restore", "--job", "nosuch", "--to", "target:/tmp/x"}, 1, `no job named "nosuch"`},
	} {
		code, out, errs := s.ctl(tc.args...)
		if code != tc.code || !strings.Contains(errs, tc.says) {
			t.Errorf("controller %s: exit %d, stderr %q (stdout %q); want exit %d saying %q", strings.Join(tc.args, " "), code, errs, out, tc.code, tc.says)
		}
	}
}

// TestTargetSIGTERMMidCopy: a target agent told to stop while a copy is
// streaming into it stops within its shutdown bound and leaves no partial
// file and no point; the source agent keeps trying under the same grant,
// and the session completes once the target is back.
func TestTargetSIGTERMMidCopy(t *testing.T) {
	s := startStack(t, false, `shutdown_timeout = "1s"`)
	site := filepath.Join(s.dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := datagen.WriteFile(filepath.Join(site, "disk.img"), 9, 1<<30); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "pw"), "a password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--compression", "none")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--password-file", "pw")
	s.mustCtl("job", "run", "site", "--wait")

	run := exec.Command(filepath.Join(binDir, "controller"), "job", "run", "offsite", "--wait")
	run.Env = append(os.Environ(), s.env...)
	var runErr bytes.Buffer
	run.Stderr = &runErr
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(s.dir, "repos/target")
	deadline := time.Now().Add(60 * time.Second)
	seen := false
	for !seen && time.Now().Before(deadline) {
		ms, _ := filepath.Glob(filepath.Join(repoDir, "backups", "offsite", "*", "*.partial"))
		for _, m := range ms {
			if st, err := os.Stat(m); err == nil && st.Size() > 16<<20 {
				seen = true
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if !seen {
		t.Fatal("the copy never wrote 16 MiB at the target")
	}
	stopAt := time.Now()
	if err := s.target.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- s.target.Wait() }()
	select {
	case <-waited:
	case <-time.After(15 * time.Second):
		t.Fatal("the target agent did not stop within 15 s of SIGTERM (bound 1 s)")
	}
	t.Logf("target stopped %v after SIGTERM", time.Since(stopAt).Round(time.Millisecond))
	ms, _ := filepath.Glob(filepath.Join(repoDir, "backups", "offsite", "*", "*.partial"))
	if len(ms) != 0 {
		t.Fatalf("partial files left by the stopped target: %v", ms)
	}

	// The source agent keeps trying under the same grant; once the target
	// is back, the session completes.
	s.target = s.start("agent-target", "-config", "target.hcl")
	waitListening(t, s.tgtAddr)
	if err := run.Wait(); err != nil {
		t.Fatalf("the session did not complete after the target came back: %v %s", err, runErr.String())
	}
	ms, _ = filepath.Glob(filepath.Join(repoDir, "backups", "offsite", "*", "*.partial"))
	files, _ := filepath.Glob(filepath.Join(repoDir, "backups", "offsite", "*", "*.ferry"))
	if len(ms) != 0 || len(files) != 1 {
		t.Fatalf("after the session: partials %v, files %v", ms, files)
	}
	s.mustCtl("verify", "--job", "offsite")
	s.mustCtl("job", "run", "offsite", "--wait")
}
