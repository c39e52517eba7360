package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// TestEightCopiesAtOnce: 8 copy jobs from 2 source agents into 1 target
// agent (whose max_sessions is 4, so half of them wait for a slot) run at
// once, and every copy restores byte-identical.
func TestEightCopiesAtOnce(t *testing.T) {
	s := startStack(t, false)
	// A second source agent.
	s.mustCtl("pki", "issue", "--dir", "pki", "--name", "source2", "--role", "source")
	src2 := freePort(t)
	writeFile(t, filepath.Join(s.dir, "source2.hcl"), fmt.Sprintf("name = \"source2\"\nrole = \"source\"\nlisten = %q\nstate_dir = \"state/source2\"\n"+
		"tls {\n  cert_file = \"pki/source2.crt\"\n  key_file = \"pki/source2.key\"\n  ca_file = \"pki/ca.crt\"\n}\n"+
		"repository \"local\" {\n  path = \"repos/source2\"\n}\n", src2))
	s.start("agent-source", "-config", "source2.hcl")
	waitListening(t, src2)
	s.mustCtl("agent", "add", "source2", "--address", src2, "--role", "source")
	writeFile(t, filepath.Join(s.dir, "pw"), "one password for all\n")

	trees := map[string]string{} // copy job -> the tree it copies
	var copies []string
	n := 0
	for _, agent := range []string{"source", "source2"} {
		for b := range 2 {
			n++
			name := fmt.Sprintf("%s-b%d", agent, b)
			tree := filepath.Join(s.dir, "trees", name)
			if err := datagen.Tree(tree, uint64(100+n), datagen.TreeOptions{Size: 8 << 20}); err != nil {
				t.Fatal(err)
			}
			s.mustCtl("job", "create", name, "--kind", "backup", "--agent", agent, "--repo", "local", "--path", tree, "--block-size", "256KiB")
			s.mustCtl("job", "run", name, "--wait")
			for c := range 2 {
				cj := fmt.Sprintf("%s-c%d", name, c)
				s.mustCtl("job", "create", cj, "--kind", "copy", "--from", agent+":local/"+name, "--to", "target:local", "--password-file", "pw")
				trees[cj] = tree
				copies = append(copies, cj)
			}
		}
	}
	if len(copies) != 8 {
		t.Fatalf("%d copy jobs", len(copies))
	}
	var wg sync.WaitGroup
	errs := make([]string, len(copies))
	for i, cj := range copies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command(filepath.Join(binDir, "controller"), "job", "run", cj, "--wait")
			cmd.Env = append(os.Environ(), s.env...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Run(); err != nil {
				errs[i] = fmt.Sprintf("%s: %v\n%s", cj, err, out.String())
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Error(e)
		}
	}
	if t.Failed() {
		return
	}
	for _, cj := range copies {
		to := filepath.Join(s.dir, "restored", cj)
		s.mustCtl("restore", "--job", cj, "--to", "target:"+to)
		datagen.SameTree(t, trees[cj], to)
	}
}
