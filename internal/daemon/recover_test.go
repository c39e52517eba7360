package daemon

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// TestAgentStartRecovers: an agent that starts after a crash removes the
// partial files of interrupted sessions, says so in its log, and keeps
// every committed point.
func TestAgentStartRecovers(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	env.Stop()
	r, err := repo.Open(filepath.Join(dir, "target", "repos", "local"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte(strings.Repeat("committed data ", 1000)), 0o600)
	if _, err := backup.Backup(ctx, r, "b", src, backup.Options{KDF: keys.TestKDF}); err != nil {
		t.Fatal(err)
	}
	ix, _ := r.Index("b")
	chainDir := filepath.Dir(r.Path("b", ix.Points()[0]))
	partial := filepath.Join(chainDir, "00000002-00112233445566778899aabbccddeeff.ferry.partial")
	os.WriteFile(partial, []byte("half a file"), 0o600)

	logs := &syncBuffer{}
	env, err = StartDev(ctx, dir, logs, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("the partial file survived the start: %v", err)
	}
	if !strings.Contains(logs.b.String(), "removed the partial file of an interrupted session") {
		t.Fatalf("the start did not report what it recovered:\n%s", logs.b.String())
	}
	if ix, err := r.Index("b"); err != nil || len(ix.Points()) != 1 || ix.Points()[0].Damaged != "" {
		t.Fatalf("the committed point: %v %+v", err, ix)
	}
}
