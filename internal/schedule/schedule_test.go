package schedule_test

import (
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // TZ= cases must not depend on the host's zoneinfo

	"github.com/ferrybackup/ferry/internal/schedule"
)

func utc(y int, mo time.Month, d, h, mi int) time.Time {
	return time.Date(y, mo, d, h, mi, 0, 0, time.UTC)
}

func TestParse(t *testing.T) {
	good := []struct {
		expr, str string
		interval  time.Duration
	}{
		{"6h", "6h", 6 * time.Hour},
		{"30m", "30m", 30 * time.Minute},
		{"1h30m", "1h30m", 90 * time.Minute},
		{"1m", "1m", time.Minute},
		{" 2h ", "2h", 2 * time.Hour},
		{"@every 2h", "@every 2h", 2 * time.Hour},
		{"0 3 * * *", "0 3 * * *", 0},
		{"  0   3 * *  1-5 ", "0 3 * * 1-5", 0},
		{"*/15 * * * *", "*/15 * * * *", 0},
		{"0 0 1 jan,jul *", "0 0 1 jan,jul *", 0},
		{"@daily", "@daily", 0},
		{"@hourly", "@hourly", 0},
		{"@weekly", "@weekly", 0},
		{"@monthly", "@monthly", 0},
		{"0 0 29 2 *", "0 0 29 2 *", 0},
		{"TZ=Europe/Berlin 0 3 * * *", "TZ=Europe/Berlin 0 3 * * *", 0},
		{"CRON_TZ=UTC @daily", "CRON_TZ=UTC @daily", 0},
	}
	for _, tc := range good {
		s, err := schedule.Parse(tc.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", tc.expr, err)
			continue
		}
		if s.String() != tc.str {
			t.Errorf("Parse(%q).String() = %q, want %q", tc.expr, s.String(), tc.str)
		}
		if s.Interval() != tc.interval {
			t.Errorf("Parse(%q).Interval() = %v, want %v", tc.expr, s.Interval(), tc.interval)
		}
		if s.IsZero() {
			t.Errorf("Parse(%q) is the zero Schedule", tc.expr)
		}
		again, err := schedule.Parse(s.String())
		if err != nil || again.String() != s.String() {
			t.Errorf("Parse(%q) does not round-trip: %q, %v", s.String(), again.String(), err)
		}
	}

	bad := []struct {
		expr string
		want []string // besides the quoted input
	}{
		{"", []string{"6h", "@daily"}},
		{"   ", []string{"6h", "@daily"}},
		{"30s", []string{"minimum 1m", "0 3 * * *"}},
		{"59s", []string{"minimum 1m"}},
		{"0s", []string{"minimum 1m"}},
		{"-1h", []string{"minimum 1m"}},
		{"@every 30s", []string{"minimum 1m"}},
		{"@every often", []string{"@every", "6h"}},
		{"6x", []string{"neither", "6h", "@daily"}},
		{"daily", []string{"neither", "6h", "@daily"}},
		{"0 3 * *", []string{"neither"}},
		{"0 0 3 * * *", []string{"neither"}},
		{"61 * * * *", []string{"neither"}},
		{"* 24 * * *", []string{"neither"}},
		{"@fortnightly", []string{"neither"}},
		{"0 0 30 2 *", []string{"never fires"}},
		{"TZ=Nowhere/Atlantis 0 3 * * *", []string{"Nowhere/Atlantis"}},
		{"TZ=UTC", []string{"time zone"}},
		{"TZ= 0 3 * * *", []string{"time zone"}},
		{"TZ=UTC 6h", []string{"only to cron"}},
	}
	for _, tc := range bad {
		s, err := schedule.Parse(tc.expr)
		if err == nil {
			t.Errorf("Parse(%q) = %q, want an error", tc.expr, s)
			continue
		}
		for _, w := range append([]string{`"` + tc.expr + `"`}, tc.want...) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Parse(%q) error %q does not mention %q", tc.expr, err, w)
			}
		}
	}
}

