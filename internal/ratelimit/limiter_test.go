package ratelimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// minElapsed is the least time a token bucket of rate bytes/s and the given
// burst, full at the start, can pass size bytes in, less 5% for rounding.
// Only lower bounds are asserted: a loaded machine makes transfers slower,
// never faster.
func minElapsed(size, burst int, rate int64) time.Duration {
	return time.Duration(0.95 * float64(size-burst) / float64(rate) * float64(time.Second))
}

// pieceLog is a writer that records the size, cumulative count and time of
// every write.
type pieceLog struct {
	mu     sync.Mutex
	pieces []piece
	total  int
}

type piece struct {
	n, cum int
	at     time.Time
}

func (l *pieceLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total += len(p)
	l.pieces = append(l.pieces, piece{n: len(p), cum: l.total, at: time.Now()})
	return len(p), nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}).Read(b)
	return b
}

func TestWriterRate(t *testing.T) {
	t.Parallel()
	const size, rate = 4 << 20, 8_000_000
	start := time.Now()
	lim := New(rate)
	var log pieceLog
	w := NewWriter(context.Background(), &log, lim)
	data := randomBytes(size, 1)
	for p := data; len(p) > 0; p = p[1<<20:] {
		n, err := w.Write(p[:1<<20])
		if err != nil || n != 1<<20 {
			t.Fatalf("write: %d, %v", n, err)
		}
	}
	elapsed := time.Since(start)
	burst := burstFor(rate)
	t.Logf("%d bytes at %d bytes/s in %v: %.2f MB/s", size, rate, elapsed, float64(size)/elapsed.Seconds()/1e6)
	if want := minElapsed(size, burst, rate); elapsed < want {
		t.Fatalf("%d bytes passed in %v, want at least %v", size, elapsed, want)
	}
	if log.total != size {
		t.Fatalf("wrote %d bytes, want %d", log.total, size)
	}
	// Each piece is charged before it is written, so no piece goes out
	// ahead of the bucket, and a 1 MiB write is split into small pieces.
	for _, p := range log.pieces {
		if p.n > minBurst {
			t.Fatalf("a write of %d bytes went out whole, want pieces of at most %d", p.n, minBurst)
		}
		if want := minElapsed(p.cum, burst, rate); p.at.Sub(start) < want {
			t.Fatalf("byte %d went out after %v, want at least %v", p.cum, p.at.Sub(start), want)
		}
	}
}

func TestReaderRate(t *testing.T) {
	t.Parallel()
	const size, rate = 4 << 20, 8_000_000
	data := randomBytes(size, 2)
	start := time.Now()
	r := NewReader(context.Background(), bytes.NewReader(data), New(rate))
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if !bytes.Equal(got, data) {
		t.Fatal("read data differs from the source")
	}
	if want := minElapsed(size, burstFor(rate), rate); elapsed < want {
		t.Fatalf("%d bytes read in %v, want at least %v", size, elapsed, want)
	}
}

// TestUnlimited: a nil limiter and one of rate 0 never wait. A limited one
// refuses at once a wait that would pass the deadline, so this does not
// depend on timing.
func TestUnlimited(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const huge = 1 << 40
	for _, l := range []*Limiter{nil, New(0), New(-1)} {
		if err := l.Wait(ctx, huge); err != nil {
			t.Fatalf("unlimited Wait: %v", err)
		}
		if l.Rate() != 0 {
			t.Fatalf("Rate() = %d, want 0", l.Rate())
		}
	}
	if err := WaitAll(ctx, huge, nil, New(0)); err != nil {
		t.Fatalf("WaitAll on unlimited limiters: %v", err)
	}
	if err := New(1<<30).Wait(ctx, huge); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("limited Wait of a TiB within a minute: %v, want DeadlineExceeded", err)
	}

	var log pieceLog
	data := randomBytes(4<<20, 3)
	start := time.Now()
	if w := NewWriter(ctx, &log, nil); w != io.Writer(&log) {
		t.Fatal("NewWriter without limiters did not return the writer itself")
	}
	w := NewWriter(ctx, &log, New(0))
	if n, err := w.Write(data); err != nil || n != len(data) {
		t.Fatalf("unlimited write: %d, %v", n, err)
	}
	t.Logf("4 MiB through an unlimited writer in %v", time.Since(start))
}

