package controller

import (
	"reflect"
	"sort"
	"testing"

	"github.com/ferrybackup/ferry/internal/catalog"
)

func TestGFSPeriods(t *testing.T) {
	for day, want := range map[string]string{"2026-11-30": "2026-W49", "2026-12-06": "2026-W49", "2026-12-07": "2026-W50", "2027-01-01": "2026-W53"} {
		if got := week(day); got != want {
			t.Errorf("week(%s) = %s, want %s", day, got, want)
		}
	}
	j := catalog.Job{Kind: kindCopy, KeepWeekly: 2}
	last := catalog.Point{Day: "2026-12-06"}
	if gfsRotate(j, last, "2026-12-06") || !gfsRotate(j, last, "2026-12-07") {
		t.Error("weekly rotation: same week rotated, or a new week did not")
	}
	j.KeepWeekly, j.KeepMonthly = 0, 3
	if gfsRotate(j, last, "2026-12-31") || !gfsRotate(j, last, "2027-01-01") {
		t.Error("monthly rotation: same month rotated, or a new month did not")
	}
	if gfsRotate(catalog.Job{Kind: kindCopy}, last, "2030-01-01") {
		t.Error("a job without GFS rotated")
	}
}

func TestGFSKeep(t *testing.T) {
	arch := func(chain, day string) gfsArchive {
		return gfsArchive{chain: []byte(chain), points: []catalog.Point{{Day: day}}}
	}
	archives := []gfsArchive{
		arch("a", "2026-10-05"), // October, W41
		arch("b", "2026-10-12"), // October, W42
		arch("c", "2026-11-02"), // November, W45
		arch("d", "2026-11-09"), // November, W46
		arch("e", "2026-11-11"), // November, W46 (a second chain that week: --full)
		arch("f", "2026-11-16"), // November, W47
	}
	keys := func(m map[string]bool) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		sort.Strings(out)
		return out
	}
	for _, tc := range []struct {
		weekly, monthly int
		want            []string
	}{
		{0, 0, nil},
		{2, 0, []string{"d", "f"}},                  // W47, W46 (its first chain)
		{0, 2, []string{"a", "c"}},                  // first of November, first of October
		{1, 1, []string{"c", "f"}},                  // W47; November
		{10, 10, []string{"a", "b", "c", "d", "f"}}, // e is not the first of its week or month
	} {
		if got := keys(gfsKeep(archives, tc.weekly, tc.monthly)); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("keep %d weekly, %d monthly: %v, want %v", tc.weekly, tc.monthly, got, tc.want)
		}
	}
}
