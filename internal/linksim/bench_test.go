package linksim

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkLink sends data through the proxy to a target that acknowledges
// each batch with a byte, and reports the MB/s achieved (MB/s, per batch,
// including the one-way latency of the last byte and of the ack) next to
// the rate configured.
//
//	go test -run '^$' -bench Link ./internal/linksim/
func BenchmarkLink(b *testing.B) {
	for _, bc := range []struct {
		name    string
		rate    int64
		latency time.Duration
	}{
		{"100Mbit", 12_500_000, 0},
		{"50Mbit_40ms", 6_250_000, 40 * time.Millisecond},
		{"100Mbit_50ms", 12_500_000, 50 * time.Millisecond},
		{"200Mbit_20ms", 25_000_000, 20 * time.Millisecond},
		{"1Gbit_10ms", 125_000_000, 10 * time.Millisecond},
		{"unlimited", 0, 0},
		{"unlimited_20ms", 0, 20 * time.Millisecond},
	} {
		b.Run(bc.name, func(b *testing.B) {
			// Two seconds' worth of the rate per batch, so that the round
			// trip of the ack costs little.
			size := 64 << 20
			if bc.rate > 0 {
				size = int(2 * bc.rate)
			}
			srv := startServer(b, func(_ int, c net.Conn) {
				buf := make([]byte, 256<<10)
				for {
					for left := size; left > 0; {
						n, err := c.Read(buf[:min(left, len(buf))])
						if err != nil {
							return
						}
						left -= n
					}
					if _, err := c.Write([]byte{1}); err != nil {
						return
					}
				}
			})
			shape := Shape{Rate: bc.rate, Latency: bc.latency}
			p := startProxy(b, srv.addr(), Config{Up: shape, Down: shape})
			c := dial(b, p.Addr())
			data := make([]byte, size)
			ack := make([]byte, 1)
			b.SetBytes(int64(size))
			start := time.Now()
			for b.Loop() {
				if _, err := c.Write(data); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, ack); err != nil {
					b.Fatal(err)
				}
			}
			achieved := float64(size) * float64(b.N) / time.Since(start).Seconds() / 1e6
			if bc.rate > 0 {
				b.ReportMetric(float64(bc.rate)/1e6, "configured_MB/s")
				b.ReportMetric(100*achieved*1e6/float64(bc.rate), "%_of_rate")
			}
		})
	}
}
