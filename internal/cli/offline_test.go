package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nosuchcommand"},
		{"offline"},
		{"offline", "backup", "--repo", "r", "--backup", "b"},                           // --path missing
		{"offline", "backup", "--repo", "r", "--backup", "b", "--path", "p", "--bogus"}, // unknown flag
		{"offline", "backup", "--repo", "r", "--backup", "b", "--path", "p", "--block-size", "3MiB"},
		{"offline", "backup", "--repo", "r", "--backup", "b", "--path", "p", "--compression", "lz4"},
		{"offline", "ls", "--repo", "r", "-o", "yaml"},
		{"offline", "ls", "--repo", "r", "extra"},
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

func TestOfflineRoundTrip(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "site")
	if err := datagen.Tree(src, 3, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "pw")
	os.WriteFile(pw, []byte("s3cret words\n"), 0o600)
	repoDir := filepath.Join(dir, "repo")
	code, out, stderr := run(t, "offline", "backup", "--repo", repoDir, "--backup", "site", "--path", src,
		"--password-file", pw, "--password-hint", "the usual", "--block-size", "512KiB")
	if code != 0 || !strings.Contains(out, "full, sequence 1") {
		t.Fatalf("backup: exit %d\n%s\n%s", code, out, stderr)
	}
	if _, err := datagen.MutateTree(src, 9); err != nil {
		t.Fatal(err)
	}
	code, out, stderr = run(t, "offline", "backup", "--repo", repoDir, "--backup", "site", "--path", src, "--password-file", pw, "--block-size", "512KiB")
	if code != 0 || !strings.Contains(out, "incremental, sequence 2") {
		t.Fatalf("incremental: exit %d\n%s\n%s", code, out, stderr)
	}

	code, out, _ = run(t, "offline", "ls", "--repo", repoDir, "-o", "json")
	if code != 0 {
		t.Fatalf("ls: exit %d", code)
	}
	var ls struct {
		Backups []lsBackup `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &ls); err != nil {
		t.Fatalf("ls -o json: %v\n%s", err, out)
	}
	if len(ls.Backups) != 1 || len(ls.Backups[0].Chains) != 1 || len(ls.Backups[0].Chains[0].Points) != 2 {
		t.Fatalf("ls: %s", out)
	}
	p2 := ls.Backups[0].Chains[0].Points[1]
	if p2.Kind != "incremental" || p2.Sequence != 2 || p2.Encryption != "aes-256-gcm" || p2.Hint != "the usual" || p2.Size == 0 {
		t.Fatalf("ls point: %+v", p2)
	}
	code, out, _ = run(t, "offline", "ls", "--repo", repoDir)
	if code != 0 || !strings.Contains(out, "incremental") || !strings.Contains(out, "password") {
		t.Fatalf("ls text: %d\n%s", code, out)
	}

	to := filepath.Join(dir, "restored")
	code, out, stderr = run(t, "offline", "restore", "--repo", repoDir, "--backup", "site", "--point", p2.ID[:8], "--to", to, "--password-file", pw)
	if code != 0 {
		t.Fatalf("restore: exit %d\n%s\n%s", code, out, stderr)
	}
	datagen.SameTree(t, src, to)

	for _, args := range [][]string{
		{"offline", "verify", "--repo", repoDir, "--backup", "site", "--keyless"},
		{"offline", "verify", "--repo", repoDir, "--backup", "site", "--password-file", pw},
	} {
		code, out, stderr = run(t, args...)
		if code != 0 || !strings.Contains(out, "verify ok") {
			t.Fatalf("%q: exit %d\n%s\n%s", args, code, out, stderr)
		}
	}

	// Failures exit 1 with an error a user can act on.
	bad := filepath.Join(dir, "bad")
	os.WriteFile(bad, []byte("guess"), 0o600)
	code, _, stderr = run(t, "offline", "restore", "--repo", repoDir, "--backup", "site", "--to", filepath.Join(dir, "x"), "--password-file", bad)
	if code != ExitFailure || !strings.Contains(stderr, "wrong password") || !strings.Contains(stderr, "the usual") {
		t.Fatalf("wrong password: exit %d, %q", code, stderr)
	}
	code, _, stderr = run(t, "offline", "restore", "--repo", repoDir, "--backup", "nosuch", "--to", filepath.Join(dir, "y"))
	if code != ExitFailure || !strings.Contains(stderr, "no such backup") {
		t.Fatalf("unknown backup: exit %d, %q", code, stderr)
	}
	code, _, stderr = run(t, "offline", "ls", "--repo", filepath.Join(dir, "nothing-here"))
	if code != ExitFailure || !strings.Contains(stderr, "not a ferry repository") {
		t.Fatalf("not a repository: exit %d, %q", code, stderr)
	}

	// A flipped byte makes verify exit 1 and name the file.
	files, _ := filepath.Glob(filepath.Join(repoDir, "backups", "site", "*", "*.ferry"))
	if len(files) != 2 {
		t.Fatalf("files: %v", files)
	}
	b, _ := os.ReadFile(files[0])
	b[len(b)/2] ^= 0x40
	os.WriteFile(files[0], b, 0o600)
	code, out, _ = run(t, "offline", "verify", "--repo", repoDir, "--backup", "site", "--keyless")
	if code != ExitFailure || !strings.Contains(out, "PROBLEM") || !strings.Contains(out, filepath.Base(files[0])) {
		t.Fatalf("verify of a damaged file: exit %d\n%s", code, out)
	}
}
