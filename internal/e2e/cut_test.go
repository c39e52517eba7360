package e2e

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/linksim"
)

// TestCopy1GiBAcrossCuts: a 1 GiB copy between the agent processes,
// through a link that is cut at 20 random points, completes, restores
// byte-identical, and resends no more than one durability interval per cut
// (bytes counted at the link). The target makes what it received durable
// when the link drops, so what is resent is what was still in flight (in
// its receive window), not what arrived since the last checkpoint.
func TestCopy1GiBAcrossCuts(t *testing.T) {
	const size = 1 << 30
	const interval = 16 << 20
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 11))
	var cuts []int64
	for range 20 {
		cuts = append(cuts, 4<<20+rng.Int64N(size-8<<20))
	}
	sort.Slice(cuts, func(a, b int) bool { return cuts[a] < cuts[b] })
	var proxy *linksim.Proxy
	s := startStackVia(t, true, func(target string) string {
		p, err := linksim.Start(target, linksim.Config{Up: linksim.Shape{CutAt: cuts}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Close() })
		proxy = p
		return p.Addr()
	}, `durability_interval = "16MiB"`)
	site := filepath.Join(s.dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := datagen.WriteFile(filepath.Join(site, "disk.img"), seed, size); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "pw"), "a password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--compression", "none")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--password-file", "pw")
	s.mustCtl("job", "run", "site", "--wait")

	before := proxy.Stats().Up.Delivered
	start := time.Now()
	s.mustCtl("job", "run", "offsite", "--wait")
	took := time.Since(start)
	st := proxy.Stats()
	if st.Cuts != int64(len(cuts)) {
		t.Fatalf("%d of %d cuts happened", st.Cuts, len(cuts))
	}
	files, _ := filepath.Glob(filepath.Join(s.dir, "repos/target/backups/offsite/*/*.ferry"))
	if len(files) != 1 {
		t.Fatalf("target files: %v", files)
	}
	fi, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	onWire := st.Up.Delivered - before
	perCut := float64(onWire-fi.Size()) / float64(len(cuts))
	t.Logf("seed %d: 1 GiB copy across %d cuts in %v; file %d bytes, %d bytes toward the target, %.2f MB resent per cut (interval %d MiB)",
		seed, len(cuts), took.Round(time.Millisecond), fi.Size(), onWire, perCut/1e6, interval>>20)
	if perCut > interval {
		t.Fatalf("resent %.0f bytes per cut, more than one durability interval (%d)", perCut, interval)
	}
	to := filepath.Join(s.dir, "restored")
	s.mustCtl("restore", "--job", "offsite", "--to", "target:"+to)
	datagen.SameTree(t, site, to)
}
