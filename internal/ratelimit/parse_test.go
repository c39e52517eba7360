package ratelimit

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"", 0},
		{"0", 0},
		{"0Mbit", 0},
		{"  ", 0},
		{"50Mbit", 6_250_000},
		{"50Mbps", 6_250_000},
		{"50mbit", 6_250_000},
		{"50 Mbit/s", 6_250_000},
		{"1.5Gbit", 187_500_000},
		{"1.5Gbps", 187_500_000},
		{"800kbit", 100_000},
		{"800Kbit", 100_000},
		{"8bit", 1},
		{"10MB/s", 10_000_000},
		{"10MB", 10_000_000},
		{"100MB", 100_000_000},
		{"10MiB/s", 10 << 20},
		{"512KiB/s", 512 << 10},
		{"2GiB", 2 << 30},
		{"1kB/s", 1000},
		{"1KB", 1000},
		{"1TB", 1e12},
		{"12345", 12345},
		{"12345B/s", 12345},
		{"0.5MB/s", 500_000},
	}
	for _, tc := range good {
		got, err := ParseRate(tc.in)
		if err != nil {
			t.Errorf("ParseRate(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseRate(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}

	bad := []string{
		"fast",
		"Mbit",
		"-5MB",
		"50Mb",    // bits or bytes? refused
		"50mb",    // likewise
		"50MBps",  // bytes per second is MB/s
		"10mB/s",  // millibytes
		"10MiBit", // no binary bits
		"10 MB/h",
		"1.2.3MB",
		"1e6",
		"50Mbps/s",
		"0.1",                       // rounds to nothing
		"1bit",                      // an eighth of a byte
		"99999999999999999999999TB", // overflows
	}
	for _, in := range bad {
		got, err := ParseRate(in)
		if err == nil {
			t.Errorf("ParseRate(%q) = %d, want an error", in, got)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, `"`+in+`"`) {
			t.Errorf("ParseRate(%q): error %q does not name the input", in, msg)
		}
		if !strings.Contains(msg, "50Mbit") && !strings.Contains(msg, "too large") {
			t.Errorf("ParseRate(%q): error %q does not give the accepted forms", in, msg)
		}
	}
}
