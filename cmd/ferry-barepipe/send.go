package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// sealOverhead is what AES-GCM adds to a chunk: its 16-byte tag.
const sealOverhead = 16

// maxMsgSize is the largest message of a sealed chunk: the proto codec adds
// a field tag and a length of up to 6 bytes.
func maxMsgSize(chunk int) int { return chunk + sealOverhead + 16 }

// sendConfig configures the sending side.
type sendConfig struct {
	// Addr is the receiver's host:port.
	Addr string
	// In is the file to send.
	In string
	// TLS is the client configuration (mutual TLS, target servers only).
	TLS *tls.Config
	// Codec is codecRaw or codecProto.
	Codec string
	// Chunk is the plaintext size of a chunk; Workers seal chunks in
	// parallel.
	Chunk, Workers int
	// WriteBuf is the size of gRPC's write buffer, which batches HTTP/2
	// frames into one TLS write; 0 means none, negative keeps gRPC's
	// default (32 KiB).
	WriteBuf int
	// Key is the AES-256 key; nil means a random one.
	Key []byte
	// SkipHash turns the end-to-end SHA-256 off on both sides; only the
	// byte count is checked then.
	SkipHash bool
}

// sendResult is what one copy sent and the receiver confirmed.
type sendResult struct {
	plain   int64
	sum     summary // of the sealed stream
	elapsed time.Duration
}

func (c *sendConfig) validate() error {
	if c.Chunk < 1 || c.Chunk > maxChunk {
		return fmt.Errorf("chunk size %d out of range 1..%d", c.Chunk, maxChunk)
	}
	if c.Workers < 1 {
		return fmt.Errorf("workers %d: want at least 1", c.Workers)
	}
	if c.Key != nil && len(c.Key) != 32 {
		return fmt.Errorf("key of %d bytes: want 32", len(c.Key))
	}
	return nil
}

// send copies cfg.In to the receiver at cfg.Addr: read in chunks, sealed
// with AES-256-GCM (nonce = chunk counter) on cfg.Workers goroutines, sent in
// order over one client stream. It checks the receiver's summary against
// its own.
func send(ctx context.Context, cfg sendConfig) (sendResult, error) {
	if err := cfg.validate(); err != nil {
		return sendResult{}, err
	}
	desc, method, err := streamDesc(cfg.Codec)
	if err != nil {
		return sendResult{}, err
	}
	key := cfg.Key
	if key == nil {
		key = make([]byte, 32)
		rand.Read(key)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return sendResult{}, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return sendResult{}, fmt.Errorf("gcm: %w", err)
	}
	f, err := os.Open(cfg.In)
	if err != nil {
		return sendResult{}, fmt.Errorf("open input: %w", err)
	}
	defer f.Close()

	start := time.Now()
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(cfg.TLS)),
		// A retry would have to keep every sent chunk until the stream is
		// committed; a copy that fails is rerun instead.
		grpc.WithDisableRetry(),
	}
	if cfg.WriteBuf >= 0 {
		opts = append(opts, grpc.WithWriteBufferSize(cfg.WriteBuf))
	}
	conn, err := grpc.NewClient(cfg.Addr, opts...)
	if err != nil {
		return sendResult{}, fmt.Errorf("dial %s: %w", cfg.Addr, err)
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.SkipHash {
		ctx = metadata.AppendToOutgoingContext(ctx, hashHeader, "off")
	}
	callOpts := []grpc.CallOption{grpc.MaxCallSendMsgSize(maxMsgSize(cfg.Chunk))}
	if cfg.Codec == codecRaw {
		callOpts = append(callOpts, grpc.ForceCodecV2(rawCodec{}))
	}
	stream, err := conn.NewStream(ctx, desc, method, callOpts...)
	if err != nil {
		return sendResult{}, fmt.Errorf("open stream to %s: %w", cfg.Addr, err)
	}

	// The reader stops on a send error, and the stream lives on to deliver
	// the receiver's status.
	readCtx, stopReading := context.WithCancel(ctx)
	defer stopReading()
	pool := newBufPool(cfg.Chunk+sealOverhead, 2*cfg.Workers+4)
	sealed, readErr := sealChunks(readCtx, f, aead, pool, cfg.Chunk, cfg.Workers)
	var h hash.Hash
	if !cfg.SkipHash {
		h = sha256.New()
	}
	var res sendResult
	var sendErr error
	for c := range sealed {
		if sendErr != nil {
			pool.Put(c.buf) // drain so that the workers finish
			continue
		}
		b := *c.buf
		if h != nil {
			h.Write(b)
		}
		res.plain += int64(len(b) - sealOverhead)
		res.sum.bytes += uint64(len(b))
		if sendErr = sendChunk(stream, cfg.Codec, c.buf, pool); sendErr != nil {
			stopReading()
		}
	}
	if err := readErr(); err != nil {
		return sendResult{}, err
	}
	// On a broken stream SendMsg says only io.EOF; the status comes with
	// the reply.
	if sendErr != nil && !errors.Is(sendErr, io.EOF) {
		return sendResult{}, fmt.Errorf("send to %s: %w", cfg.Addr, sendErr)
	}
	if err := stream.CloseSend(); err != nil {
		return sendResult{}, fmt.Errorf("close stream to %s: %w", cfg.Addr, err)
	}
	got, err := recvSummary(stream, cfg.Codec)
	if err != nil {
		return sendResult{}, fmt.Errorf("copy to %s: %w", cfg.Addr, err)
	}
	if sendErr != nil {
		return sendResult{}, fmt.Errorf("send to %s: %w", cfg.Addr, sendErr)
	}
	res.elapsed = time.Since(start)
	if h != nil {
		h.Sum(res.sum.sha256[:0])
	}
	if got != res.sum {
		return sendResult{}, fmt.Errorf("receiver got %v, sent %v", got, res.sum)
	}
	return res, nil
}

