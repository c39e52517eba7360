package main

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The service is declared by hand, without protoc: it has one job, and
// generated code would only add a marshalling step we are here to measure.
//
//	service PipeService {
//	  // Copy carries sealed chunks with the raw codec; the reply is a summary.
//	  rpc Copy(stream Chunk) returns (Summary);
//	  // CopyProto is Copy with google.protobuf.BytesValue messages and the
//	  // default proto codec, kept to measure what protobuf costs.
//	  rpc CopyProto(stream google.protobuf.BytesValue) returns (google.protobuf.BytesValue);
//	}
const serviceName = "ferry.barepipe.v1.PipeService"

// Codec names as the -codec flag takes them.
const (
	codecRaw   = "raw"
	codecProto = "proto"
)

// hashHeader is the request metadata by which the sender turns the
// end-to-end SHA-256 off ("off"); the summary's hash is zero then.
const hashHeader = "barepipe-hash"

// pipeServer is what the service's handlers call.
type pipeServer interface {
	serveCopy(stream grpc.ServerStream, codec string) error
}

var pipeServiceDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*pipeServer)(nil),
	Streams: []grpc.StreamDesc{
		{
			StreamName:    "Copy",
			ClientStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				return srv.(pipeServer).serveCopy(stream, codecRaw)
			},
		},
		{
			StreamName:    "CopyProto",
			ClientStreams: true,
			Handler: func(srv any, stream grpc.ServerStream) error {
				return srv.(pipeServer).serveCopy(stream, codecProto)
			},
		},
	},
	Metadata: "cmd/ferry-barepipe/pipe.go",
}

// streamDesc returns the stream of the method for codec and its full name.
func streamDesc(codec string) (*grpc.StreamDesc, string, error) {
	var d *grpc.StreamDesc
	switch codec {
	case codecRaw:
		d = &pipeServiceDesc.Streams[0]
	case codecProto:
		d = &pipeServiceDesc.Streams[1]
	default:
		return nil, "", fmt.Errorf("unknown codec %q: want %s or %s", codec, codecRaw, codecProto)
	}
	return d, "/" + serviceName + "/" + d.StreamName, nil
}

// rawCodec puts a message's bytes on the wire as they are, with no
// encoding and no copy. A chunk is handed to gRPC as the reference-counted
// buffer it was sealed in, and gRPC returns that buffer to its pool once the
// transport has written it; a received chunk keeps the buffers gRPC read its
// HTTP/2 frames into. The proto codec instead copies each payload into a
// new buffer on send and twice on receive (joining the frames, then into
// BytesValue.Value), and allocates 1 MiB per message on the receiving side.
type rawCodec struct{}

const rawCodecName = "ferry-raw"

// The server finds the codec by the content-subtype the client sends.
func init() { encoding.RegisterCodecV2(rawCodec{}) }

func (rawCodec) Name() string { return rawCodecName }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	switch m := v.(type) {
	case *chunk:
		// gRPC frees what Marshal returns; the chunk keeps its own reference.
		m.data.Ref()
		return m.data, nil
	case *summary:
		return mem.BufferSlice{mem.SliceBuffer(m.marshal())}, nil
	default:
		return nil, fmt.Errorf("raw codec: cannot marshal %T", v)
	}
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *chunk:
		// gRPC frees data when Unmarshal returns; the chunk outlives it.
		data.Ref()
		m.data = data
		return nil
	case *summary:
		return m.unmarshal(data.Materialize())
	default:
		return fmt.Errorf("raw codec: cannot unmarshal into %T", v)
	}
}

// chunk is one sealed chunk (ciphertext and tag) as the raw codec sends and
// receives it. Its holder owns one reference to data and frees it.
type chunk struct {
	data mem.BufferSlice
}

// summary is the receiver's reply: what it received and wrote.
type summary struct {
	bytes  uint64
	sha256 [sha256.Size]byte
}

const summarySize = 8 + sha256.Size

func (s *summary) marshal() []byte {
	b := make([]byte, summarySize)
	binary.BigEndian.PutUint64(b, s.bytes)
	copy(b[8:], s.sha256[:])
	return b
}

func (s *summary) unmarshal(b []byte) error {
	if len(b) != summarySize {
		return fmt.Errorf("summary: got %d bytes, want %d", len(b), summarySize)
	}
	s.bytes = binary.BigEndian.Uint64(b)
	copy(s.sha256[:], b[8:])
	return nil
}

func (s *summary) proto() *wrapperspb.BytesValue { return wrapperspb.Bytes(s.marshal()) }

func (s summary) String() string { return fmt.Sprintf("%d bytes, sha256 %x", s.bytes, s.sha256) }
