package e2e

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// kill9 SIGKILLs one of the stack's daemons (0 controller, 1 source, 2
// target) and starts it again from the same configuration.
func (s *stack) kill9(i int) {
	s.t.Helper()
	names := []string{"controller", "agent-source", "agent-target"}
	args := [][]string{{"serve", "-config", "controller.hcl"}, {"-config", "source.hcl"}, {"-config", "target.hcl"}}
	addrs := []string{s.ctlAddr, s.srcAddr, s.tgtAddr}
	cmd := s.daemons[i]
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		s.t.Fatalf("SIGKILL %s: %v", names[i], err)
	}
	cmd.Wait()
	s.daemons[i] = s.start(names[i], args[i]...)
	waitListening(s.t, addrs[i])
}

// sessionResult waits until a session has ended and returns its record.
// A controller that is restarting is waited for.
func (s *stack) sessionResult(id string) sessionRecord {
	s.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		code, out, _ := s.ctl("session", "show", id, "-o", "json")
		if code == 0 {
			var r sessionRecord
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				s.t.Fatalf("session show -o json: %v\n%s", err, out)
			}
			if r.Result != "running" {
				return r
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.t.Fatalf("session %s did not end within 3 minutes", id)
	return sessionRecord{}
}

type sessionRecord struct {
	ID     string   `json:"id"`
	Result string   `json:"result"`
	Error  string   `json:"error"`
	Notes  []string `json:"notes"`
}

var fileNameRE = regexp.MustCompile(`^[0-9]{8}-([0-9a-f]{32})\.ferry$`)

// filesOnDisk lists the file ids of a backup's committed files and its
// partial files.
func filesOnDisk(t *testing.T, backupDir string) (ids []string, partials []string) {
	t.Helper()
	all, _ := filepath.Glob(filepath.Join(backupDir, "*", "*"))
	for _, f := range all {
		base := filepath.Base(f)
		if m := fileNameRE.FindStringSubmatch(base); m != nil {
			ids = append(ids, m[1])
		} else if strings.HasSuffix(base, ".partial") {
			partials = append(partials, f)
		}
	}
	sort.Strings(ids)
	return ids, partials
}

// catalogIDs lists a job's points as the controller's catalog has them.
func (s *stack) catalogIDs(job string) []string {
	var ids []string
	for _, ch := range s.points(job) {
		for _, p := range ch.Points {
			ids = append(ids, p.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// TestChaosSIGKILL runs 30 sessions (backup and copy jobs in turn) and
// SIGKILLs the controller, the source agent or the target agent at a random
// moment of each, then restarts it. Afterwards the next session of each job
// succeeds, every committed point passes a full verify, no partial file is
// a point, the catalog lists exactly the files the repositories hold, and
// the latest copy restores byte-identical.
func TestChaosSIGKILL(t *testing.T) {
	s := startStack(t, true)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("FERRY_CHAOS_SEED"); v != "" {
		fmt.Sscan(v, &seed)
	}
	t.Logf("seed %d (FERRY_CHAOS_SEED=%d reproduces the schedule of faults)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 7))

	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, seed%1000, datagen.TreeOptions{Size: 48 << 20}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "backup.pw"), "backup password\n")
	writeFile(t, filepath.Join(s.dir, "copy.pw"), "copy password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site,
		"--password-file", "backup.pw", "--block-size", "256KiB")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local",
		"--password-file", "copy.pw")
	// A first point of each, so copies have something to copy from the start.
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "offsite", "--wait")

	victims := []string{"controller", "source agent", "target agent"}
	const sessions = 30
	var killed [3]int
	results := map[string]int{}
	midSession := 0
	for i := 0; i < sessions; i++ {
		job := []string{"site", "offsite"}[i%2]
		if job == "site" {
			// Changed files plus a rewritten image: each session moves
			// about 100 MiB, long enough for a kill to land inside it.
			if _, err := datagen.MutateTree(site, seed%1000+uint64(i)+1); err != nil {
				t.Fatal(err)
			}
			if err := datagen.WriteFile(filepath.Join(site, "disk.img"), seed+uint64(i), 96<<20); err != nil {
				t.Fatal(err)
			}
		}
		code, out, errs := s.ctl("job", "run", job)
		if code != 0 {
			// A job still busy from a session cut off earlier (its agent
			// finishing the work) is refused; that is no fault.
			t.Logf("session %d: job run %s refused: %s", i, job, strings.TrimSpace(errs))
			time.Sleep(500 * time.Millisecond)
			continue
		}
		id := strings.TrimSpace(out)
		v := rng.IntN(3)
		delay := time.Duration(rng.Int64N(int64(300 * time.Millisecond)))
		time.Sleep(delay)
		if c, o, _ := s.ctl("session", "show", id, "-o", "json"); c == 0 && strings.Contains(o, `"result": "running"`) {
			midSession++
		}
		s.kill9(v)
		killed[v]++
		r := s.sessionResult(id)
		results[r.Result]++
		t.Logf("session %d (%s %s): SIGKILL %s after %v: %s %s %v", i, job, id, victims[v], delay.Round(time.Millisecond), r.Result, r.Error, r.Notes)
	}
	t.Logf("%d sessions, %d SIGKILLs (controller %d, source %d, target %d), %d while the session was running; results %v",
		sessions, killed[0]+killed[1]+killed[2], killed[0], killed[1], killed[2], midSession, results)
	if midSession < sessions/4 {
		t.Fatalf("only %d of %d kills hit a running session: the faults did not test much", midSession, sessions)
	}

	// The next session of each job succeeds.
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "offsite", "--wait")

	// The catalog matches the repositories, no partial file is left or
	// listed, and every committed point passes a full verify.
	verified := 0
	for _, c := range []struct{ job, dir string }{
		{"site", filepath.Join(s.dir, "repos/source/backups/site")},
		{"offsite", filepath.Join(s.dir, "repos/target/backups/offsite")},
	} {
		onDisk, partials := filesOnDisk(t, c.dir)
		if len(partials) != 0 {
			t.Errorf("job %s: partial files left after a successful session: %v", c.job, partials)
		}
		inCatalog := s.catalogIDs(c.job)
		if strings.Join(onDisk, ",") != strings.Join(inCatalog, ",") {
			t.Errorf("job %s: the catalog lists\n%v\nthe repository holds\n%v", c.job, inCatalog, onDisk)
		}
		out := s.mustCtl("verify", "--job", c.job)
		if !strings.Contains(out, "full verify ok") || !strings.Contains(out, fmt.Sprintf(" %d files,", len(onDisk))) {
			t.Errorf("verify of %s (%d files on disk):\n%s", c.job, len(onDisk), out)
		}
		verified += len(onDisk)
	}
	t.Logf("%d committed points passed a full verify", verified)

	// The latest copy is the site as it is now.
	to := filepath.Join(s.dir, "restored")
	s.mustCtl("restore", "--job", "offsite", "--to", "target:"+to)
	datagen.SameTree(t, site, to)
}
