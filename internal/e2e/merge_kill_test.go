package e2e

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// TestMergeSIGKILL: the target agent is SIGKILLed while it merges a
// chain's oldest point away for retention (a 160 MiB full), three times.
// Each time, after a restart, no partial file is left, the merge was
// either rolled back (the old full is still there) or completed (it is
// gone and the next point is a full), every point the catalog lists
// restores byte-identical, and the next session brings the chain back to
// the retention.
func TestMergeSIGKILL(t *testing.T) {
	s := startStack(t, true)
	site := filepath.Join(s.dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := datagen.WriteFile(filepath.Join(site, "big.img"), 1, 160<<20); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "pw"), "a password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--compression", "none")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local",
		"--password-file", "pw", "--retain", "2")
	chainDir := func() string {
		ds, _ := filepath.Glob(filepath.Join(s.dir, "repos/target/backups/offsite", "????????????????????????????????"))
		if len(ds) != 1 {
			t.Fatalf("target chains: %v", ds)
		}
		return ds[0]
	}
	snaps := map[string]string{} // target point id -> snapshot of the site
	round := func(i int) {
		if i > 0 {
			if err := datagen.WriteFile(filepath.Join(site, fmt.Sprintf("small-%d", i)), uint64(i), 1<<20); err != nil {
				t.Fatal(err)
			}
		}
		s.mustCtl("job", "run", "site", "--wait")
		snap := filepath.Join(s.dir, fmt.Sprintf("snap-%d", i))
		if out, err := exec.Command("cp", "-a", site, snap).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		// The points before the session, read before it starts: a quick
		// session could otherwise commit before the list is read.
		before := s.catalogIDs("offsite")
		id := strings.TrimSpace(s.mustCtl("job", "run", "offsite"))
		// Wait for the session (and its retention) to end.
		r := s.sessionResult(id)
		if r.Result != "success" {
			t.Fatalf("round %d: copy session %s", i, r.Result+": "+r.Error)
		}
		for _, p := range s.catalogIDs("offsite") {
			if !contains(before, p) {
				snaps[p] = snap
			}
		}
	}
	round(0)
	round(1)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	kills := 0
	for i := 2; i < 5; i++ {
		if err := datagen.WriteFile(filepath.Join(site, fmt.Sprintf("small-%d", i)), uint64(i), 1<<20); err != nil {
			t.Fatal(err)
		}
		s.mustCtl("job", "run", "site", "--wait")
		snap := filepath.Join(s.dir, fmt.Sprintf("snap-%d", i))
		if out, err := exec.Command("cp", "-a", site, snap).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		before := s.catalogIDs("offsite")
		id := strings.TrimSpace(s.mustCtl("job", "run", "offsite"))
		// The copy commits, then retention merges 160 MiB: kill the target
		// while the merged file is being written.
		dir := chainDir()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if ms, _ := filepath.Glob(filepath.Join(dir, "*.merge.partial")); len(ms) > 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(time.Duration(rng.Int64N(int64(150 * time.Millisecond))))
		merging, _ := filepath.Glob(filepath.Join(dir, "*.merge.partial"))
		if err := s.daemons[2].Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		s.daemons[2].Wait()
		if len(merging) > 0 {
			kills++
		}
		filesAtKill, _ := filepath.Glob(filepath.Join(dir, "*"))
		s.daemons[2] = s.start("agent-target", "-config", "target.hcl")
		waitListening(t, s.tgtAddr)
		r := s.sessionResult(id)
		t.Logf("round %d: killed the target %s a merge; files then %d; session %s %v", i, map[bool]string{true: "during", false: "outside"}[len(merging) > 0], len(filesAtKill), r.Result, r.Notes)
		for _, p := range s.catalogIDs("offsite") {
			if !contains(before, p) {
				snaps[p] = snap
			}
		}

		// After the restart: no partial, and every point the catalog
		// lists is on disk and restores as the site was.
		if _, partials := filesOnDisk(t, filepath.Join(s.dir, "repos/target/backups/offsite")); len(partials) > 0 {
			// The agent removes partials when it starts.
			t.Fatalf("round %d: partial files after the restart: %v", i, partials)
		}
		s.mustCtl("job", "run", "offsite", "--wait") // catches retention up (nothing new to copy)
		onDisk, _ := filesOnDisk(t, filepath.Join(s.dir, "repos/target/backups/offsite"))
		listed := s.catalogIDs("offsite")
		if strings.Join(onDisk, ",") != strings.Join(listed, ",") || len(listed) != 2 {
			t.Fatalf("round %d: catalog %v, disk %v; want the same 2 points", i, listed, onDisk)
		}
		for _, p := range listed {
			to := filepath.Join(s.dir, fmt.Sprintf("restored-%d-%s", i, p[:8]))
			s.mustCtl("restore", "--job", "offsite", "--point", p, "--to", "target:"+to)
			datagen.SameTree(t, snaps[p], to)
			os.RemoveAll(to)
		}
		s.mustCtl("verify", "--job", "offsite")
	}
	if kills == 0 {
		t.Fatal("no kill landed during a merge")
	}
	t.Logf("%d of 3 kills landed during a merge", kills)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
