package backup

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/keyring"
)

// buildController builds the real controller binary once per test binary.
func buildController(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "controller")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/ferrybackup/ferry/controller")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build controller: %v\n%s", err, out)
	}
	return bin
}

// TestKillMidBackup runs the real binary, kills it with SIGKILL while it
// writes a file, and checks that no restore point appeared, that every
// earlier point still lists, verifies and restores, and that the next
// backup cleans up and succeeds.
func TestKillMidBackup(t *testing.T) {
	bin := buildController(t)
	dir := t.TempDir()
	repoDir := filepath.Join(dir, "repo")
	src := filepath.Join(dir, "big.img")
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, testPassword, 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	// A first point to protect.
	writeMixed(t, src, 11, 8<<20)
	if out, err := run("offline", "backup", "--repo", repoDir, "--backup", "k", "--path", src, "--password-file", pw); err != nil {
		t.Fatalf("first backup: %v\n%s", err, out)
	}
	want := fileHash(t, src)

	// A large change, so the second backup runs long enough to be killed.
	writeMixed(t, src, 12, 768<<20)
	cmd := exec.Command(bin, "offline", "backup", "--repo", repoDir, "--backup", "k", "--path", src, "--password-file", pw, "--compression", "none")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var partial string
	deadline := time.Now().Add(60 * time.Second)
	for partial == "" && time.Now().Before(deadline) {
		matches, _ := filepath.Glob(filepath.Join(repoDir, "backups", "k", "*", "*.partial"))
		for _, m := range matches {
			if st, err := os.Stat(m); err == nil && st.Size() > 16<<20 {
				partial = m
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	if partial == "" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal("the backup never wrote 16 MiB of its partial file")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("backup was not killed by SIGKILL (it finished first?): %v", err)
	}
	if _, err := os.Stat(partial); err != nil {
		t.Fatalf("the killed backup's partial file is gone: %v", err)
	}

	// The repository lists only the first point, and it verifies and restores.
	out, err := run("offline", "ls", "--repo", repoDir, "--backup", "k")
	if err != nil || strings.Count(out, "aes-256-gcm") != 1 || strings.Contains(out, "incremental") {
		t.Fatalf("ls after the kill: %v\n%s", err, out)
	}
	r := openRepo(t, repoDir)
	if _, err := Verify(context.Background(), r, "k", VerifyOptions{Keys: keyring.New(testPassword)}); err != nil {
		t.Fatalf("verify after the kill: %v", err)
	}
	to := filepath.Join(dir, "restored.img")
	mustRestore(t, r, "k", "", to, testPassword)
	if fileHash(t, to) != want {
		t.Fatal("the first point does not restore byte-identical after the kill")
	}

	// The next backup removes the partial file and commits.
	writeMixed(t, src, 13, 4<<20)
	if out, err := run("offline", "backup", "--repo", repoDir, "--backup", "k", "--path", src, "--password-file", pw); err != nil {
		t.Fatalf("backup after the kill: %v\n%s", err, out)
	}
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("the stale partial file is still there: %v", err)
	}
	to2 := filepath.Join(dir, "restored2.img")
	mustRestore(t, r, "k", "", to2, testPassword)
	if fileHash(t, to2) != fileHash(t, src) {
		t.Fatal("the point after the kill does not restore byte-identical")
	}
}
