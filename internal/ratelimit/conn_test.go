package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// sendAndTime writes data to w in the background and returns how long the
// reader took to receive all of it, checking it arrived intact.
func sendAndTime(t *testing.T, w io.Writer, r io.Reader, data []byte) time.Duration {
	t.Helper()
	start := time.Now()
	errc := make(chan error, 1)
	go func() {
		_, err := w.Write(data)
		errc <- err
	}()
	got := make([]byte, len(data))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	elapsed := time.Since(start)
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("data arrived corrupted")
	}
	return elapsed
}

func TestConnRate(t *testing.T) {
	t.Parallel()
	const size, rate = 4 << 20, 8_000_000
	data := randomBytes(size, 4)
	want := minElapsed(size, burstFor(rate), rate)

	t.Run("write", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		limited := Conn(client, nil, []*Limiter{New(rate)})
		if elapsed := sendAndTime(t, limited, server, data); elapsed < want {
			t.Fatalf("%d bytes written in %v, want at least %v", size, elapsed, want)
		}
	})
	t.Run("read", func(t *testing.T) {
		t.Parallel()
		client, server := tcpPair(t)
		limited := Conn(client, []*Limiter{New(rate)}, nil)
		if elapsed := sendAndTime(t, server, limited, data); elapsed < want {
			t.Fatalf("%d bytes read in %v, want at least %v", size, elapsed, want)
		}
	})
}

// echoRound sends data to an echo server over c and reads it back,
// returning how long that took.
func echoRound(t *testing.T, c net.Conn, data []byte) time.Duration {
	t.Helper()
	return sendAndTime(t, c, c, data)
}

// TestListenerAndDialer: a conn from Listener or Dialer charges both
// directions to its limiters: echoing 2 MiB costs 4 MiB of the budget.
func TestListenerAndDialer(t *testing.T) {
	t.Parallel()
	const size, rate = 2 << 20, 8_000_000
	data := randomBytes(size, 5)
	want := minElapsed(2*size, burstFor(rate), rate)

	serveEcho := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}

	t.Run("listener", func(t *testing.T) {
		t.Parallel()
		raw, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		go serveEcho(Listener(raw, New(rate)))
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if elapsed := echoRound(t, c, data); elapsed < want {
			t.Fatalf("echo of %d bytes in %v, want at least %v", size, elapsed, want)
		}
	})
	t.Run("dialer", func(t *testing.T) {
		t.Parallel()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go serveEcho(ln)
		c, err := Dialer(New(rate))(context.Background(), ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if elapsed := echoRound(t, c, data); elapsed < want {
			t.Fatalf("echo of %d bytes in %v, want at least %v", size, elapsed, want)
		}
	})
}

// TestConnCloseEndsWait: closing a conn ends a write waiting on its
// limiter, which would otherwise wait for a minute for each piece.
func TestConnCloseEndsWait(t *testing.T) {
	t.Parallel()
	client, server := tcpPair(t)
	c := Conn(client, nil, []*Limiter{New(1000)})
	// The full bucket passes at once; close when it has arrived, while
	// the write waits for the next piece.
	go func() {
		io.ReadFull(server, make([]byte, minBurst))
		c.Close()
	}()
	n, err := c.Write(make([]byte, 1<<20))
	if !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write on a conn closed while waiting: %d, %v, want net.ErrClosed", n, err)
	}
	if n != minBurst {
		t.Fatalf("Write returned %d, want the %d bytes of the full bucket", n, minBurst)
	}
}

func TestWrappersWithoutLimitersPassThrough(t *testing.T) {
	client, _ := tcpPair(t)
	if c := Conn(client, nil, []*Limiter{nil}); c != client {
		t.Fatal("Conn without limiters wrapped the conn")
	}
	r := bytes.NewReader(nil)
	if NewReader(context.Background(), r) != io.Reader(r) {
		t.Fatal("NewReader without limiters wrapped the reader")
	}
}
