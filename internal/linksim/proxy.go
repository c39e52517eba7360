package linksim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferrybackup/ferry/internal/ratelimit"
)

// Shape is what the link does to the bytes going one way.
type Shape struct {
	// Rate is the bandwidth in bytes per second, shared by all the
	// connections; 0 is unlimited.
	Rate int64
	// Latency is the one-way delay: a byte is delivered no earlier than
	// Latency after it was read and passed the rate limit.
	Latency time.Duration
	// CutAt are offsets in the bytes delivered this way, counted over all
	// connections. When the count reaches one, the connection carrying
	// that byte is cut right after it: both of its sides are closed and
	// what is in flight on it is lost.
	CutAt []int64
}

// Config configures a Proxy.
type Config struct {
	// Listen is the address to listen on; empty means 127.0.0.1:0.
	Listen string
	// Up shapes the bytes from the client to the target, Down those back.
	Up, Down Shape
	// Buffer bounds the bytes in flight per connection and direction (read
	// from one side, not yet written to the other). 0 means twice the
	// bandwidth-delay product, between 4 MiB and 256 MiB, or 64 MiB when
	// a delayed direction has no rate limit.
	Buffer int
}

func (c Config) validate() error {
	for _, d := range []struct {
		name string
		s    Shape
	}{{"up", c.Up}, {"down", c.Down}} {
		if d.s.Rate < 0 || d.s.Latency < 0 {
			return fmt.Errorf("linksim: %s rate %d and latency %v must not be negative", d.name, d.s.Rate, d.s.Latency)
		}
		for _, off := range d.s.CutAt {
			if off < 0 {
				return fmt.Errorf("linksim: %s cut offset %d is negative", d.name, off)
			}
		}
	}
	if c.Buffer < 0 {
		return fmt.Errorf("linksim: buffer %d is negative", c.Buffer)
	}
	return nil
}

// bufferFor is the default of Config.Buffer for s.
func bufferFor(s Shape) int {
	const lo, hi = 4 << 20, 256 << 20
	switch {
	case s.Latency == 0:
		return lo
	case s.Rate == 0:
		return 64 << 20
	}
	bdp := float64(s.Rate) * s.Latency.Seconds()
	return int(min(max(2*bdp, lo), hi))
}

// Stats are a proxy's counters.
type Stats struct {
	// Up counts the bytes from the client to the target, Down those back.
	Up, Down DirStats
	// Accepted counts the connections accepted, Active those open now.
	Accepted, Active int64
	// DialErrors counts the connections closed because the target could
	// not be dialed.
	DialErrors int64
	// Cuts counts the cut offsets reached and the connections Cut cut.
	Cuts int64
}

// DirStats count the bytes going one way.
type DirStats struct {
	// Read is what the proxy read from the sender; Delivered what it wrote
	// to the receiver. The difference is in flight or lost to cuts.
	Read, Delivered int64
}

// Proxy is a running link simulator.
type Proxy struct {
	ln       net.Listener
	target   string
	up, down *direction
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	mu     sync.Mutex
	links  map[*link]struct{}
	closed bool

	accepted, dialErrors, cuts atomic.Int64
}

// direction is one way of the link, shared by its connections.
type direction struct {
	shape           Shape
	buffer          int
	lim             *ratelimit.Limiter
	read, delivered atomic.Int64

	mu   sync.Mutex
	pos  int64   // bytes delivered, for the cuts
	cuts []int64 // ascending
	next int     // the next cut in cuts
}

func newDirection(s Shape, buffer int) *direction {
	if buffer == 0 {
		buffer = bufferFor(s)
	}
	cuts := slices.Clone(s.CutAt)
	slices.Sort(cuts)
	return &direction{shape: s, buffer: buffer, lim: ratelimit.New(s.Rate), cuts: cuts}
}

