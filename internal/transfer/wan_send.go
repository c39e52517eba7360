package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

// WANSource is the point a WAN-mode sender sends (*backup.WANCopy).
type WANSource interface {
	// Len is the number of blocks of the new file; Block describes one.
	Len() int
	Block(i int) (format.BlockKey, format.Digest, uint32)
	// ReadBlock reads block i for the wire into rec (RecordBufferSize
	// bytes), which data may share. It is called concurrently.
	RecordBufferSize() int
	ReadBlock(i int, rec []byte) (data []byte, compressed bool, err error)
}

// WANSession is the source side of one WAN-mode session, across the
// attempts a cut link needs (each resumes after what the target holds).
type WANSession struct {
	src             WANSource
	hb, kb, catalog []byte
	trailer         [32]byte
	plain           []int64 // plaintext bytes before entry i (prefix sums)
	hit             []bool  // the target took entry i from its cache

	// Batch is the digests per batch, Window the batches in flight ahead
	// of the blocks sent, Workers the blocks read at once.
	Batch, Window, Workers int
	// Progress, when set, is called with the plaintext bytes of the
	// entries handled so far (taken from the cache or sent).
	Progress func(plain int64)

	stats     commonv1.SessionStats
	Committed *targetv1.TransferCommitted
	// Resumed lists, for each attempt the target accepted as a resume, the
	// entries it already held.
	Resumed []int
}

// NewWANSession prepares to send src as the file with header hb, key
// table kb and catalog plaintext catalog.
func NewWANSession(src WANSource, hb, kb, catalog []byte) *WANSession {
	n := src.Len()
	ws := &WANSession{src: src, hb: hb, kb: kb, catalog: catalog, plain: make([]int64, n+1), hit: make([]bool, n),
		Batch: WANBatch, Window: WANWindow, Workers: runtime.GOMAXPROCS(0)}
	tr := newWANTrailer(hb, kb)
	for i := range n {
		k, d, l := src.Block(i)
		tr.block(k, d)
		ws.plain[i+1] = ws.plain[i] + int64(l)
	}
	ws.trailer = tr.sum(catalog)
	ws.stats.Blocks, ws.stats.PlainBytes = int64(n), ws.plain[n]
	return ws
}

// Stats returns the WAN counters of the session so far: wire bytes are
// those of every attempt; cache hits count each block once, as its last
// answer said.
func (ws *WANSession) Stats() *commonv1.SessionStats {
	st := proto.Clone(&ws.stats).(*commonv1.SessionStats)
	for i, h := range ws.hit {
		if h {
			st.CacheHitBlocks++
			st.CacheHitBytes += ws.plain[i+1] - ws.plain[i]
		}
	}
	return st
}

// Send runs one attempt on stream, presenting the grant; resume asks the
// target to continue a cut-off transfer of the session. It returns once
// the target has committed the file (ws.Committed) or the attempt failed.
func (ws *WANSession) Send(ctx context.Context, stream targetv1.TargetService_TransferClient, grant, signature []byte, resume bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &wanAttempt{ws: ws, stream: stream, ctx: ctx, wake: make(chan struct{}, 1), wantWake: make(chan struct{}, 1), recvDone: make(chan struct{})}
	open := &targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Open{Open: &targetv1.TransferOpen{
		Grant: grant, GrantSignature: signature, Header: ws.hb, KeyTable: ws.kb, Resume: resume, Wan: true,
	}}}
	if err := a.send(open); err != nil {
		return a.sendErr(err, false)
	}
	resp, err := stream.Recv()
	if err != nil {
		return fmt.Errorf("target refused the transfer: %w", err)
	}
	ws.stats.WireBytesReceived += int64(proto.Size(resp))
	acc := resp.GetAccepted()
	if acc == nil {
		return errors.New("target answered the open with something other than an accept")
	}
	if acc.ResumeFrom > uint64(ws.src.Len()) {
		return fmt.Errorf("target resumes after entry %d of %d", acc.ResumeFrom, ws.src.Len())
	}
	a.start = int(acc.ResumeFrom)
	if resume {
		ws.Resumed = append(ws.Resumed, a.start)
	}
	a.batches = (ws.src.Len() - a.start + ws.Batch - 1) / ws.Batch
	err = a.run()
	cancel()
	a.wg.Wait()
	<-a.recvDone
	ws.stats.WireBytesReceived += a.recvBytes
	ws.stats.BlocksRefetched += a.refetched
	return err
}

