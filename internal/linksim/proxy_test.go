package linksim

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/ratelimit"
)

// TestIntegrityBothWays: 64 MiB go through the proxy and back through an
// echo server at once, arrive intact, and the end of the client's input is
// passed on both ways.
func TestIntegrityBothWays(t *testing.T) {
	const size = 64 << 20
	data := randomBytes(size, 1)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"plain", Config{}},
		{"delayed", Config{Up: Shape{Latency: time.Millisecond}, Down: Shape{Latency: 2 * time.Millisecond}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, echo)
			p := startProxy(t, srv.addr(), tc.cfg)
			c := dial(t, p.Addr())
			errc := make(chan error, 1)
			go func() {
				_, err := c.Write(data)
				if err == nil {
					err = c.CloseWrite()
				}
				errc <- err
			}()
			start := time.Now()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			t.Logf("%d MiB each way in %v", size>>20, time.Since(start))
			if err := <-errc; err != nil {
				t.Fatalf("write: %v", err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes back, not the %d sent", len(got), len(data))
			}
			waitFor(t, "the link to close", func() bool { return p.Stats().Active == 0 })
			s := p.Stats()
			want := DirStats{Read: size, Delivered: size}
			if s.Up != want || s.Down != want || s.Accepted != 1 || s.Cuts != 0 {
				t.Fatalf("stats %+v, want %+v both ways and one connection", s, want)
			}
		})
	}
}

// TestRate: the rate of each direction holds.
func TestRate(t *testing.T) {
	const size, rate = 4 << 20, 8_000_000
	burst := ratelimit.New(rate).Burst()
	want := minElapsed(size, burst, rate)

	t.Run("up", func(t *testing.T) {
		t.Parallel()
		k := newCounter()
		srv := startServer(t, k.handle)
		p := startProxy(t, srv.addr(), Config{Up: Shape{Rate: rate}})
		start := time.Now()
		c := dial(t, p.Addr())
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Fatal(err)
		}
		c.CloseWrite()
		got := <-k.total
		elapsed := time.Since(start)
		t.Logf("%d bytes up at %d bytes/s in %v: %.2f MB/s", got, rate, elapsed, float64(got)/elapsed.Seconds()/1e6)
		if got != size {
			t.Fatalf("target got %d bytes, want %d", got, size)
		}
		if elapsed < want {
			t.Fatalf("%d bytes up in %v, want at least %v", size, elapsed, want)
		}
	})
	t.Run("down", func(t *testing.T) {
		t.Parallel()
		srv := startServer(t, source(size))
		p := startProxy(t, srv.addr(), Config{Down: Shape{Rate: rate}})
		start := time.Now()
		n, err := io.Copy(io.Discard, dial(t, p.Addr()))
		elapsed := time.Since(start)
		if err != nil || n != size {
			t.Fatalf("read %d bytes, %v; want %d", n, err, size)
		}
		t.Logf("%d bytes down at %d bytes/s in %v: %.2f MB/s", n, rate, elapsed, float64(n)/elapsed.Seconds()/1e6)
		if elapsed < want {
			t.Fatalf("%d bytes down in %v, want at least %v", size, elapsed, want)
		}
	})
}

// TestSharedRate: the rate is the link's, shared by its connections.
func TestSharedRate(t *testing.T) {
	t.Parallel()
	const size, rate = 2 << 20, 8_000_000
	k := newCounter()
	srv := startServer(t, k.handle)
	p := startProxy(t, srv.addr(), Config{Up: Shape{Rate: rate}})
	start := time.Now()
	for range 2 {
		c := dial(t, p.Addr())
		go func() {
			c.Write(make([]byte, size))
			c.CloseWrite()
		}()
	}
	if n1, n2 := <-k.total, <-k.total; n1 != size || n2 != size {
		t.Fatalf("target got %d and %d bytes, want %d each", n1, n2, size)
	}
	if elapsed, want := time.Since(start), minElapsed(2*size, ratelimit.New(rate).Burst(), rate); elapsed < want {
		t.Fatalf("two connections of %d bytes in %v, want at least %v", size, elapsed, want)
	}
}

