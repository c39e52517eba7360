package ratelimit

import (
	"context"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
)

// minBurst is the smallest bucket, and the most bytes a wrapper moves per
// charge, so that every charge fits in any bucket at once.
const minBurst = 64 << 10

// A Limiter is a token bucket on bytes. The bucket holds a twentieth of a
// second of the rate, at least 64 KiB, and starts full. A nil *Limiter, or
// one made with rate 0, is unlimited: it never waits. Its methods are safe
// for concurrent use.
type Limiter struct {
	lim *rate.Limiter
}

// New returns a limiter of bytesPerSec; 0 or less means unlimited.
func New(bytesPerSec int64) *Limiter {
	l := &Limiter{lim: rate.NewLimiter(rate.Inf, minBurst)}
	l.SetRate(bytesPerSec)
	return l
}

// burstFor is the bucket size for a rate: 50 ms of it, at least minBurst.
func burstFor(bytesPerSec int64) int {
	return int(min(max(minBurst, bytesPerSec/20), math.MaxInt32))
}

// SetRate changes the rate; 0 or less means unlimited. Waits already
// sleeping keep their reservations, which are at most about 50 ms of the
// old rate.
func (l *Limiter) SetRate(bytesPerSec int64) {
	if l == nil {
		panic("ratelimit: SetRate on a nil Limiter")
	}
	if bytesPerSec <= 0 {
		l.lim.SetLimit(rate.Inf)
		return
	}
	l.lim.SetBurst(burstFor(bytesPerSec))
	l.lim.SetLimit(rate.Limit(bytesPerSec))
}

// Rate returns the rate in bytes per second, 0 for unlimited.
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	r := l.lim.Limit()
	if r == rate.Inf {
		return 0
	}
	return int64(r)
}

// Burst returns the size of the bucket in bytes, 0 for unlimited: what
// passes at once after a pause.
func (l *Limiter) Burst() int {
	if l.Rate() == 0 {
		return 0
	}
	return l.lim.Burst()
}

// step is the most bytes charged per reservation: the bucket, or 50 ms of
// the rate when that is less, so that a SetRate takes effect soon even for
// a slow rate.
func (l *Limiter) step() (int, rate.Limit) {
	r := l.lim.Limit()
	if r == rate.Inf {
		return 0, r
	}
	return max(1, min(l.lim.Burst(), int(r/20))), r
}

// Wait blocks until n bytes may pass. It returns ctx.Err() if ctx is done
// first, and an error matching context.DeadlineExceeded at once if the
// wait would end after ctx's deadline at the current rate.
func (l *Limiter) Wait(ctx context.Context, n int) error {
	if l == nil || n <= 0 {
		return nil
	}
	if deadline, ok := ctx.Deadline(); ok {
		now := time.Now()
		if r := l.lim.Limit(); r != rate.Inf {
			need := float64(n) - l.lim.TokensAt(now)
			if need > 0 && now.Add(time.Duration(need/float64(r)*float64(time.Second))).After(deadline) {
				return fmt.Errorf("ratelimit: waiting for %d bytes at %.0f bytes/s would pass the context deadline: %w",
					n, float64(r), context.DeadlineExceeded)
			}
		}
	}
	for n > 0 {
		step, r := l.step()
		if r == rate.Inf {
			return nil
		}
		c := min(n, step)
		if err := l.lim.WaitN(ctx, c); err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return cerr
			}
			if s, _ := l.step(); c > s {
				continue // SetRate shrank the bucket under us
			}
			return fmt.Errorf("ratelimit: waiting for %d bytes at %.0f bytes/s would pass the context deadline: %w",
				c, float64(r), context.DeadlineExceeded)
		}
		n -= c
	}
	return nil
}

// WaitAll charges n bytes to every limiter (nil ones are skipped), a chunk
// at a time so that the waits on the limiters overlap instead of adding
// up: a session passes both its job limiter and the agent's global one.
func WaitAll(ctx context.Context, n int, lims ...*Limiter) error {
	if len(lims) > 1 {
		lims = limited(lims)
	}
	switch len(lims) {
	case 0:
		return nil
	case 1:
		return lims[0].Wait(ctx, n)
	}
	for n > 0 {
		c := min(n, minBurst)
		for _, l := range lims {
			if err := l.Wait(ctx, c); err != nil {
				return err
			}
		}
		n -= c
	}
	return nil
}

// nonNil returns lims without its nil entries.
func nonNil(lims []*Limiter) []*Limiter {
	var out []*Limiter
	for _, l := range lims {
		if l != nil {
			out = append(out, l)
		}
	}
	return out
}

// limited returns those of lims that limit now. Should one become limited
// during a wait, it is charged from the next wait on.
func limited(lims []*Limiter) []*Limiter {
	n := 0
	for _, l := range lims {
		if l.Rate() > 0 {
			n++
		}
	}
	if n == len(lims) {
		return lims
	}
	out := make([]*Limiter, 0, n)
	for _, l := range lims {
		if l.Rate() > 0 {
			out = append(out, l)
		}
	}
	return out
}
