package ratelimit

import (
	"context"
	"errors"
	"net"
)

// Conn wraps c so that the bytes read from it are charged to readLims and
// the bytes written to it to writeLims, as NewReader and NewWriter do.
// Closing the conn ends its waits, which then fail with net.ErrClosed.
// The waits do not watch the conn's deadlines; only its I/O does. Wrap the
// raw TCP conn, under TLS, so that what is charged is what crosses the
// link.
func Conn(c net.Conn, readLims, writeLims []*Limiter) net.Conn {
	readLims, writeLims = nonNil(readLims), nonNil(writeLims)
	if len(readLims) == 0 && len(writeLims) == 0 {
		return c
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{Conn: c, ctx: ctx, cancel: cancel, readLims: readLims, writeLims: writeLims}
}

type conn struct {
	net.Conn
	ctx                 context.Context
	cancel              context.CancelFunc
	readLims, writeLims []*Limiter
}

func (c *conn) Read(p []byte) (int, error) {
	if len(c.readLims) == 0 {
		return c.Conn.Read(p)
	}
	n, err := readPaced(c.ctx, c.Conn, p, c.readLims)
	return n, closedIfCanceled(err)
}

func (c *conn) Write(p []byte) (int, error) {
	if len(c.writeLims) == 0 {
		return c.Conn.Write(p)
	}
	n, err := writePaced(c.ctx, c.Conn, p, c.writeLims)
	return n, closedIfCanceled(err)
}

func (c *conn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

// closedIfCanceled reports a wait ended by Close as the use of a closed
// conn, which is what callers of a net.Conn check for.
func closedIfCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return net.ErrClosed
	}
	return err
}

// Listener wraps ln so that every conn it accepts charges both the bytes
// read and the bytes written to lims: on a copy, where the data flows one
// way, that is the copy's bandwidth. Use Conn for separate directions.
func Listener(ln net.Listener, lims ...*Limiter) net.Listener {
	lims = nonNil(lims)
	if len(lims) == 0 {
		return ln
	}
	return &listener{Listener: ln, lims: lims}
}

type listener struct {
	net.Listener
	lims []*Limiter
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return Conn(c, l.lims, l.lims), nil
}

// Dialer returns a dial function, of the shape grpc.WithContextDialer
// takes, whose conns charge both directions to lims as Listener's do.
func Dialer(lims ...*Limiter) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return Conn(c, lims, lims), nil
	}
}