// wanAttempt is one attempt: the sending goroutine (run), a receiving
// goroutine, and a dispatcher with workers that read the blocks the
// target asked for, in order, ahead of the sender.
type wanAttempt struct {
	ws      *WANSession
	stream  targetv1.TargetService_TransferClient
	ctx     context.Context
	start   int
	batches int

	mu        sync.Mutex
	want      []int // entries to send in order; -1-b marks the end of batch b
	refetch   []int
	answered  int
	committed *targetv1.TransferCommitted
	recvErr   error
	wake      chan struct{} // the sender: refetch, commit or error
	wantWake  chan struct{} // the dispatcher: more wanted
	recvDone  chan struct{}
	wg        sync.WaitGroup // workers and dispatcher
	// Owned by the receiving goroutine until recvDone.
	recvBytes, refetched int64

	blockMsg targetv1.WanBlock
	msg      targetv1.TransferRequest
}

// future is a block being read, or a batch end marker.
type future struct {
	idx        int
	marker     bool
	batch      int
	buf        []byte
	data       []byte
	compressed bool
	err        error
	done       chan struct{}
}

func (a *wanAttempt) batchRange(b int) (lo, hi int) {
	lo = a.start + b*a.ws.Batch
	return lo, min(lo+a.ws.Batch, a.ws.src.Len())
}

func notify(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (a *wanAttempt) send(m *targetv1.TransferRequest) error {
	a.ws.stats.WireBytesSent += int64(proto.Size(m))
	return a.stream.Send(m)
}

// sendErr turns a failed Send into the target's reason: when the target
// ends the stream, Send returns io.EOF and the receiver has the status.
func (a *wanAttempt) sendErr(err error, receiving bool) error {
	if errors.Is(err, io.EOF) {
		if receiving {
			<-a.recvDone
			if a.recvErr != nil {
				return a.recvErr
			}
		} else {
			for {
				if _, rerr := a.stream.Recv(); rerr != nil {
					return fmt.Errorf("target ended the transfer: %w", rerr)
				}
			}
		}
	}
	return fmt.Errorf("send to target: %w", err)
}

func (a *wanAttempt) run() error {
	ws := a.ws
	go a.receive()
	pool := max(4, min(2*ws.Workers+2, (64<<20)/ws.src.RecordBufferSize()))
	bufs := make(chan []byte, pool)
	for range pool {
		bufs <- make([]byte, ws.src.RecordBufferSize())
	}
	ready := make(chan *future, pool)
	work := make(chan *future, pool)
	// Every goroutine ends with the attempt's context (Send waits for them).
	for range max(ws.Workers, 1) {
		a.wg.Go(func() {
			for {
				select {
				case f := <-work:
					f.data, f.compressed, f.err = ws.src.ReadBlock(f.idx, f.buf)
					close(f.done)
				case <-a.ctx.Done():
					return
				}
			}
		})
	}
	a.wg.Go(func() { a.dispatch(bufs, ready, work) })

	refetchBuf := make([]byte, ws.src.RecordBufferSize())
	nextBatch, doneBatch, finished := 0, 0, false
	for {
		a.mu.Lock()
		committed, recvErr := a.committed, a.recvErr
		var refetch = -1
		if len(a.refetch) > 0 {
			refetch, a.refetch = a.refetch[0], a.refetch[1:]
		}
		a.mu.Unlock()
		switch {
		case committed != nil:
			ws.Committed = committed
			return nil
		case recvErr != nil:
			return recvErr
		case refetch >= 0:
			data, c, err := ws.src.ReadBlock(refetch, refetchBuf)
			if err != nil {
				return err
			}
			if err := a.sendBlock(refetch, data, c); err != nil {
				return err
			}
			continue
		case nextBatch < a.batches && nextBatch < doneBatch+ws.Window:
			if err := a.sendDigests(nextBatch); err != nil {
				return err
			}
			nextBatch++
			continue
		case !finished && doneBatch == a.batches:
			finished = true
			m := &targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Finish{Finish: &targetv1.TransferFinish{
				CatalogPlain: ws.catalog, TrailerHash: ws.trailer[:]}}}
			if err := a.send(m); err != nil {
				return a.sendErr(err, true)
			}
			continue
		}
		select {
		case f := <-ready:
			if f.marker {
				doneBatch = f.batch + 1
				_, hi := a.batchRange(f.batch)
				if ws.Progress != nil {
					ws.Progress(ws.plain[hi])
				}
				continue
			}
			select {
			case <-f.done:
			case <-a.ctx.Done():
				return a.ctx.Err()
			}
			if f.err != nil {
				return f.err
			}
			err := a.sendBlock(f.idx, f.data, f.compressed)
			f.data = nil
			bufs <- f.buf
			if err != nil {
				return err
			}
		case <-a.wake:
		case <-a.ctx.Done():
			return a.ctx.Err()
		}
	}
}

