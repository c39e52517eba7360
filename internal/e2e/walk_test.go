package e2e

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/transittest"
)

type walkPoint struct {
	ID         string   `json:"id"`
	Sequence   uint32   `json:"sequence"`
	Kind       string   `json:"kind"`
	Encryption string   `json:"encryption"`
	KeyRefs    []string `json:"key_refs"`
	Hint       string   `json:"password_hint"`
}

type walkChain struct {
	ID     string      `json:"id"`
	Points []walkPoint `json:"points"`
}

func (s *stack) points(job string) []walkChain {
	s.t.Helper()
	out := s.mustCtl("point", "list", "--job", job, "-o", "json")
	var v struct {
		Backups []struct {
			Chains []walkChain `json:"chains"`
		} `json:"backups"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil || len(v.Backups) > 1 {
		s.t.Fatalf("point list -o json: %v\n%s", err, out)
	}
	if len(v.Backups) == 0 {
		return nil
	}
	return v.Backups[0].Chains
}

// hashFiles hashes every backup file of a chain directory at the target.
func hashFiles(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := map[string][32]byte{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ferry"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[f] = sha256.Sum256(b)
	}
	return out
}

// TestEncryptionWalk drives one copy job through none -> password A ->
// password B -> KMS -> none with the real CLI and checks the seed's rules
// after every step: turning encryption on or off starts a new chain with a
// full, changing the password or moving to KMS continues the chain with an
// incremental under the new key; earlier chains stay byte-identical; every
// point restores byte-identical at the end, with the controller's key
// history.
func TestEncryptionWalk(t *testing.T) {
	vault := transittest.NewTest(t, transittest.Options{})
	t.Setenv("VAULT_ADDR", vault.URL())
	t.Setenv("VAULT_TOKEN", vault.RootToken())
	s := startStack(t, false)
	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, 21, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "a.pw"), "password A\n")
	writeFile(t, filepath.Join(s.dir, "b.pw"), "password B\n")
	writeFile(t, filepath.Join(s.dir, "c.pw"), "password C\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site)
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--encryption", "none")

	type step struct {
		update    []string // job update arguments before the session
		kind      string   // kind of the new point
		newChain  bool
		encrypted bool
		keyRef    string // prefix of the new point's key reference
	}
	steps := []step{
		{nil, "full", true, false, ""},
		{[]string{"--encryption", "password", "--password-file", "a.pw", "--password-hint", "the A one"}, "full", true, true, "password key"},
		{[]string{"--password-file", "b.pw", "--password-hint", "the B one"}, "incremental", false, true, "password key"},
		{[]string{"--encryption", "kms", "--kms-key", "walk-key"}, "incremental", false, true, "kms transit/walk-key "},
		{[]string{"--kms-key", "walk-key-2"}, "incremental", false, true, "kms transit/walk-key-2 "},
		{[]string{"--encryption", "password", "--password-file", "c.pw", "--password-hint", "the C one"}, "incremental", false, true, "password key"},
		{[]string{"--encryption", "none"}, "full", true, false, ""},
	}
	snaps := map[string]string{} // point id -> snapshot of the source it holds
	var prevKeyRef string
	for i, st := range steps {
		if st.update != nil {
			s.mustCtl(append([]string{"job", "update", "offsite"}, st.update...)...)
		}
		if i > 0 {
			if _, err := datagen.MutateTree(site, uint64(30+i)); err != nil {
				t.Fatal(err)
			}
		}
		s.mustCtl("job", "run", "site", "--wait")
		snap := filepath.Join(s.dir, fmt.Sprintf("snap%d", i))
		if out, err := exec.Command("cp", "-a", site, snap).CombinedOutput(); err != nil {
			t.Fatalf("%v %s", err, out)
		}
		before := s.points("offsite")
		frozen := map[string]map[string][32]byte{}
		for _, c := range before {
			frozen[c.ID] = hashFiles(t, filepath.Join(s.dir, "repos/target/backups/offsite", c.ID))
		}
		s.mustCtl("job", "run", "offsite", "--wait")
		after := s.points("offsite")
		// The new point is the one not there before.
		var newP *walkPoint
		var newChain string
		seen := map[string]bool{}
		for _, c := range before {
			for _, p := range c.Points {
				seen[p.ID] = true
			}
		}
		for ci := range after {
			for pi := range after[ci].Points {
				if !seen[after[ci].Points[pi].ID] {
					newP, newChain = &after[ci].Points[pi], after[ci].ID
				}
			}
		}
		if newP == nil {
			t.Fatalf("step %d: no new point", i)
		}
		snaps[newP.ID] = snap
		if newP.Kind != st.kind {
			t.Fatalf("step %d: new point is a %s, want %s", i, newP.Kind, st.kind)
		}
		if _, existed := frozen[newChain]; existed == st.newChain {
			t.Fatalf("step %d: new chain %v, want %v", i, !existed, st.newChain)
		}
		if (newP.Encryption != "none") != st.encrypted {
			t.Fatalf("step %d: encryption %q", i, newP.Encryption)
		}
		ref := strings.Join(newP.KeyRefs, ",")
		if !strings.HasPrefix(ref, st.keyRef) {
			t.Fatalf("step %d: key reference %q, want %q...", i, ref, st.keyRef)
		}
		if st.encrypted && !st.newChain && ref == prevKeyRef {
			t.Fatalf("step %d: a new password kept the key reference %q", i, ref)
		}
		prevKeyRef = ref
		// Earlier chains are byte-identical.
		for id, files := range frozen {
			now := hashFiles(t, filepath.Join(s.dir, "repos/target/backups/offsite", id))
			for f, h := range files {
				if now[f] != h {
					t.Fatalf("step %d: %s changed", i, f)
				}
			}
		}
	}
	chains := s.points("offsite")
	if len(chains) != 3 {
		t.Fatalf("want 3 chains (plain, encrypted, plain), got %d", len(chains))
	}
	// Every point restores byte-identical through the controller, with
	// the keys it keeps.
	for _, c := range chains {
		for _, p := range c.Points {
			to := filepath.Join(s.dir, "restored-"+p.ID[:8])
			s.mustCtl("restore", "--job", "offsite", "--point", p.ID, "--to", "target:"+to)
			datagen.SameTree(t, snaps[p.ID], to)
		}
	}
	s.mustCtl("verify", "--job", "offsite")

	// Offline, the mixed chain (A, B, two Vault keys, C) restores with
	// every password given and Vault reachable; one password short, the
	// error names the password it still needs by its hint.
	enc := chains[1]
	last := enc.Points[len(enc.Points)-1]
	repoDir := filepath.Join(s.dir, "repos/target")
	to := filepath.Join(s.dir, "offline-mixed")
	s.mustCtl("offline", "restore", "--repo", repoDir, "--backup", "offsite", "--point", last.ID, "--to", to,
		"--password-file", "a.pw", "--password-file", "b.pw", "--password-file", "c.pw")
	datagen.SameTree(t, snaps[last.ID], to)
	code, _, errs := s.ctl("offline", "restore", "--repo", repoDir, "--backup", "offsite", "--point", last.ID,
		"--to", filepath.Join(s.dir, "offline-short"), "--password-file", "a.pw", "--password-file", "b.pw")
	if code != 1 || !strings.Contains(errs, "wrong password") || !strings.Contains(errs, "the C one") {
		t.Fatalf("one password short: exit %d %q", code, errs)
	}
}
