package cli

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/pki"
)

// setConnEnv points the FERRY_* variables at a controller for one test.
func setConnEnv(t *testing.T, addr, ca, cert, key string) {
	t.Helper()
	t.Setenv(EnvAddr, addr)
	t.Setenv(EnvCACert, ca)
	t.Setenv(EnvClientCert, cert)
	t.Setenv(EnvClientKey, key)
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// clientFiles issues a client certificate from a fresh test CA.
func clientFiles(t *testing.T) (p *pki.TestPKI, ca, cert, key string) {
	t.Helper()
	p = pki.NewTestPKI(t, "")
	cert, key = p.Issue("admin", pki.RoleClient)
	return p, p.CAFile, cert, key
}

func TestOnlineUsageErrorsExit2(t *testing.T) {
	// A valid configuration pointing at a closed port: anything that gets
	// past the usage checks fails with exit 1 instead, and the test sees it.
	_, ca, cert, key := clientFiles(t)
	setConnEnv(t, closedAddr(t), ca, cert, key)
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("pw\n"), 0o600)

	backup := []string{"job", "create", "web", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p"}
	cp := []string{"job", "create", "off", "--kind", "copy", "--from", "a:r/web", "--to", "b:r2"}
	with := func(base []string, extra ...string) []string { return append(append([]string{}, base...), extra...) }
	for _, args := range [][]string{
		{"pki"},
		{"pki", "init"},
		{"pki", "init", "--dir", "d", "extra"},
		{"pki", "issue", "--dir", "d", "--name", "x"},
		{"pki", "issue", "--dir", "d", "--name", "x", "--role", "admin"},
		{"pki", "issue", "--dir", "d", "--name", "x", "--role", "client", "--ip", "not-an-ip"},
		{"pki", "issue", "--dir", "d", "--name", "../x", "--role", "client"},
		{"agent"},
		{"agent", "add", "--address", "h:1", "--role", "source"},
		{"agent", "add", "a", "b", "--address", "h:1", "--role", "source"},
		{"agent", "add", "a", "--role", "source"},
		{"agent", "add", "a", "--address", "h:1"},
		{"agent", "add", "a", "--address", "h:1", "--role", "controller"},
		{"agent", "add", "a", "--address", "nohostport", "--role", "source"},
		{"agent", "list", "extra"},
		{"agent", "list", "-o", "yaml"},
		{"job"},
		{"job", "create", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p"},
		{"job", "create", "web", "--agent", "a", "--repo", "r", "--path", "/p"},
		{"job", "create", "web", "--kind", "restore"},
		{"job", "create", "web", "--kind", "backup", "--agent", "a", "--repo", "r"},
		{"job", "create", "web", "--kind", "copy", "--to", "b:r"},
		with(backup, "--block-size", "3MiB"),
		with(backup, "--block-size", "big"),
		with(backup, "--compression", "lz4"),
		with(backup, "--compression-level", "9"),
		with(backup, "--encryption", "password"),
		with(backup, "--encryption", "aes"),
		with(backup, "--encryption", "none", "--password-file", pw),
		with(backup, "--password-hint", "h"),
		with(backup, "--from", "a:r/web"),
		with(cp, "--agent", "a"),
		with(cp, "--block-size", "4MiB"),
		{"job", "create", "off", "--kind", "copy", "--from", "a:r", "--to", "b:r2"},
		{"job", "create", "off", "--kind", "copy", "--from", "a:r/", "--to", "b:r2"},
		{"job", "create", "off", "--kind", "copy", "--from", "r/web", "--to", "b:r2"},
		{"job", "create", "off", "--kind", "copy", "--from", ":r/web", "--to", "b:r2"},
		{"job", "create", "off", "--kind", "copy", "--from", "a:r/web", "--to", "b"},
		{"job", "create", "off", "--kind", "copy", "--from", "a:r/web", "--to", "b:"},
		{"job", "update", "web"},
		{"job", "update", "--path", "/q"},
		{"job", "update", "web", "--kind", "copy"},
		{"job", "update", "web", "--path", "/q", "--from", "a:r/w"},
		{"job", "update", "web", "--block-size", "1GiB"},
		{"job", "update", "web", "--to", "nocolon"},
		{"job", "list", "-o", "yaml"},
		{"job", "show"},
		{"job", "show", "web", "-o", "yaml"},
		{"job", "delete"},
		{"job", "run"},
		{"job", "run", "a", "b"},
		{"session", "list", "-o", "yaml"},
		{"session", "show"},
		{"session", "show", "x", "-o", "yaml"},
		{"point", "list"},
		{"point", "list", "--job", "web", "-o", "yaml"},
		{"restore", "--job", "web"},
		{"restore", "--to", "a:/x"},
		{"restore", "--job", "web", "--to", "/x"},
		{"restore", "--job", "web", "--to", "a:"},
		{"restore", "--job", "web", "--to", "a:/x", "--point", "abc"},
		{"restore", "--job", "web", "--to", "a:/x", "--point", "zz"},
		{"restore", "--job", "web", "--to", "a:/x", "--point", strings.Repeat("ab", 17)},
		{"verify"},
		{"verify", "--job", "web", "--point", "xyz1"},
		{"verify", "--job", "web", "extra"},
		{"agent", "list", "--timeout", "0s"},
		{"agent", "list", "--addr", "nohostport"},
	} {
		code, _, stderr := run(t, args...)
		if code != ExitUsage {
			t.Errorf("%q: exit %d, want 2 (stderr %q)", args, code, stderr)
		}
		if !strings.Contains(stderr, "Error:") {
			t.Errorf("%q: no error message: %q", args, stderr)
		}
	}
}

func TestUsageMessages(t *testing.T) {
	_, ca, cert, key := clientFiles(t)
	setConnEnv(t, closedAddr(t), ca, cert, key)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"job", "create", "off", "--kind", "copy", "--from", "a:r", "--to", "b:r"}, "want AGENT:REPO/BACKUPJOB"},
		{[]string{"job", "create", "off", "--kind", "copy", "--from", "a:r/w", "--to", "b"}, "want AGENT:REPO"},
		{[]string{"restore", "--job", "w", "--to", "/x"}, "want AGENT:PATH"},
		{[]string{"job", "create", "w", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p", "--encryption", "password"}, "needs --password-file"},
		{[]string{"job", "create", "w", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p", "--block-size", "3MiB"}, "choose 256KiB, 512KiB, 1MiB or 4MiB"},
		{[]string{"pki", "issue", "--dir", "d", "--name", "x", "--role", "admin"}, "choose controller, source, target or client"},
		{[]string{"agent", "list", "-o", "yaml"}, "choose text or json"},
		{[]string{"restore", "--job", "w", "--to", "a:/x", "--point", "abc"}, "even number of hex digits"},
		{[]string{"job", "create", "w", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p", "--mode", "immediate"}, "--mode does not apply to a backup job"},
		{[]string{"job", "create", "off", "--kind", "copy", "--from", "a:r/w", "--to", "b:r", "--retain", "-2"}, "cannot be negative"},
		{[]string{"job", "run", "w", "--full", "--health-check"}, "--full writes a backup file"},
	} {
		code, _, stderr := run(t, c.args...)
		if code != ExitUsage || !strings.Contains(stderr, c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", c.args, code, stderr, c.want)
		}
	}
}

func TestMissingSettingsExit2(t *testing.T) {
	_, ca, cert, key := clientFiles(t)
	for _, env := range []string{EnvAddr, EnvCACert, EnvClientCert, EnvClientKey} {
		setConnEnv(t, closedAddr(t), ca, cert, key)
		t.Setenv(env, "")
		code, _, stderr := run(t, "job", "list")
		if code != ExitUsage {
			t.Fatalf("without %s: exit %d, want 2: %q", env, code, stderr)
		}
		if !strings.Contains(stderr, env) {
			t.Errorf("without %s: the error does not name it: %q", env, stderr)
		}
		for _, other := range []string{EnvAddr, EnvCACert, EnvClientCert, EnvClientKey} {
			if other != env && strings.Contains(stderr, other+" ") {
				t.Errorf("without %s: the error names %s too: %q", env, other, stderr)
			}
		}
	}

	// Nothing set: all four are named, with their flags.
	setConnEnv(t, "", "", "", "")
	code, _, stderr := run(t, "session", "list")
	if code != ExitUsage {
		t.Fatalf("nothing set: exit %d: %q", code, stderr)
	}
	for _, want := range []string{"FERRY_ADDR or pass --addr", "FERRY_CACERT or pass --ca-cert", "FERRY_CLIENT_CERT or pass --client-cert", "FERRY_CLIENT_KEY or pass --client-key"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("nothing set: %q missing from %q", want, stderr)
		}
	}

	// Flags stand in for the environment.
	code, _, stderr = run(t, "agent", "list", "--addr", closedAddr(t), "--ca-cert", ca, "--client-cert", cert, "--client-key", key)
	if code != ExitFailure || !strings.Contains(stderr, "cannot reach the controller") {
		t.Fatalf("settings as flags: exit %d: %q", code, stderr)
	}
}

func TestUnreachableController(t *testing.T) {
	_, ca, cert, key := clientFiles(t)
	addr := closedAddr(t)
	setConnEnv(t, addr, ca, cert, key)
	for _, args := range [][]string{
		{"agent", "list"},
		{"agent", "add", "a", "--address", "h:1", "--role", "target"},
		{"job", "show", "web"},
		{"job", "run", "web", "--wait"},
		{"session", "show", "abc"},
		{"point", "list", "--job", "web"},
		{"restore", "--job", "web", "--to", "a:/x"},
		{"verify", "--job", "web", "--keyless"},
	} {
		code, _, stderr := run(t, args...)
		if code != ExitFailure {
			t.Errorf("%q: exit %d, want 1: %q", args, code, stderr)
		}
		if !strings.Contains(stderr, "cannot reach the controller at "+addr) || !strings.Contains(stderr, "FERRY_ADDR") {
			t.Errorf("%q: %q", args, stderr)
		}
	}
}

func TestBadCertificateFiles(t *testing.T) {
	_, ca, cert, _ := clientFiles(t)
	setConnEnv(t, closedAddr(t), ca, cert, filepath.Join(t.TempDir(), "nosuch.key"))
	code, _, stderr := run(t, "job", "list")
	if code != ExitFailure || !strings.Contains(stderr, "nosuch.key") {
		t.Fatalf("missing key file: exit %d: %q", code, stderr)
	}
}

func TestPKICommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	code, out, stderr := run(t, "pki", "init", "--dir", dir)
	if code != 0 || !strings.Contains(out, filepath.Join(dir, "ca.crt")) || !strings.Contains(out, filepath.Join(dir, "ca.key")) {
		t.Fatalf("pki init: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, err := pki.LoadCA(dir); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = run(t, "pki", "init", "--dir", dir)
	if code != ExitFailure || !strings.Contains(stderr, "refusing to overwrite") {
		t.Fatalf("second pki init: exit %d: %q", code, stderr)
	}

	code, out, stderr = run(t, "pki", "issue", "--dir", dir, "--name", "ctl", "--role", "controller", "--dns", "ctl.example.net", "--ip", "10.0.0.1")
	if code != 0 || !strings.Contains(out, filepath.Join(dir, "ctl.crt")) || !strings.Contains(out, filepath.Join(dir, "ctl.key")) {
		t.Fatalf("pki issue: exit %d\n%s\n%s", code, out, stderr)
	}
	code, out, stderr = run(t, "pki", "issue", "--dir", dir, "--name", "alice", "--role", "client")
	if code != 0 {
		t.Fatalf("pki issue client: exit %d\n%s\n%s", code, out, stderr)
	}
	ca := filepath.Join(dir, "ca.crt")
	if _, err := pki.ClientTLSConfig(filepath.Join(dir, "alice.crt"), filepath.Join(dir, "alice.key"), ca, pki.RoleController); err != nil {
		t.Fatalf("client tls config from the issued files: %v", err)
	}
	if _, err := pki.ServerTLSConfig(filepath.Join(dir, "ctl.crt"), filepath.Join(dir, "ctl.key"), ca, pki.RoleClient); err != nil {
		t.Fatalf("server tls config from the issued files: %v", err)
	}

	code, _, stderr = run(t, "pki", "issue", "--dir", dir, "--name", "alice", "--role", "client")
	if code != ExitFailure || !strings.Contains(stderr, "refusing to overwrite") {
		t.Fatalf("issuing twice: exit %d: %q", code, stderr)
	}
	code, _, stderr = run(t, "pki", "issue", "--dir", dir, "--name", "bob", "--role", "admin")
	if code != ExitUsage || !strings.Contains(stderr, "--role") {
		t.Fatalf("unknown role: exit %d: %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "bob.crt")); err == nil {
		t.Fatal("a certificate was written for an unknown role")
	}
}

func TestParsePointID(t *testing.T) {
	full := strings.Repeat("0f", 16)
	for _, c := range []struct {
		in   string
		want int // bytes; -1 for an error
	}{{"", 0}, {"ab", 1}, {"ABCD", 2}, {full, 16}, {"a", -1}, {"abc", -1}, {"xx", -1}, {full + "00", -1}} {
		b, err := parsePointID(c.in)
		if c.want < 0 {
			if err == nil {
				t.Errorf("%q: no error", c.in)
			}
			continue
		}
		if err != nil || len(b) != c.want {
			t.Errorf("%q: %x, %v; want %d bytes", c.in, b, err, c.want)
		}
	}
}

func TestParseFrom(t *testing.T) {
	a, r, j, err := parseFrom("site-a:/srv/ferry/main/web")
	if err != nil || a != "site-a" || r != "/srv/ferry/main" || j != "web" {
		t.Fatalf("%q %q %q %v", a, r, j, err)
	}
	if _, _, _, err := parseFrom("site-a:/web"); err == nil {
		t.Fatal("an empty repository was accepted")
	}
}