func TestNextInterval(t *testing.T) {
	s := schedule.MustParse("1h30m")
	last := time.Date(2026, 3, 10, 2, 17, 42, 5000, time.UTC)
	want := last.Add(90 * time.Minute)
	if got := s.Next(last); !got.Equal(want) {
		t.Errorf("Next(%v) = %v, want %v (anchored on the last run)", last, got, want)
	}
	if got := s.Next(want); !got.Equal(want.Add(90 * time.Minute)) {
		t.Errorf("Next(%v) = %v", want, got)
	}
}

func TestNextCron(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		expr        string
		after, want time.Time
	}{
		{"TZ=UTC 0 3 * * *", time.Date(2026, 3, 10, 2, 59, 59, 0, time.UTC), utc(2026, 3, 10, 3, 0)},
		{"TZ=UTC 0 3 * * *", utc(2026, 3, 10, 3, 0), utc(2026, 3, 11, 3, 0)}, // strictly after
		{"TZ=UTC 0 3 * * *", time.Date(2026, 3, 10, 3, 0, 0, 1, time.UTC), utc(2026, 3, 11, 3, 0)},
		{"TZ=UTC @hourly", utc(2026, 3, 10, 10, 30), utc(2026, 3, 10, 11, 0)},
		{"TZ=UTC @daily", utc(2026, 12, 31, 12, 0), utc(2027, 1, 1, 0, 0)},
		{"TZ=UTC */15 * * * *", utc(2026, 3, 10, 10, 7), utc(2026, 3, 10, 10, 15)},
		{"TZ=UTC 0 0 1 * *", utc(2026, 2, 15, 0, 0), utc(2026, 3, 1, 0, 0)},
		{"TZ=UTC 0 0 * * 1", utc(2026, 3, 11, 0, 0), utc(2026, 3, 16, 0, 0)},     // Wed → Mon
		{"TZ=UTC 30 4 * * 1-5", utc(2026, 3, 13, 5, 0), utc(2026, 3, 16, 4, 30)}, // Fri → Mon
		{"TZ=UTC 0 0 29 2 *", utc(2026, 3, 1, 0, 0), utc(2028, 2, 29, 0, 0)},
		// 03:00 in Tokyo (UTC+9, no DST) is 18:00 UTC the day before.
		{"TZ=Asia/Tokyo 0 3 * * *", utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 18, 0)},
		{"TZ=Asia/Tokyo 0 3 * * *", time.Date(2026, 1, 1, 4, 0, 0, 0, tokyo), utc(2026, 1, 1, 18, 0)},
		// Without TZ= a cron expression is in local time, as cron's is.
		{"0 3 * * *", time.Date(2026, 1, 10, 1, 0, 0, 0, time.Local), time.Date(2026, 1, 10, 3, 0, 0, 0, time.Local)},
	}
	for _, tc := range cases {
		got := schedule.MustParse(tc.expr).Next(tc.after)
		if !got.Equal(tc.want) {
			t.Errorf("%q.Next(%v) = %v, want %v", tc.expr, tc.after, got, tc.want)
		}
		if got.Location() != tc.after.Location() {
			t.Errorf("%q.Next(%v) is in %v, want the argument's location", tc.expr, tc.after, got.Location())
		}
	}
}