func sendChunk(stream grpc.ClientStream, codec string, buf *[]byte, pool *bufPool) error {
	if codec == codecProto {
		// The proto codec copies the bytes out before SendMsg returns.
		err := stream.SendMsg(&wrapperspb.BytesValue{Value: *buf})
		pool.Put(buf)
		return err
	}
	// gRPC holds its own reference until the transport has written the
	// buffer, and the last reference returns it to the pool.
	c := &chunk{data: mem.BufferSlice{mem.NewBuffer(buf, pool)}}
	err := stream.SendMsg(c)
	c.data.Free()
	return err
}

func recvSummary(stream grpc.ClientStream, codec string) (summary, error) {
	var s summary
	if codec == codecProto {
		m := new(wrapperspb.BytesValue)
		if err := stream.RecvMsg(m); err != nil {
			return s, err
		}
		return s, s.unmarshal(m.GetValue())
	}
	err := stream.RecvMsg(&s)
	return s, err
}

// sealedChunk is a chunk sealed in place: *buf is ciphertext and tag.
type sealedChunk struct {
	buf *[]byte
}

// sealChunks reads r in chunks of size bytes, seals them on workers
// goroutines and delivers them in order. The channel closes at the end of
// r, on a read error (reported by the returned function once the channel is
// closed) or when ctx is done. Memory is bounded: the reader waits while
// 2*workers chunks are waiting to be sealed or taken.
func sealChunks(ctx context.Context, r io.Reader, aead cipher.AEAD, pool *bufPool, size, workers int) (<-chan sealedChunk, func() error) {
	type job struct {
		seq  uint64
		buf  *[]byte
		done chan struct{}
	}
	work := make(chan *job, workers)
	order := make(chan *job, 2*workers)
	out := make(chan sealedChunk)
	var readErr error

	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			var nonce [12]byte
			for j := range work {
				binary.BigEndian.PutUint64(nonce[4:], j.seq)
				b := *j.buf
				*j.buf = aead.Seal(b[:0], nonce[:], b, nil)
				close(j.done)
			}
		})
	}
	go func() { // reader
		defer close(order)
		defer close(work)
		for seq := uint64(0); ; seq++ {
			buf := pool.Get(size)
			n, err := io.ReadFull(r, *buf)
			if n > 0 {
				*buf = (*buf)[:n]
				j := &job{seq: seq, buf: buf, done: make(chan struct{})}
				select {
				case work <- j:
				case <-ctx.Done():
					return
				}
				select {
				case order <- j:
				case <-ctx.Done():
					return
				}
			} else {
				pool.Put(buf)
			}
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return
			}
			if err != nil {
				readErr = fmt.Errorf("read chunk %d: %w", seq, err)
				return
			}
		}
	}()
	go func() { // in order
		defer close(out)
		for j := range order {
			<-j.done
			out <- sealedChunk{buf: j.buf}
		}
		wg.Wait()
	}()
	return out, func() error { return readErr }
}

// bufPool recycles chunk buffers; it is the mem.BufferPool that gRPC
// returns a sent chunk's buffer to.
type bufPool struct {
	size int
	free chan *[]byte
}

var _ mem.BufferPool = (*bufPool)(nil)

func newBufPool(size, keep int) *bufPool {
	return &bufPool{size: size, free: make(chan *[]byte, keep)}
}

// Get returns a buffer of length n (at most the pool's size) and capacity
// the pool's size.
func (p *bufPool) Get(n int) *[]byte {
	select {
	case b := <-p.free:
		*b = (*b)[:n]
		return b
	default:
		b := make([]byte, n, p.size)
		return &b
	}
}

func (p *bufPool) Put(b *[]byte) {
	select {
	case p.free <- b:
	default:
	}
}
