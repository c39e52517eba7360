package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// targetHas reports whether any file of the target repository holds b.
func targetHas(t *testing.T, s *stack, b []byte) bool {
	t.Helper()
	found := false
	filepath.Walk(filepath.Join(s.dir, "repos/target"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			if c, _ := os.ReadFile(p); bytes.Contains(c, b) {
				found = true
			}
		}
		return nil
	})
	return found
}

// TestSeedRulesCLI drives the rules of the product document with the real
// CLI against running agents: an encrypted source copied with encryption
// off reaches the target as plaintext (rule 4), a source backup the
// controller did not make is copied with --source-password-file (rule 4),
// the password hint shows in point list, in a wrong-password error and in
// offline commands (rule 6), and `job run --full` starts a new chain
// (rule 7).
func TestSeedRulesCLI(t *testing.T) {
	s := startStack(t, false)
	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, 41, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for i := 0; i < 3000; i++ {
		sb.WriteString(sentinel + "\n")
	}
	writeFile(t, filepath.Join(site, "sentinel.txt"), sb.String())
	for _, f := range []string{"src", "copy", "legacy"} {
		writeFile(t, filepath.Join(s.dir, f+".pw"), f+" password\n")
	}
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--password-file", "src.pw")
	s.mustCtl("job", "run", "site", "--wait")

	// Rule 4: encrypted source, copy encryption off: plaintext at the target.
	s.mustCtl("job", "create", "plain", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--encryption", "none")
	s.mustCtl("job", "run", "plain", "--wait")
	if out := s.mustCtl("point", "list", "--job", "plain"); !strings.Contains(out, " none") {
		t.Fatalf("plain copy point list:\n%s", out)
	}
	if !targetHas(t, s, []byte(sentinel)) {
		t.Fatal("the copy with encryption off did not deliver plaintext")
	}
	to := filepath.Join(s.dir, "restored-plain")
	s.mustCtl("offline", "restore", "--repo", filepath.Join(s.dir, "repos/target"), "--backup", "plain", "--to", to)
	datagen.SameTree(t, site, to)

	// Rule 4: a source backup this controller did not make.
	s.mustCtl("offline", "backup", "--repo", filepath.Join(s.dir, "repos/source"), "--backup", "legacy", "--path", site, "--password-file", "legacy.pw")
	s.mustCtl("job", "create", "legacy-copy", "--kind", "copy", "--from", "source:local/legacy", "--to", "target:local",
		"--password-file", "copy.pw", "--password-hint", "the blue card", "--source-password-file", "legacy.pw")
	s.mustCtl("job", "run", "legacy-copy", "--wait")
	to = filepath.Join(s.dir, "restored-legacy")
	s.mustCtl("restore", "--job", "legacy-copy", "--to", "target:"+to)
	datagen.SameTree(t, site, to)

	// Rule 6: the hint, in point list, a wrong-password error, offline ls.
	if out := s.mustCtl("point", "list", "--job", "legacy-copy"); !strings.Contains(out, `hint "the blue card"`) {
		t.Fatalf("point list does not show the hint:\n%s", out)
	}
	code, _, errs := s.ctl("offline", "restore", "--repo", filepath.Join(s.dir, "repos/target"), "--backup", "legacy-copy",
		"--to", filepath.Join(s.dir, "nope"), "--password-file", "src.pw")
	if code != 1 || !strings.Contains(errs, "wrong password") || !strings.Contains(errs, "the blue card") {
		t.Fatalf("wrong password: exit %d %q", code, errs)
	}
	if out := s.mustCtl("offline", "ls", "--repo", filepath.Join(s.dir, "repos/target"), "--backup", "legacy-copy"); !strings.Contains(out, "the blue card") {
		t.Fatalf("offline ls does not show the hint:\n%s", out)
	}

	// Rule 7: an active full on demand starts a new chain.
	if _, err := datagen.MutateTree(site, 42); err != nil {
		t.Fatal(err)
	}
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "plain", "--wait")
	if c := s.points("plain"); len(c) != 1 || len(c[0].Points) != 2 || c[0].Points[1].Kind != "incremental" {
		t.Fatalf("before --full: %+v", c)
	}
	s.mustCtl("job", "run", "plain", "--full", "--wait")
	c := s.points("plain")
	if len(c) != 2 || len(c[1].Points) != 1 || c[1].Points[0].Kind != "full" {
		t.Fatalf("after --full: %+v", c)
	}
}

// TestRequireEncryptionCLI (rule 5): a target repository with
// require_encryption refuses a plaintext copy job on create and on update,
// and a session toward it that would write plaintext, when the policy was
// set after the job was made, before anything is written.
func TestRequireEncryptionCLI(t *testing.T) {
	s := startStack(t, false)
	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, 43, datagen.TreeOptions{Size: 8 << 20}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "pw"), "a password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site)
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--encryption", "none")

	// The target's policy changes: restart it with require_encryption.
	s.target.Process.Signal(syscall.SIGTERM)
	s.target.Wait()
	cfg, _ := os.ReadFile(filepath.Join(s.dir, "target.hcl"))
	writeFile(t, filepath.Join(s.dir, "target.hcl"), strings.Replace(string(cfg), "require_encryption = false", "require_encryption = true", 1))
	s.target = s.start("agent-target", "-config", "target.hcl")
	waitListening(t, s.tgtAddr)

	before := listTarget(t, s)
	code, _, errs := s.ctl("job", "run", "offsite", "--wait")
	if code != 1 || !strings.Contains(errs, "requires encryption") || !strings.Contains(errs, "local") {
		t.Fatalf("plaintext session into a repository that requires encryption: exit %d %q", code, errs)
	}
	if after := listTarget(t, s); after != before {
		t.Fatalf("the refused session wrote to the target:\n%s\n%s", before, after)
	}
	// Create and update are refused too, naming the repository and the rule.
	code, _, errs = s.ctl("job", "create", "other", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--encryption", "none")
	if code != 1 || !strings.Contains(errs, "repository local") || !strings.Contains(errs, "require_encryption") {
		t.Fatalf("create: exit %d %q", code, errs)
	}
	s.mustCtl("job", "update", "offsite", "--password-file", "pw")
	code, _, errs = s.ctl("job", "update", "offsite", "--encryption", "none")
	if code != 1 || !strings.Contains(errs, "requires encryption") {
		t.Fatalf("update to none: exit %d %q", code, errs)
	}
	s.mustCtl("job", "run", "offsite", "--wait")
	if c := s.points("offsite"); len(c) != 1 || c[0].Points[0].Encryption == "none" {
		t.Fatalf("after encryption on: %+v", c)
	}
}

func listTarget(t *testing.T, s *stack) string {
	t.Helper()
	var out []string
	filepath.Walk(filepath.Join(s.dir, "repos/target"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && (strings.HasSuffix(p, ".ferry") || strings.HasSuffix(p, ".partial")) {
			out = append(out, p)
		}
		return nil
	})
	return strings.Join(out, "\n")
}
