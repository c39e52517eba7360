package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/keys"
)

func TestRecoveryInit(t *testing.T) {
	out := filepath.Join(t.TempDir(), "recovery.key")
	code, stdout, stderr := run(t, "recovery", "init", "--out", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	st, err := os.Stat(out)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", st, err)
	}
	priv, err := readRecoveryKey(out)
	if err != nil {
		t.Fatal(err)
	}
	line := "recovery_public_key = \"" + priv.Public().Marshal() + "\""
	if !strings.Contains(stdout, line) {
		t.Fatalf("output lacks the config line %q:\n%s", line, stdout)
	}
	if _, err := keys.ParseRecoveryPublic(priv.Public().Marshal()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(out)
	if code, _, stderr := run(t, "recovery", "init", "--out", out); code != 1 || !strings.Contains(stderr, "never overwritten") {
		t.Fatalf("second init: exit %d %q", code, stderr)
	}
	if after, _ := os.ReadFile(out); string(after) != string(before) {
		t.Fatal("the recovery key was overwritten")
	}
	if code, _, _ := run(t, "recovery", "init"); code != 2 {
		t.Fatalf("init without --out: exit %d", code)
	}
}
