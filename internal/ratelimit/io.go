package ratelimit

import (
	"context"
	"io"
)

// NewWriter returns a writer that charges every byte written to w to each
// of lims before writing it, in pieces of at most 64 KiB, so that a large
// write goes out paced rather than in one burst after a long wait. A wait
// ends early with ctx; the write then returns the bytes written so far
// and the wait's error. Without limiters it returns w.
func NewWriter(ctx context.Context, w io.Writer, lims ...*Limiter) io.Writer {
	lims = nonNil(lims)
	if len(lims) == 0 {
		return w
	}
	return &writer{ctx: ctx, w: w, lims: lims}
}

type writer struct {
	ctx  context.Context
	w    io.Writer
	lims []*Limiter
}

func (w *writer) Write(p []byte) (int, error) {
	return writePaced(w.ctx, w.w, p, w.lims)
}

// writePaced writes p to w a piece at a time, charging each piece first.
func writePaced(ctx context.Context, w io.Writer, p []byte, lims []*Limiter) (int, error) {
	written := 0
	for len(p) > 0 {
		c := min(len(p), minBurst)
		if err := WaitAll(ctx, c, lims...); err != nil {
			return written, err
		}
		n, err := w.Write(p[:c])
		written += n
		if err != nil {
			return written, err
		}
		if n < c {
			return written, io.ErrShortWrite
		}
		p = p[c:]
	}
	return written, nil
}

// NewReader returns a reader that charges the bytes each Read returns to
// each of lims before returning them. A Read asks r for at most 64 KiB. If
// a wait ends early with ctx, the Read returns its bytes and the wait's
// error. Without limiters it returns r.
func NewReader(ctx context.Context, r io.Reader, lims ...*Limiter) io.Reader {
	lims = nonNil(lims)
	if len(lims) == 0 {
		return r
	}
	return &reader{ctx: ctx, r: r, lims: lims}
}

type reader struct {
	ctx  context.Context
	r    io.Reader
	lims []*Limiter
}

func (r *reader) Read(p []byte) (int, error) {
	return readPaced(r.ctx, r.r, p, r.lims)
}

// readPaced reads from r and charges what it got before returning it.
func readPaced(ctx context.Context, r io.Reader, p []byte, lims []*Limiter) (int, error) {
	if len(p) > minBurst {
		p = p[:minBurst]
	}
	n, err := r.Read(p)
	if n > 0 {
		if werr := WaitAll(ctx, n, lims...); werr != nil {
			return n, werr
		}
	}
	return n, err
}
