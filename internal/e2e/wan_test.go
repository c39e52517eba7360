package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
)

// TestWANCopyThreeProcesses: copy jobs created with --wan run as WAN
// sessions between real processes: the target agent opens its wan_cache,
// a second job copying the same data sends no block, both restore, and
// `session show` (text and -o json) reports the WAN counters.
func TestWANCopyThreeProcesses(t *testing.T) {
	s := startStack(t, true, "wan_cache {\n  path = \"cache/wan\"\n  size = \"1GiB\"\n}")
	site := filepath.Join(s.dir, "site")
	if err := datagen.Tree(site, 8, datagen.TreeOptions{Size: 20 << 20}); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.dir, "backup.pw"), "backup password\n")
	writeFile(t, filepath.Join(s.dir, "copy.pw"), "copy password\n")
	s.mustCtl("job", "create", "site", "--kind", "backup", "--agent", "source", "--repo", "local", "--path", site,
		"--password-file", "backup.pw", "--block-size", "256KiB")
	for _, j := range []string{"far1", "far2"} {
		s.mustCtl("job", "create", j, "--kind", "copy", "--from", "source:local/site", "--to", "target:local", "--password-file", "copy.pw", "--wan")
	}
	if out := s.mustCtl("job", "show", "far1"); !strings.Contains(out, "wan:") {
		t.Fatalf("job show:\n%s", out)
	}
	s.mustCtl("job", "run", "site", "--wait")
	s.mustCtl("job", "run", "far1", "--wait")
	s.mustCtl("job", "run", "far2", "--wait")

	type wanStats struct {
		Blocks, BlocksSent, BlockBytesSent, CacheHitBlocks, WireBytesSent int64
	}
	show := func(job string) (string, wanStats) {
		var list struct {
			Sessions []struct {
				ID   string `json:"id"`
				Mode string `json:"mode"`
			} `json:"sessions"`
		}
		if err := json.Unmarshal([]byte(s.mustCtl("session", "list", "--job", job, "-o", "json")), &list); err != nil || len(list.Sessions) != 1 || list.Sessions[0].Mode != "wan" {
			t.Fatalf("sessions of %s: %+v %v", job, list, err)
		}
		id := list.Sessions[0].ID
		var v struct {
			WAN struct {
				Blocks         int64 `json:"blocks"`
				BlocksSent     int64 `json:"blocks_sent"`
				BlockBytesSent int64 `json:"block_bytes_sent"`
				CacheHitBlocks int64 `json:"cache_hit_blocks"`
				WireBytesSent  int64 `json:"wire_bytes_sent"`
			} `json:"wan"`
		}
		if err := json.Unmarshal([]byte(s.mustCtl("session", "show", id, "-o", "json")), &v); err != nil {
			t.Fatal(err)
		}
		return s.mustCtl("session", "show", id), wanStats(v.WAN)
	}
	text1, w1 := show("far1")
	text2, w2 := show("far2")
	t.Logf("far1 %+v\nfar2 %+v\n%s", w1, w2, text2)
	if w1.Blocks == 0 || w1.BlocksSent+w1.CacheHitBlocks != w1.Blocks || w1.BlockBytesSent == 0 {
		t.Fatalf("far1: %+v\n%s", w1, text1)
	}
	if w2.Blocks != w1.Blocks || w2.CacheHitBlocks != w2.Blocks || w2.BlocksSent != 0 || w2.BlockBytesSent != 0 {
		t.Fatalf("far2 sent blocks the target's cache had: %+v\n%s", w2, text2)
	}
	for _, want := range []string{"mode:", "wan", "wan cache hits:", "wan blocks sent:", "wan wire sent:", "effective speed:"} {
		if !strings.Contains(text2, want) {
			t.Fatalf("session show: no %q in\n%s", want, text2)
		}
	}
	for _, j := range []string{"far1", "far2"} {
		to := filepath.Join(s.dir, "restored-"+j)
		s.mustCtl("restore", "--job", j, "--to", "target:"+to)
		datagen.SameTree(t, site, to)
	}
	if _, err := os.Stat(filepath.Join(s.dir, "state/target/wancache.key")); err != nil {
		t.Fatalf("the target's cache key: %v", err)
	}
}