func TestDue(t *testing.T) {
	t0 := utc(2026, 3, 10, 0, 0)
	hourly := schedule.MustParse("1h")
	cronHourly := schedule.MustParse("TZ=UTC @hourly")
	cases := []struct {
		name        string
		s           schedule.Schedule
		anchor, now time.Time
		due         bool
		next        time.Time
	}{
		{"interval not yet", hourly, t0, t0.Add(30 * time.Minute), false, t0.Add(time.Hour)},
		{"interval on time", hourly, t0, t0.Add(time.Hour), true, t0.Add(2 * time.Hour)},
		{"interval just late", hourly, t0, t0.Add(time.Hour + time.Second), true, t0.Add(2 * time.Hour)},
		{"interval down a day", hourly, t0, t0.Add(24*time.Hour + 10*time.Minute), true, t0.Add(25 * time.Hour)},
		{"interval down exactly on a tick", hourly, t0, t0.Add(24 * time.Hour), true, t0.Add(25 * time.Hour)},
		{"cron not yet", cronHourly, t0.Add(5 * time.Minute), t0.Add(59 * time.Minute), false, t0.Add(time.Hour)},
		{"cron on time", cronHourly, t0.Add(5 * time.Minute), t0.Add(time.Hour), true, t0.Add(2 * time.Hour)},
		{"cron down a day", cronHourly, t0, t0.Add(24*time.Hour + 30*time.Minute), true, t0.Add(25 * time.Hour)},
		{"created, first time not reached", cronHourly, t0.Add(20 * time.Minute), t0.Add(40 * time.Minute), false, t0.Add(time.Hour)},
		{"created, first time reached", cronHourly, t0.Add(20 * time.Minute), t0.Add(time.Hour), true, t0.Add(2 * time.Hour)},
		{"zero anchor", hourly, time.Time{}, t0, true, t0.Add(time.Hour)},
		{"anchor in the future", hourly, t0.Add(time.Hour), t0, false, t0.Add(2 * time.Hour)},
		{"zero schedule", schedule.Schedule{}, t0, t0.Add(1000 * time.Hour), false, time.Time{}},
	}
	for _, tc := range cases {
		due, next := tc.s.Due(tc.anchor, tc.now)
		if due != tc.due || !next.Equal(tc.next) {
			t.Errorf("%s: Due(%v, %v) = %v, %v; want %v, %v", tc.name, tc.anchor, tc.now, due, next, tc.due, tc.next)
		}
		if !next.IsZero() && !next.After(tc.now) {
			t.Errorf("%s: next %v is not after now %v", tc.name, next, tc.now)
		}
	}
}

// After downtime the job is due once: once the catch-up run is recorded, the missed times
// of the day are not run one after another; the job is back on its schedule.
func TestDueCatchUpOnce(t *testing.T) {
	down := utc(2026, 3, 10, 0, 0)
	up := down.Add(24*time.Hour + 7*time.Minute)
	cases := []struct {
		expr string
		want []time.Time
	}{
		{"1h", []time.Time{up, up.Add(time.Hour)}},
		{"@every 1h", []time.Time{up, up.Add(time.Hour)}},
		{"TZ=UTC @hourly", []time.Time{up, utc(2026, 3, 11, 1, 0), utc(2026, 3, 11, 2, 0)}},
	}
	for _, tc := range cases {
		s := schedule.MustParse(tc.expr)
		last := down
		var runs []time.Time
		for now := up; now.Before(up.Add(2 * time.Hour)); now = now.Add(time.Minute) {
			if due, _ := s.Due(last, now); due {
				runs = append(runs, now)
				last = now
			}
		}
		if !slices.EqualFunc(runs, tc.want, time.Time.Equal) {
			t.Errorf("%q: runs in the two hours after a day down = %v, want %v", tc.expr, runs, tc.want)
		}
	}
}

func TestAnchor(t *testing.T) {
	created, last := utc(2026, 1, 1, 0, 0), utc(2026, 2, 1, 0, 0)
	if got := schedule.Anchor(time.Time{}, created); !got.Equal(created) {
		t.Errorf("Anchor(never ran) = %v, want the creation time", got)
	}
	if got := schedule.Anchor(last, created); !got.Equal(last) {
		t.Errorf("Anchor(ran) = %v, want the last run", got)
	}
}

func TestText(t *testing.T) {
	var s schedule.Schedule
	if err := s.UnmarshalText([]byte("TZ=UTC  @daily")); err != nil {
		t.Fatal(err)
	}
	b, _ := s.MarshalText()
	if string(b) != "TZ=UTC @daily" {
		t.Errorf("MarshalText = %q", b)
	}
	if err := s.UnmarshalText([]byte("10s")); err == nil {
		t.Error("UnmarshalText(10s) accepted")
	}
	if err := s.UnmarshalText(nil); err != nil || !s.IsZero() {
		t.Errorf("UnmarshalText(empty) = %v, %v; want the zero Schedule", s, err)
	}
}