// TestLatency: a round trip takes at least the two one-way delays.
func TestLatency(t *testing.T) {
	t.Parallel()
	const up, down = 20 * time.Millisecond, 40 * time.Millisecond
	srv := startServer(t, echo)
	p := startProxy(t, srv.addr(), Config{Up: Shape{Latency: up}, Down: Shape{Latency: down}})
	c := dial(t, p.Addr())
	msg := []byte("ping, with some bytes to it")
	buf := make([]byte, len(msg))
	for i := range 5 {
		start := time.Now()
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		t.Logf("round trip %d: %v", i, rtt)
		if rtt < up+down {
			t.Fatalf("round trip in %v, want at least %v", rtt, up+down)
		}
		if !bytes.Equal(buf, msg) {
			t.Fatalf("echo %q, want %q", buf, msg)
		}
	}
}

// TestDelayLineHoldsTheFlight: with an hour of latency nothing is
// delivered, yet the proxy keeps reading: the delay line holds many
// chunks in flight rather than one at a time, so a link's rate does not
// fall with its latency. A proxy that waited out the latency per chunk
// would have read one chunk, and the wait below would time out.
func TestDelayLineHoldsTheFlight(t *testing.T) {
	t.Parallel()
	const size = 24 << 20
	k := newCounter()
	srv := startServer(t, k.handle)
	p := startProxy(t, srv.addr(), Config{Up: Shape{Latency: time.Hour}})
	c := dial(t, p.Addr())
	go c.Write(make([]byte, size))
	waitFor(t, "16 MiB in flight", func() bool { return p.Stats().Up.Read >= 16<<20 })
	if s := p.Stats(); s.Up.Delivered != 0 {
		t.Fatalf("%d bytes delivered within the hour of latency", s.Up.Delivered)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if n := <-k.total; n != 0 {
		t.Fatalf("target got %d bytes within the hour of latency", n)
	}
}

// TestShapedTransfer: 32 MiB through 200 Mbit and 20 ms each way arrive
// intact and no faster than the rate; the rate achieved is logged (the
// benchmark measures it).
func TestShapedTransfer(t *testing.T) {
	t.Parallel()
	const size, rate, latency = 32 << 20, 25_000_000, 20 * time.Millisecond
	srv := startServer(t, echo)
	shape := Shape{Rate: rate, Latency: latency}
	p := startProxy(t, srv.addr(), Config{Up: shape, Down: shape})
	c := dial(t, p.Addr())
	data := randomBytes(size, 2)
	start := time.Now()
	go func() {
		c.Write(data)
		c.CloseWrite()
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes back, not the %d sent", len(got), len(data))
	}
	t.Logf("%d MiB each way at %d bytes/s, %v latency: %v, %.1f MB/s (%.0f%% of the rate)",
		size>>20, rate, latency, elapsed, size/elapsed.Seconds()/1e6, 100*size/elapsed.Seconds()/rate)
	if want := minElapsed(size, ratelimit.New(rate).Burst(), rate) + 2*latency; elapsed < want {
		t.Fatalf("%d bytes in %v, want at least %v", size, elapsed, want)
	}
}

// TestCutAtOffsets: each connection is cut right after the byte at a cut
// offset, the client sees it closed, and the next connection carries on.
func TestCutAtOffsets(t *testing.T) {
	t.Parallel()
	const perConn = 4 << 20
	cuts := []int64{3 << 20, 1 << 20, 5<<20 + 1} // Start sorts them
	k := newCounter()
	srv := startServer(t, k.handle)
	p := startProxy(t, srv.addr(), Config{Up: Shape{CutAt: cuts}})

	var cutConns int
	for i := 0; ; i++ {
		if i > len(cuts) {
			t.Fatalf("%d connections cut, want %d", i, len(cuts))
		}
		c := dial(t, p.Addr())
		c.Write(make([]byte, perConn)) // fails if cut while writing
		c.CloseWrite()
		var n int64
		if err := binary.Read(c, binary.BigEndian, &n); err != nil {
			// Cut: the proxy closed the connection without the
			// target's reply.
			cutConns++
			c.Close()
			continue
		}
		if n != perConn {
			t.Fatalf("surviving connection delivered %d bytes, want %d", n, perConn)
		}
		break
	}
	if cutConns != len(cuts) {
		t.Fatalf("%d connections cut, want %d", cutConns, len(cuts))
	}
	want := []int64{1 << 20, 2 << 20, 2<<20 + 1, perConn}
	for i, w := range want {
		waitFor(t, "the target to finish reading", func() bool { _, ok := k.count(i); return ok })
		if n, _ := k.count(i); n != w {
			t.Fatalf("connection %d delivered %d bytes to the target, want %d", i, n, w)
		}
	}
	s := p.Stats()
	if s.Cuts != int64(len(cuts)) || s.Accepted != int64(len(want)) || s.Up.Delivered != 9<<20+1 {
		t.Fatalf("stats %+v, want %d cuts, %d connections, %d bytes delivered up", s, len(cuts), len(want), 9<<20+1)
	}
}

// TestCut: Cut closes the open connections at once; new ones work.
func TestCut(t *testing.T) {
	t.Parallel()
	srv := startServer(t, echo)
	p := startProxy(t, srv.addr(), Config{})
	if n := p.Cut(); n != 0 {
		t.Fatalf("Cut with no connections cut %d", n)
	}
	roundTrip := func(c net.Conn) {
		t.Helper()
		if _, err := c.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 5)
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
	}
	a, b := dial(t, p.Addr()), dial(t, p.Addr())
	roundTrip(a)
	roundTrip(b)
	if n := p.Cut(); n != 2 {
		t.Fatalf("Cut cut %d connections, want 2", n)
	}
	for _, c := range []net.Conn{a, b} {
		c.SetReadDeadline(time.Now().Add(time.Minute)) // a guard against a hang
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read on a cut connection: %v, want it closed", err)
		}
	}
	roundTrip(dial(t, p.Addr()))
	if s := p.Stats(); s.Cuts != 2 || s.Accepted != 3 {
		t.Fatalf("stats %+v, want 2 cuts and 3 connections", s)
	}
}