func (a *wanAttempt) sendDigests(b int) error {
	lo, hi := a.batchRange(b)
	batch := &targetv1.WanDigestBatch{First: uint64(lo), Blocks: make([]*targetv1.WanDigest, 0, hi-lo)}
	for i := lo; i < hi; i++ {
		k, d, l := a.ws.src.Block(i)
		batch.Blocks = append(batch.Blocks, &targetv1.WanDigest{Object: k.Object, Block: k.Block, Digest: d[:], RawLength: l})
	}
	m := &targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Digests{Digests: batch}}
	a.ws.stats.DigestBytesSent += int64(proto.Size(m))
	if err := a.send(m); err != nil {
		return a.sendErr(err, true)
	}
	return nil
}

func (a *wanAttempt) sendBlock(idx int, data []byte, compressed bool) error {
	ws := a.ws
	a.blockMsg.Index, a.blockMsg.Data, a.blockMsg.Compressed = uint64(idx), data, compressed
	a.msg.Msg = &targetv1.TransferRequest_Block{Block: &a.blockMsg}
	err := a.send(&a.msg)
	a.blockMsg.Data = nil
	if err != nil {
		return a.sendErr(err, true)
	}
	ws.stats.BlocksSent++
	ws.stats.BlockBytesSent += int64(len(data))
	ws.stats.BlockPlainBytesSent += ws.plain[idx+1] - ws.plain[idx]
	return nil
}

// dispatch hands the wanted entries to the workers in order and queues
// their futures, and the batch markers, for the sender.
func (a *wanAttempt) dispatch(bufs chan []byte, ready, work chan<- *future) {
	for {
		a.mu.Lock()
		var next []int
		next, a.want = a.want, nil
		a.mu.Unlock()
		if len(next) == 0 {
			select {
			case <-a.wantWake:
				continue
			case <-a.ctx.Done():
				return
			}
		}
		for _, idx := range next {
			f := &future{idx: idx, done: make(chan struct{})}
			if idx < 0 {
				f.marker, f.batch = true, -1-idx
				close(f.done)
			} else {
				select {
				case f.buf = <-bufs:
				case <-a.ctx.Done():
					return
				}
			}
			select {
			case ready <- f:
			case <-a.ctx.Done():
				return
			}
			if !f.marker {
				select {
				case work <- f:
				case <-a.ctx.Done():
					return
				}
			}
		}
	}
}

// receive reads the target's answers, refetch requests, acks and commit.
func (a *wanAttempt) receive() {
	defer close(a.recvDone)
	fail := func(err error) {
		a.mu.Lock()
		a.recvErr = err
		a.mu.Unlock()
		notify(a.wake)
	}
	for {
		resp, err := a.stream.Recv()
		if err != nil {
			fail(fmt.Errorf("target ended the transfer: %w", err))
			return
		}
		a.recvBytes += int64(proto.Size(resp))
		switch m := resp.Msg.(type) {
		case *targetv1.TransferResponse_Answer:
			a.mu.Lock()
			b := a.answered
			lo, hi := a.batchRange(b)
			if b >= a.batches || m.Answer.First != uint64(lo) || len(m.Answer.Send) != hi-lo {
				a.mu.Unlock()
				fail(fmt.Errorf("target answered entries from %d, %d of them, out of turn", m.Answer.First, len(m.Answer.Send)))
				return
			}
			for i, send := range m.Answer.Send {
				a.ws.hit[lo+i] = !send
				if send {
					a.want = append(a.want, lo+i)
				}
			}
			a.want = append(a.want, -1-b)
			a.answered++
			a.mu.Unlock()
			notify(a.wantWake)
		case *targetv1.TransferResponse_Refetch:
			idx := m.Refetch.Index
			a.mu.Lock()
			_, hi := a.batchRange(a.answered - 1)
			if a.answered == 0 || idx < uint64(a.start) || idx >= uint64(hi) || !a.ws.hit[idx] {
				a.mu.Unlock()
				fail(fmt.Errorf("target asked again for entry %d, which it had not said it held", idx))
				return
			}
			a.ws.hit[idx] = false
			a.refetch = append(a.refetch, int(idx))
			a.refetched++
			a.mu.Unlock()
			notify(a.wake)
		case *targetv1.TransferResponse_Ack:
		case *targetv1.TransferResponse_Committed:
			a.mu.Lock()
			a.committed = m.Committed
			a.mu.Unlock()
			notify(a.wake)
			return
		default:
			fail(fmt.Errorf("unexpected message %T from the target", resp.Msg))
			return
		}
	}
}
