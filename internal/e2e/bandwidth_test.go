package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// TestAgentBandwidthCaps: `bandwidth` in a source or a target agent's
// configuration caps what its copies move over the link: 8 MiB of
// incompressible data take at least the time the cap allows (a lower
// bound: the cap is checked, not speed), and the copy restores.
func TestAgentBandwidthCaps(t *testing.T) {
	for i, who := range []string{"source", "target"} {
		t.Run(who, func(t *testing.T) {
			s := startStack(t, false)
			f, err := os.OpenFile(filepath.Join(s.dir, who+".hcl"), os.O_APPEND|os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("bandwidth = \"4MB/s\"\n")
			f.Close()
			s.kill9(1 + i) // back with the cap
			site := filepath.Join(s.dir, "site")
			if err := os.MkdirAll(site, 0o755); err != nil {
				t.Fatal(err)
			}
			rf, err := os.Create(filepath.Join(site, "random.img"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := datagen.NewRandom(91, 8<<20).WriteTo(rf); err != nil {
				t.Fatal(err)
			}
			rf.Close()
			s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--compression", "none")
			s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local")
			s.mustCtl("job", "run", "site", "--wait")
			start := time.Now()
			s.mustCtl("job", "run", "offsite", "--wait")
			took := time.Since(start)
			// 8 MiB at 4 MB/s: 2.1 s; under 1.6 s the cap was not applied.
			if took < 1600*time.Millisecond {
				t.Fatalf("8 MiB crossed a 4 MB/s %s agent cap in %v", who, took)
			}
			t.Logf("8 MiB under a 4 MB/s %s agent cap: %v", who, took.Round(time.Millisecond))
			to := filepath.Join(s.dir, "restored")
			s.mustCtl("restore", "--job", "offsite", "--to", "target:"+to)
			datagen.SameTree(t, site, to)
		})
	}
}
