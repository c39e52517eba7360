package ratelimit

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// acceptedForms is quoted by every ParseRate error.
const acceptedForms = `want a number with a unit: bits per second as 800kbit, 50Mbit, 1.5Gbit (or kbps, Mbps, Gbps, or Mbit/s), ` +
	`bytes per second as 10MB/s (SI, 1 MB = 1e6 bytes) or 10MiB/s, 512KiB/s (binary); ` +
	`a plain integer is bytes per second; "0" or "" means unlimited`

// rateUnits maps a unit, without its optional "/s", to bytes per second.
// Bit units are SI ("Mbps" is megabits, unlike tc's megabytes). A byte unit
// needs an upper-case B, so "Mb" is refused rather than guessed at.
var rateUnits = map[string]float64{
	"": 1, "B": 1,
	"kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
	"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40,
}

// bitPrefixes are the multipliers of the bit units, whose prefix may be
// written in either case ("Mbit", "mbit").
var bitPrefixes = map[string]float64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}

// ParseRate parses a bandwidth and returns it in bytes per second; 0 means
// unlimited. See acceptedForms for the syntax.
func ParseRate(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, nil
	}
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		if strings.HasPrefix(t, "-") {
			return 0, fmt.Errorf("parse rate %q: negative rate; %s", s, acceptedForms)
		}
		return 0, fmt.Errorf("parse rate %q: no number; %s", s, acceptedForms)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("parse rate %q: bad number %q; %s", s, num, acceptedForms)
	}
	mult, ok := unitMultiplier(unit)
	if !ok {
		return 0, fmt.Errorf("parse rate %q: unknown unit %q; %s", s, unit, acceptedForms)
	}
	bps := math.Round(v * mult)
	switch {
	case v == 0:
		return 0, nil
	case bps < 1:
		return 0, fmt.Errorf("parse rate %q: less than one byte per second; %s", s, acceptedForms)
	case bps >= math.MaxInt64:
		return 0, fmt.Errorf("parse rate %q: too large", s)
	}
	return int64(bps), nil
}

// unitMultiplier returns bytes per second per unit of u.
func unitMultiplier(u string) (float64, bool) {
	if p, ok := strings.CutSuffix(u, "bps"); ok {
		m, ok := bitPrefixes[strings.ToLower(p)]
		return m / 8, ok
	}
	u = strings.TrimSuffix(u, "/s")
	if p, ok := strings.CutSuffix(u, "bit"); ok {
		m, ok := bitPrefixes[strings.ToLower(p)]
		return m / 8, ok
	}
	m, ok := rateUnits[u]
	return m, ok
}
