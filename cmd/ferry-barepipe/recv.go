package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"hash"
	"io"
	"net"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// maxChunk bounds -chunk; the receiver accepts messages up to a sealed
// chunk of this size.
const maxChunk = 64 << 20

// recvConfig configures the receiving side.
type recvConfig struct {
	// Out is the file the received stream is written to.
	Out string
	// TLS is the server configuration (mutual TLS, source clients only).
	TLS *tls.Config
	// Window and ConnWindow are the HTTP/2 flow-control windows the
	// receiver grants the sender, per stream and per connection; they
	// decide how much the sender may have in flight. Zero keeps gRPC's
	// dynamic (BDP-estimated) windows.
	Window, ConnWindow int32
	// ReadBuf is the size of gRPC's read buffer, 0 for none; negative
	// keeps gRPC's default.
	ReadBuf int
	// Direct writes the output with O_DIRECT, around the page cache.
	Direct bool
	// Writeback, when not zero and not Direct, starts the kernel's
	// writeback of each Writeback bytes of output as soon as they are
	// written, so that the final fsync finds little left to do; zero leaves
	// it all to the fsync (or to the kernel's dirty-page thresholds).
	Writeback int64
}

// recvResult is what one copy delivered.
type recvResult struct {
	sum     summary
	elapsed time.Duration // from the first message to the end of the fsync
	fsync   time.Duration // of which the final flush and fsync
}

// receiver serves exactly one copy.
type receiver struct {
	cfg    recvConfig
	lis    net.Listener
	srv    *grpc.Server
	busy   atomic.Bool
	result chan recvOutcome
}

type recvOutcome struct {
	res recvResult
	err error
}

// listen starts listening on addr; serve then accepts the copy.
func listen(addr string, cfg recvConfig) (*receiver, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(cfg.TLS)),
		grpc.MaxRecvMsgSize(maxMsgSize(maxChunk)),
	}
	if cfg.Window > 0 {
		opts = append(opts, grpc.InitialWindowSize(cfg.Window))
	}
	if cfg.ConnWindow > 0 {
		opts = append(opts, grpc.InitialConnWindowSize(cfg.ConnWindow))
	}
	if cfg.ReadBuf >= 0 {
		opts = append(opts, grpc.ReadBufferSize(cfg.ReadBuf))
	}
	r := &receiver{cfg: cfg, lis: lis, srv: grpc.NewServer(opts...), result: make(chan recvOutcome, 1)}
	r.srv.RegisterService(&pipeServiceDesc, r)
	return r, nil
}

func (r *receiver) addr() net.Addr { return r.lis.Addr() }

// serve serves until one copy has finished or ctx is done, then stops.
func (r *receiver) serve(ctx context.Context) (recvResult, error) {
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve(r.lis) }()
	var out recvOutcome
	select {
	case out = <-r.result:
	case err := <-served:
		return recvResult{}, fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
		r.srv.Stop()
		return recvResult{}, ctx.Err()
	}
	// Let the reply reach the sender, but do not wait on a sender that
	// does not hang up.
	stopped := make(chan struct{})
	go func() { r.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		r.srv.Stop()
	}
	return out.res, out.err
}

// serveCopy is the handler of both methods.
func (r *receiver) serveCopy(stream grpc.ServerStream, codec string) error {
	if !r.busy.CompareAndSwap(false, true) {
		return status.Error(codes.FailedPrecondition, "this receiver has served its copy")
	}
	res, err := r.copy(stream, codec)
	r.result <- recvOutcome{res, err}
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return nil
}

// payload is one received message, whatever the codec.
type payload interface {
	// appendTo appends the message's bytes, in order, to iov.
	appendTo(iov [][]byte) [][]byte
	release()
}

func (c *chunk) appendTo(iov [][]byte) [][]byte {
	for _, b := range c.data {
		if d := b.ReadOnlyData(); len(d) > 0 {
			iov = append(iov, d)
		}
	}
	return iov
}

func (c *chunk) release() { c.data.Free() }

type bytesPayload []byte

func (b bytesPayload) appendTo(iov [][]byte) [][]byte {
	if len(b) == 0 {
		return iov
	}
	return append(iov, b)
}

func (bytesPayload) release() {}

func (r *receiver) copy(stream grpc.ServerStream, codec string) (recvResult, error) {
	recv := func() (payload, error) {
		c := new(chunk)
		return c, stream.RecvMsg(c)
	}
	reply := func(s *summary) error { return stream.SendMsg(s) }
	if codec == codecProto {
		recv = func() (payload, error) {
			m := new(wrapperspb.BytesValue)
			err := stream.RecvMsg(m)
			return bytesPayload(m.GetValue()), err
		}
		reply = func(s *summary) error { return stream.SendMsg(s.proto()) }
	}

	out, err := createOutput(r.cfg.Out, r.cfg.Direct, r.cfg.Writeback)
	if err != nil {
		return recvResult{}, err
	}
	finished := false
	defer func() {
		if !finished {
			out.abort()
		}
	}()

	// The end-to-end SHA-256 costs about a third of the throughput on a
	// 2-core machine (both sides hash every byte), so a sender measuring
	// the pipeline without it can turn it off.
	var h hash.Hash
	if !slices.Contains(metadata.ValueFromIncomingContext(stream.Context(), hashHeader), "off") {
		h = sha256.New()
	}
	var (
		n     uint64
		iov   [][]byte
		start time.Time
	)
	for {
		p, err := recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return recvResult{}, fmt.Errorf("receive after %d bytes: %w", n, err)
		}
		if start.IsZero() {
			start = time.Now()
		}
		iov = p.appendTo(iov[:0])
		for _, b := range iov {
			if h != nil {
				h.Write(b)
			}
			n += uint64(len(b))
		}
		err = out.write(iov)
		clear(iov) // drop references to buffers going back to the pool
		p.release()
		if err != nil {
			return recvResult{}, err
		}
	}
	syncStart := time.Now()
	finished = true
	if err := out.finish(); err != nil {
		return recvResult{}, err
	}
	fsync := time.Since(syncStart)
	res := recvResult{sum: summary{bytes: n}, fsync: fsync}
	if !start.IsZero() {
		res.elapsed = time.Since(start)
	}
	if h != nil {
		h.Sum(res.sum.sha256[:0])
	}
	if err := reply(&res.sum); err != nil {
		return recvResult{}, fmt.Errorf("reply: %w", err)
	}
	return res, nil
}