func TestSetRate(t *testing.T) {
	t.Parallel()
	const size, rate = 4 << 20, 8_000_000
	lim := New(0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	lim.SetRate(rate)
	if lim.Rate() != rate {
		t.Fatalf("Rate() = %d, want %d", lim.Rate(), rate)
	}
	start := time.Now()
	if err := lim.Wait(ctx, size); err != nil {
		t.Fatal(err)
	}
	if elapsed, want := time.Since(start), minElapsed(size, burstFor(rate), rate); elapsed < want {
		t.Fatalf("%d bytes after SetRate(%d) in %v, want at least %v", size, rate, elapsed, want)
	}
	lim.SetRate(0)
	if err := lim.Wait(ctx, 1<<40); err != nil {
		t.Fatalf("Wait after SetRate(0): %v", err)
	}
}

// TestSetRateWhileWaiting changes the rate, and so the bucket size, under
// concurrent waits; none may fail.
func TestSetRateWhileWaiting(t *testing.T) {
	t.Parallel()
	lim := New(50_000_000)
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if err := lim.Wait(ctx, 1<<20); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	rates := []int64{100_000_000, 0, 20_000_000, 400_000_000, 0}
	for i := 0; ; i++ {
		select {
		case <-done:
			close(errs)
			for err := range errs {
				t.Fatalf("Wait while the rate changed: %v", err)
			}
			return
		case <-time.After(5 * time.Millisecond):
			lim.SetRate(rates[i%len(rates)])
		}
	}
}

// TestSharedCap: two sessions, each with its own job limiter, share the
// agent's cap: together they stay under it, and each gets about half.
func TestSharedCap(t *testing.T) {
	t.Parallel()
	const size, agentRate, jobRate = 2 << 20, 8_000_000, 16_000_000
	global := New(agentRate)
	start := time.Now()
	var wg sync.WaitGroup
	finished := make([]time.Duration, 2)
	for i := range finished {
		job := New(jobRate)
		wg.Go(func() {
			w := NewWriter(context.Background(), io.Discard, job, global)
			for range size / (256 << 10) {
				if _, err := w.Write(make([]byte, 256<<10)); err != nil {
					t.Error(err)
					return
				}
			}
			finished[i] = time.Since(start)
		})
	}
	wg.Wait()
	total := max(finished[0], finished[1])
	fair := minElapsed(2*size, burstFor(agentRate), agentRate)
	t.Logf("two sessions of %d bytes under a cap of %d bytes/s: finished after %v and %v (%.2f MB/s together)",
		size, agentRate, finished[0], finished[1], 2*size/total.Seconds()/1e6)
	if total < fair {
		t.Fatalf("both sessions done in %v, want at least %v under the shared cap", total, fair)
	}
	// Had one session taken the link, it would be done in half the time
	// while the other had a small share; 60% of the fair time means the
	// other had passed at least a fifth of the bytes by then.
	for i, d := range finished {
		if d < fair*6/10 {
			t.Fatalf("session %d finished in %v, want at least %v: it took more than its share of the cap", i, d, fair*6/10)
		}
	}
}

// TestJobLimitUnderLooserCap: a session's own limit holds when the agent's
// cap is looser.
func TestJobLimitUnderLooserCap(t *testing.T) {
	t.Parallel()
	const size, agentRate, jobRate = 2 << 20, 16_000_000, 4_000_000
	start := time.Now()
	if err := WaitAll(context.Background(), size, New(jobRate), New(agentRate)); err != nil {
		t.Fatal(err)
	}
	if elapsed, want := time.Since(start), minElapsed(size, burstFor(jobRate), jobRate); elapsed < want {
		t.Fatalf("%d bytes under a job limit of %d bytes/s in %v, want at least %v", size, jobRate, elapsed, want)
	}
}

// TestCancel: a wait that would take days ends with ctx.Err() when ctx is
// canceled. Were it not prompt, the test would hang until go test's
// timeout.
func TestCancel(t *testing.T) {
	t.Parallel()
	lim := New(1000)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- lim.Wait(ctx, 1<<30) }()
	time.Sleep(50 * time.Millisecond)
	canceled := time.Now()
	cancel()
	err := <-errc
	t.Logf("Wait returned %v after cancel", time.Since(canceled))
	if !errors.Is(err, context.Canceled) || err != ctx.Err() {
		t.Fatalf("Wait after cancel: %v, want ctx.Err()", err)
	}

	// A writer returns what it wrote before the cancel, and the error.
	ctx, cancel = context.WithCancel(context.Background())
	var log pieceLog
	w := NewWriter(ctx, &log, New(1000))
	go func() {
		time.Sleep(50 * time.Millisecond)
		cancel()
	}()
	n, err := w.Write(make([]byte, 1<<20))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write after cancel: %v, want context.Canceled", err)
	}
	if n != log.total || n >= 1<<20 {
		t.Fatalf("Write returned %d with %d bytes written of %d", n, log.total, 1<<20)
	}
}

func TestDeadline(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	lim := New(1000)
	if err := lim.Wait(ctx, 1<<30); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait of 12 days within an hour: %v, want DeadlineExceeded", err)
	}
}

// TestBurst pins the bucket size the timing bounds above are computed
// with: 50 ms of the rate, at least 64 KiB.
func TestBurst(t *testing.T) {
	for _, tc := range []struct {
		rate int64
		want int
	}{{0, 0}, {1000, 64 << 10}, {1_000_000, 64 << 10}, {8_000_000, 400_000}, {125_000_000, 6_250_000}} {
		if got := New(tc.rate).Burst(); got != tc.want {
			t.Errorf("New(%d).Burst() = %d, want %d", tc.rate, got, tc.want)
		}
	}
	var nilLim *Limiter
	if nilLim.Burst() != 0 {
		t.Error("nil Limiter has a bucket")
	}
}
