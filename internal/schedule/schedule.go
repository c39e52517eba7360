package schedule

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// MinInterval is the shortest interval a schedule may have. A backup copy more often than
// this would spend its time on session setup.
const MinInterval = time.Minute

// accepted is appended to parse errors so the user sees both forms.
const accepted = `want an interval such as "6h", "30m" or "1h30m" (at least 1m), ` +
	`or a cron expression such as "0 3 * * *", "@daily", "@hourly" or "@every 2h", ` +
	`optionally prefixed by "TZ=Area/City "`

var cronParser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule says when a job runs: every fixed interval after its previous run, or at the
// times a cron expression names. The zero Schedule never runs.
type Schedule struct {
	expr  string
	every time.Duration // > 0 for intervals and "@every"
	spec  cron.Schedule // for cron expressions and descriptors
}

// Parse reads an interval ("6h", "1h30m", "@every 2h"; at least MinInterval) or a standard
// 5-field cron expression or descriptor ("0 3 * * *", "@daily"), optionally prefixed by
// "TZ=Area/City " (or "CRON_TZ="). Cron expressions without a TZ prefix use the local time
// zone, as cron does.
func Parse(expr string) (Schedule, error) {
	canon := strings.Join(strings.Fields(expr), " ")
	if canon == "" {
		return Schedule{}, fmt.Errorf("schedule %q is empty: %s", expr, accepted)
	}
	rest := canon
	tz := ""
	if strings.HasPrefix(rest, "TZ=") || strings.HasPrefix(rest, "CRON_TZ=") {
		zone, after, ok := strings.Cut(rest, " ")
		_, name, _ := strings.Cut(zone, "=")
		if !ok || name == "" {
			return Schedule{}, fmt.Errorf("schedule %q: time zone prefix without a zone or expression: %s", expr, accepted)
		}
		if _, err := time.LoadLocation(name); err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: unknown time zone %q: %w", expr, name, err)
		}
		tz, rest = name, after
	}

	if every, ok, err := parseInterval(rest); ok {
		if err != nil {
			return Schedule{}, fmt.Errorf("schedule %q: %w", expr, err)
		}
		if tz != "" {
			return Schedule{}, fmt.Errorf("schedule %q: a time zone applies only to cron expressions, not to the interval %q", expr, rest)
		}
		return Schedule{expr: canon, every: every}, nil
	}

	spec, err := cronParser.Parse(canon)
	if err != nil {
		return Schedule{}, fmt.Errorf("schedule %q is neither an interval nor a cron expression (%v): %s", expr, err, accepted)
	}
	// robfig/cron gives up after five years and returns the zero time, e.g. for "0 0 30 2 *".
	if spec.Next(time.Now()).IsZero() {
		return Schedule{}, fmt.Errorf("schedule %q never fires", expr)
	}
	return Schedule{expr: canon, spec: spec}, nil
}

// parseInterval reports whether s is meant as an interval ("6h" or "@every 6h") and, if
// so, its duration or why it is not acceptable.
func parseInterval(s string) (time.Duration, bool, error) {
	text, isEvery := strings.CutPrefix(s, "@every ")
	d, err := time.ParseDuration(text)
	if err != nil {
		if isEvery {
			return 0, true, fmt.Errorf("bad interval after @every: %w; %s", err, accepted)
		}
		return 0, false, nil
	}
	if d < MinInterval {
		return 0, true, fmt.Errorf("interval %s is shorter than the minimum 1m; %s", text, accepted)
	}
	return d, true, nil
}

// MustParse is Parse for schedules known to be valid, such as constants in tests. It panics
// on an invalid expression.
func MustParse(expr string) Schedule {
	s, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return s
}

// String returns the expression the schedule was parsed from, with runs of white space
// collapsed, so that Parse(s.String()) gives the same schedule.
func (s Schedule) String() string { return s.expr }

// IsZero reports whether s is the zero Schedule, which never runs.
func (s Schedule) IsZero() bool { return s.every == 0 && s.spec == nil }

// Interval returns the interval of an interval schedule, and 0 for a cron schedule.
func (s Schedule) Interval() time.Duration { return s.every }

// Next returns the first scheduled time strictly after after. Interval schedules are
// anchored: Next(lastRun) is lastRun plus the interval. Cron schedules have a resolution of
// one second. The zero Schedule returns the zero time.
func (s Schedule) Next(after time.Time) time.Time {
	switch {
	case s.every > 0:
		return after.Add(s.every)
	case s.spec != nil:
		next := s.spec.Next(after)
		if next.IsZero() {
			return next
		}
		return next.In(after.Location())
	default:
		return time.Time{}
	}
}

// Anchor returns what a job's schedule counts from: its last run if it ran, else the time
// it was created.
func Anchor(lastRun, created time.Time) time.Time {
	if !lastRun.IsZero() {
		return lastRun
	}
	return created
}

// Due reports whether a job whose schedule counts from anchor (see Anchor) should start at
// now, and the first scheduled time strictly after now.
//
// However many scheduled times passed between anchor and now (the controller was down for a
// day on an hourly schedule), the job is due once; next is then in the future, not one of
// the missed times. A zero anchor is due at once. The zero Schedule is never due and has a
// zero next.
func (s Schedule) Due(anchor, now time.Time) (due bool, next time.Time) {
	if s.IsZero() {
		return false, time.Time{}
	}
	if anchor.IsZero() {
		return true, s.Next(now)
	}
	first := s.Next(anchor)
	if first.IsZero() {
		return false, first
	}
	if first.After(now) {
		return false, first
	}
	if s.every > 0 {
		// Stay on the anchor's grid: anchor + k*interval.
		k := now.Sub(anchor)/s.every + 1
		next = anchor.Add(k * s.every)
		if !next.After(now) { // overflow on absurd spans
			next = now.Add(s.every)
		}
		return true, next
	}
	return true, s.Next(now)
}

// MarshalText returns the schedule's expression.
func (s Schedule) MarshalText() ([]byte, error) { return []byte(s.expr), nil }

// UnmarshalText parses an expression; see Parse. Empty text gives the zero Schedule.
func (s *Schedule) UnmarshalText(text []byte) error {
	if len(strings.TrimSpace(string(text))) == 0 {
		*s = Schedule{}
		return nil
	}
	v, err := Parse(string(text))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
