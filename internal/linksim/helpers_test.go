package linksim

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// server is a TCP server on 127.0.0.1 for the proxy to forward to; it
// runs handle on each connection, and its cleanup closes everything and
// waits for the handlers.
type server struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []net.Conn
}

func startServer(t testing.TB, handle func(i int, c net.Conn)) *server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &server{ln: ln}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for i := 0; ; i++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Go(func() {
				defer c.Close()
				handle(i, c)
			})
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// echo sends back what it reads and passes the end of its input on.
func echo(_ int, c net.Conn) {
	io.Copy(c, c)
	c.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, c)
}

// counter is a sink: it reads a connection to its end, records how many
// bytes it got, and replies with that count as 8 bytes.
type counter struct {
	mu     sync.Mutex
	counts map[int]int64
	total  chan int64 // each connection's count, as it ends
}

func newCounter() *counter {
	return &counter{counts: make(map[int]int64), total: make(chan int64, 100)}
}

func (k *counter) handle(i int, c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	k.mu.Lock()
	k.counts[i] = n
	k.mu.Unlock()
	k.total <- n
	binary.Write(c, binary.BigEndian, n)
}

func (k *counter) count(i int) (int64, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	n, ok := k.counts[i]
	return n, ok
}

// source writes size bytes to each connection and closes it.
func source(size int) func(int, net.Conn) {
	return func(_ int, c net.Conn) {
		c.Write(make([]byte, size))
	}
}

func startProxy(t testing.TB, target string, cfg Config) *Proxy {
	t.Helper()
	p, err := Start(target, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t testing.TB, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func randomBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

// waitFor polls cond. The minute is a guard against a hang, for a clear
// failure instead of go test's timeout; what it waits for takes
// milliseconds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// minElapsed is the least time size bytes can take through a token
// bucket of rate and burst, less 5% for rounding. Timing is only ever
// checked from below: a loaded machine makes transfers slower, never
// faster.
func minElapsed(size, burst int, rate int64) time.Duration {
	return time.Duration(0.95 * float64(size-burst) / float64(rate) * float64(time.Second))
}