// deliver reserves up to n bytes for delivery and says how many may go
// before the next cut, and whether the connection is to be cut after them.
func (d *direction) deliver(n int) (int, bool) {
	if len(d.cuts) == 0 {
		return n, false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	cut := false
	if d.next < len(d.cuts) {
		if left := d.cuts[d.next] - d.pos; left <= int64(n) {
			n = int(max(left, 0))
			cut = true
			d.next++
		}
	}
	d.pos += int64(n)
	return n, cut
}

// dialTimeout bounds how long a connection waits for the target.
const dialTimeout = 10 * time.Second

// Start starts a proxy to target shaped by cfg.
func Start(target string, cfg Config) (*Proxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	addr := cfg.Listen
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("linksim: listen on %s: %w", addr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		ln:     ln,
		target: target,
		up:     newDirection(cfg.Up, cfg.Buffer),
		down:   newDirection(cfg.Down, cfg.Buffer),
		ctx:    ctx,
		cancel: cancel,
		links:  make(map[*link]struct{}),
	}
	p.wg.Add(1)
	go p.serve()
	return p, nil
}

// Addr is the address clients connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Stats returns the counters.
func (p *Proxy) Stats() Stats {
	p.mu.Lock()
	active := len(p.links)
	p.mu.Unlock()
	return Stats{
		Up:         DirStats{Read: p.up.read.Load(), Delivered: p.up.delivered.Load()},
		Down:       DirStats{Read: p.down.read.Load(), Delivered: p.down.delivered.Load()},
		Accepted:   p.accepted.Load(),
		Active:     int64(active),
		DialErrors: p.dialErrors.Load(),
		Cuts:       p.cuts.Load(),
	}
}

// Cut cuts every open connection now, as a link failure would, and
// returns how many it cut. Connections made afterwards work as before.
func (p *Proxy) Cut() int {
	n := 0
	for _, l := range p.openLinks() {
		if l.close() {
			n++
		}
	}
	p.cuts.Add(int64(n))
	return n
}

// Close stops the proxy: it closes the listener and every connection,
// drops what is in flight, and returns when all its goroutines are done.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	err := p.ln.Close()
	for _, l := range p.openLinks() {
		l.close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) openLinks() []*link {
	p.mu.Lock()
	defer p.mu.Unlock()
	ls := make([]*link, 0, len(p.links))
	for l := range p.links {
		ls = append(ls, l)
	}
	return ls
}

func (p *Proxy) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors or the like: let it pass.
			select {
			case <-time.After(10 * time.Millisecond):
			case <-p.ctx.Done():
				return
			}
			continue
		}
		p.accepted.Add(1)
		p.wg.Add(1)
		go p.handle(c)
	}
}

// link is one proxied connection: the client's side and the target's.
type link struct {
	client, target net.Conn
	cancel         context.CancelFunc
	closed         atomic.Bool
}

// close closes both sides and stops the link's goroutines; it reports
// whether this call did it.
func (l *link) close() bool {
	if !l.closed.CompareAndSwap(false, true) {
		return false
	}
	l.cancel()
	l.client.Close()
	l.target.Close()
	return true
}

func (p *Proxy) handle(client net.Conn) {
	defer p.wg.Done()
	d := net.Dialer{Timeout: dialTimeout}
	target, err := d.DialContext(p.ctx, "tcp", p.target)
	if err != nil {
		p.dialErrors.Add(1)
		client.Close()
		return
	}
	ctx, cancel := context.WithCancel(p.ctx)
	l := &link{client: client, target: target, cancel: cancel}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.links[l] = struct{}{}
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, w := range []struct {
		d        *direction
		src, dst net.Conn
	}{{p.up, client, target}, {p.down, target, client}} {
		line := newDelayLine(w.d.buffer)
		wg.Go(func() { p.read(ctx, l, w.d, w.src, line) })
		wg.Go(func() { p.write(ctx, l, w.d, w.dst, line) })
	}
	wg.Wait()
	l.close()
	p.mu.Lock()
	delete(p.links, l)
	p.mu.Unlock()
}

// read moves bytes from src into the delay line, at the direction's rate,
// stamping each chunk with when it may be delivered.
func (p *Proxy) read(ctx context.Context, l *link, d *direction, src net.Conn, line *delayLine) {
	defer line.end()
	for {
		if line.waitRoom(ctx) != nil {
			return
		}
		buf := chunkPool.Get().(*[]byte)
		n, err := src.Read(*buf)
		if n > 0 {
			d.read.Add(int64(n))
			c := chunk{buf: buf, n: n, pool: true}
			if n < chunkSize/4 {
				// Keep a small read small, so that the memory held stays
				// near the bytes held.
				b := append([]byte(nil), (*buf)[:n]...)
				chunkPool.Put(buf)
				c = chunk{buf: &b, n: n}
			}
			if d.lim.Wait(ctx, n) != nil {
				c.free()
				return
			}
			c.due = time.Now().Add(d.shape.Latency)
			line.push(c)
		} else {
			chunkPool.Put(buf)
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				// A reset, or the link was closed: nothing more is
				// delivered either way.
				l.close()
			}
			return
		}
	}
}

// write delivers the chunks of the delay line to dst when they are due,
// cutting the link at the direction's cut offsets. When the sender has
// finished and everything is delivered, it passes the end on (CloseWrite).
func (p *Proxy) write(ctx context.Context, l *link, d *direction, dst net.Conn, line *delayLine) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		c, ok := line.pop(ctx)
		if !ok {
			break
		}
		if wait := time.Until(c.due); wait > 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			select {
			case <-timer.C:
			case <-ctx.Done():
				c.free()
				return
			}
		}
		if ctx.Err() != nil {
			c.free()
			return
		}
		n, cut := d.deliver(c.n)
		written, err := dst.Write(c.bytes()[:n])
		d.delivered.Add(int64(written))
		line.release(c.n)
		c.free()
		if cut {
			p.cuts.Add(1)
			l.close()
			return
		}
		if err != nil {
			l.close()
			return
		}
	}
	if ctx.Err() != nil {
		return
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}
