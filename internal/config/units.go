package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Multipliers of the units a size or a rate may carry. Decimal prefixes
// (KB, Mbit) are powers of 1000 and binary ones (KiB) powers of 1024, as
// in IEC 80000-13; a rate in bits is divided by 8 to give bytes.
var (
	byteUnits = map[string]float64{
		"B":   1,
		"KB":  1e3,
		"kB":  1e3,
		"MB":  1e6,
		"GB":  1e9,
		"TB":  1e12,
		"KiB": 1 << 10,
		"MiB": 1 << 20,
		"GiB": 1 << 30,
		"TiB": 1 << 40,
	}
	bitUnits = map[string]float64{
		"bit":  1,
		"kbit": 1e3,
		"mbit": 1e6,
		"gbit": 1e9,
		"tbit": 1e12,
	}
)

const (
	sizeHint = `use a number of bytes with an optional unit: B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "10GiB"`
	rateHint = `use bits per second (Kbit, Mbit, Gbit, e.g. "50Mbit"), bytes per second (KB/s, MB/s, KiB/s, MiB/s, ..., e.g. "10MB/s") or a plain number of bytes per second; 0 means unlimited`
	durHint  = `use a number with a unit: ms, s, m or h, e.g. "30s", "5m" or "1h30m"`
)

// parseSize reads a byte count such as "10GiB", "500MB" or "1048576".
func parseSize(s string) (int64, error) {
	n, err := parseQuantity(s, false)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size: %w; %s", s, err, sizeHint)
	}
	return n, nil
}

// ParseRate reads a bandwidth as the configuration files take it (agent
// bandwidth, a copy job's --bandwidth): see parseRate.
func ParseRate(s string) (int64, error) { return parseRate(s) }

// parseRate reads a bandwidth such as "50Mbit", "10MB/s", "512KiB/s" or a
// plain number of bytes per second, and returns bytes per second.
func parseRate(s string) (int64, error) {
	n, err := parseQuantity(s, true)
	if err != nil {
		return 0, fmt.Errorf("%q is not a rate: %w; %s", s, err, rateHint)
	}
	return n, nil
}

// parseQuantity reads a non-negative number and an optional unit. Byte
// units must end in an upper-case B so that "Mb" is never read as
// megabytes; bit units are spelt out ("Mbit") and matched in any case.
func parseQuantity(s string, rate bool) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.TrimSpace(t[i:])
	if num == "" {
		return 0, errors.New("no number")
	}
	mult := 1.0
	bits := false
	if unit != "" {
		if rate {
			unit = strings.TrimSuffix(unit, "/s")
		}
		if m, ok := byteUnits[unit]; ok {
			mult = m
		} else if m, ok := bitUnits[strings.ToLower(unit)]; ok && rate {
			mult, bits = m, true
		} else {
			return 0, fmt.Errorf("unknown unit %q", strings.TrimSpace(t[i:]))
		}
	}
	// num holds only digits and dots, so ParseFloat cannot meet signs,
	// exponents, hex or "Inf"; integers are exact up to 2^53 bytes.
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("bad number %q", num)
	}
	v := f * mult
	if bits {
		v /= 8
	}
	if v >= math.MaxInt64 {
		return 0, errors.New("too large")
	}
	n := int64(v)
	if n == 0 && v > 0 {
		return 0, errors.New("less than one byte")
	}
	return n, nil
}

// parseDuration is time.ParseDuration with an actionable error.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; %s", s, durHint)
	}
	return d, nil
}
