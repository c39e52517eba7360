package config

import (
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "50Mbit", want: 50e6 / 8},
		{in: "50 Mbit/s", want: 50e6 / 8},
		{in: "1Gbit", want: 1e9 / 8},
		{in: "1.5gbit", want: 1.5e9 / 8},
		{in: "800kbit", want: 100e3},
		{in: "10MB/s", want: 10e6},
		{in: "10MB", want: 10e6},
		{in: "512KiB/s", want: 512 << 10},
		{in: "2MiB/s", want: 2 << 20},
		{in: "1GiB/s", want: 1 << 30},
		{in: "100B/s", want: 100},
		{in: "50Mbps", err: `unknown unit "Mbps"`},
		{in: "10mb/s", err: "unknown unit"},
		{in: "fast", err: "no number"},
		{in: "-1MB/s", err: "no number"},
		{in: "1..2MB/s", err: "bad number"},
		{in: "4bit", err: "less than one byte"},
		{in: "99999999999TB/s", err: "too large"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseRate(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "not a rate") {
					t.Fatalf("parseRate(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseRate(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		err  string
	}{
		{in: "10GiB", want: 10 << 30},
		{in: "500MB", want: 500e6},
		{in: "1.5TiB", want: 3 << 39},
		{in: "4096", want: 4096},
		{in: " 64 KiB ", want: 64 << 10},
		{in: "10GB/s", err: "unknown unit"},
		{in: "10Gbit", err: "unknown unit"},
		{in: "10G", err: "unknown unit"},
		{in: "", err: "no number"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "not a size") {
					t.Fatalf("parseSize(%q) = %d, %v; want error containing %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
}
