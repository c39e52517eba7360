package linksim

import (
	"context"
	"sync"
	"time"
)

// chunkSize is the most bytes read from a sender at once.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// chunk is bytes in flight and when they may be delivered.
type chunk struct {
	buf  *[]byte // from chunkPool when len(*buf) == chunkSize
	n    int
	due  time.Time
	pool bool
}

func (c chunk) bytes() []byte { return (*c.buf)[:c.n] }

func (c chunk) free() {
	if c.pool {
		chunkPool.Put(c.buf)
	}
}

// delayLine is the FIFO of chunks between a reader and a writer. It holds
// about max bytes at most: the reader waits for room before each read.
type delayLine struct {
	max   int
	space chan struct{} // signalled when bytes leave
	ready chan struct{} // signalled when a chunk or the end arrives

	mu    sync.Mutex
	q     []chunk
	bytes int
	ended bool
}

func newDelayLine(max int) *delayLine {
	return &delayLine{max: max, space: make(chan struct{}, 1), ready: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// waitRoom blocks until the line holds less than its max.
func (d *delayLine) waitRoom(ctx context.Context) error {
	for {
		d.mu.Lock()
		room := d.bytes < d.max
		d.mu.Unlock()
		if room {
			return nil
		}
		select {
		case <-d.space:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (d *delayLine) push(c chunk) {
	d.mu.Lock()
	d.q = append(d.q, c)
	d.bytes += c.n
	d.mu.Unlock()
	signal(d.ready)
}

// end says the sender has finished; pop returns false once the line is
// empty.
func (d *delayLine) end() {
	d.mu.Lock()
	d.ended = true
	d.mu.Unlock()
	signal(d.ready)
}

// pop returns the oldest chunk, waiting for one; false when the line has
// ended and is empty, or ctx is done.
func (d *delayLine) pop(ctx context.Context) (chunk, bool) {
	for {
		d.mu.Lock()
		if len(d.q) > 0 {
			c := d.q[0]
			d.q[0] = chunk{}
			d.q = d.q[1:]
			d.mu.Unlock()
			return c, true
		}
		ended := d.ended
		d.mu.Unlock()
		if ended {
			return chunk{}, false
		}
		select {
		case <-d.ready:
		case <-ctx.Done():
			return chunk{}, false
		}
	}
}

// release gives back the room of n bytes that have left the line.
func (d *delayLine) release(n int) {
	d.mu.Lock()
	d.bytes -= n
	d.mu.Unlock()
	signal(d.space)
}