// TestCloseStopsEverything: Close returns with every goroutine of the
// proxy gone, even with data in flight for an hour, and closes the
// clients' connections.
func TestCloseStopsEverything(t *testing.T) {
	// The target greets each connection with 1 MiB, which waits on the
	// rate down; what goes up waits out the latency.
	srv := startServer(t, func(_ int, c net.Conn) {
		c.Write(make([]byte, 1<<20))
		io.Copy(io.Discard, c)
	})
	runtime.GC()
	before := runtime.NumGoroutine()
	p, err := Start(srv.addr(), Config{Up: Shape{Latency: time.Hour}, Down: Shape{Rate: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	idle := dial(t, p.Addr())
	busy := dial(t, p.Addr())
	go busy.Write(make([]byte, 8<<20))
	half := dial(t, p.Addr())
	half.Write([]byte("bye"))
	half.CloseWrite()
	waitFor(t, "bytes in flight", func() bool {
		s := p.Stats()
		return s.Up.Read >= 1<<20 && s.Down.Read >= 3*64<<10 && s.Active == 3
	})

	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for _, g := range strings.Split(string(buf[:n]), "\n\n") {
		if strings.Contains(g, "linksim.(*Proxy)") || strings.Contains(g, "linksim.(*delayLine)") {
			t.Fatalf("a goroutine of the proxy outlived Close:\n%s", g)
		}
	}
	for _, c := range []net.Conn{idle, busy, half} {
		// What was delivered before Close may still be read; then the
		// end (EOF or a reset), not the deadline, a guard against a hang.
		c.SetReadDeadline(time.Now().Add(time.Minute))
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("read after Close: %v, want the connection closed", err)
		}
		c.Close()
	}
	if c, err := net.Dial("tcp", p.Addr()); err == nil {
		c.Close()
		t.Fatal("the proxy still accepts after Close")
	}
	// The echo server's handlers end once the proxy has closed its side.
	waitFor(t, "goroutines to settle", func() bool { return runtime.NumGoroutine() <= before })
}

func TestDialError(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	p := startProxy(t, dead, Config{})
	c := dial(t, p.Addr())
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("read %d bytes from a proxy to nothing", n)
	}
	if s := p.Stats(); s.DialErrors != 1 || s.Accepted != 1 {
		t.Fatalf("stats %+v, want one connection and one dial error", s)
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{Up: Shape{Rate: -1}},
		{Down: Shape{Latency: -time.Second}},
		{Up: Shape{CutAt: []int64{5, -1}}},
		{Buffer: -1},
	} {
		if p, err := Start("127.0.0.1:1", cfg); err == nil {
			p.Close()
			t.Errorf("Start accepted %+v", cfg)
		}
	}
	if _, err := Start("127.0.0.1:1", Config{Listen: "256.0.0.1:0"}); err == nil {
		t.Error("Start listened on a bad address")
	}
}
