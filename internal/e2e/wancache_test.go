package e2e

import (
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// TestWANCacheStaysWithinBound: a target agent whose WAN cache holds 4 MiB
// takes WAN copies of 24 MiB of incompressible data; its cache directory
// never holds more than the bound (entry headers aside), and the copies
// restore byte-identical.
func TestWANCacheStaysWithinBound(t *testing.T) {
	const bound = 4 << 20
	s := startStack(t, false, "wan_cache {\n  path = \"wancache\"\n  size = \"4MiB\"\n}")
	site := filepath.Join(s.dir, "site")
	if err := os.MkdirAll(site, 0o755); err != nil {
		t.Fatal(err)
	}
	rf, err := os.Create(filepath.Join(site, "random.img"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := datagen.NewRandom(111, 24<<20).WriteTo(rf); err != nil {
		t.Fatal(err)
	}
	rf.Close()
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site, "--compression", "none", "--block-size", "256KiB")
	s.mustCtl("job", "create", "offsite", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--wan")
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "offsite", "--wait")
	// A second job copies the same point again through the cache.
	s.mustCtl("job", "create", "offsite2", "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--wan")
	s.mustCtl("job", "run", "offsite2", "--wait")

	var total, entries int64
	filepath.WalkDir(filepath.Join(s.dir, "wancache"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && len(d.Name()) == 64 {
			if fi, err := d.Info(); err == nil {
				total += fi.Size()
				entries++
			}
		}
		return nil
	})
	// Each entry adds a 29-byte header and a 16-byte tag to its block.
	if total > bound+entries*64 || entries == 0 {
		t.Fatalf("the WAN cache holds %d bytes in %d entries; bound %d", total, entries, bound)
	}
	t.Logf("after 48 MiB of WAN copies the cache holds %d entries, %d bytes (bound %d)", entries, total, bound)
	for _, job := range []string{"offsite", "offsite2"} {
		to := filepath.Join(s.dir, "restored-"+job)
		s.mustCtl("restore", "--job", job, "--to", "target:"+to)
		datagen.SameTree(t, site, to)
	}
}
