package transfer

import (
	"errors"
	"fmt"
	"io"

	"github.com/ferrybackup/ferry/internal/format"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
)

// Sender is a backup.FileSink that streams the file to a target agent.
// One goroutine drives it (the copy's writer): Send blocking is the flow
// control.
type Sender struct {
	stream    targetv1.TargetService_TransferClient
	grant     []byte
	signature []byte
	resume    bool
	tr        *trailer
	// skip is how many records the target already holds (a resume): they
	// count in the trailer but are not sent again.
	skip, seen int
	// Sent is the record bytes this sender put on the stream.
	Sent int64

	// Reused for every record: Send marshals before it returns.
	rec   targetv1.Record
	chunk targetv1.RecordChunk
	msg   targetv1.TransferRequest

	Committed *targetv1.TransferCommitted
}

// NewSender wraps an open Transfer stream and the grant to present;
// resume asks the target to continue a cut-off transfer of the session.
func NewSender(stream targetv1.TargetService_TransferClient, grant, signature []byte, resume bool) *Sender {
	s := &Sender{stream: stream, grant: grant, signature: signature, resume: resume, tr: newTrailer()}
	s.chunk.Records = []*targetv1.Record{&s.rec}
	s.msg.Msg = &targetv1.TransferRequest_Records{Records: &s.chunk}
	return s
}

// Open sends the header and key table with the grant and waits for the
// target to accept, so a refused session fails before any data moves.
func (s *Sender) Open(hb, kb []byte) error {
	s.tr.part(hb)
	s.tr.part(kb)
	err := s.stream.Send(&targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Open{Open: &targetv1.TransferOpen{
		Grant: s.grant, GrantSignature: s.signature, Header: hb, KeyTable: kb, Resume: s.resume,
	}}})
	if err != nil {
		return s.recvErr(err)
	}
	resp, err := s.stream.Recv()
	if err != nil {
		return fmt.Errorf("target refused the transfer: %w", err)
	}
	acc := resp.GetAccepted()
	if acc == nil {
		return errors.New("target answered the open with something other than an accept")
	}
	s.skip = int(acc.ResumeFrom)
	return nil
}

// Resumed is how many records the target already held when it accepted.
func (s *Sender) Resumed() int { return s.skip }

// Record sends one record.
func (s *Sender) Record(hdr, payload []byte, sum format.Checksum) error {
	s.tr.record(sum)
	if s.seen++; s.seen <= s.skip {
		return nil // durable at the target already
	}
	s.Sent += int64(len(hdr) + len(payload))
	s.rec.Header, s.rec.Payload = hdr, payload
	err := s.stream.Send(&s.msg)
	s.rec.Header, s.rec.Payload = nil, nil
	if err != nil {
		return s.recvErr(err)
	}
	return nil
}

// Finish sends the catalog and the trailer hash and waits for the commit.
func (s *Sender) Finish(catalog []byte) error {
	s.tr.part(catalog)
	sum := s.tr.sum()
	err := s.stream.Send(&targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Finish{Finish: &targetv1.TransferFinish{
		Catalog: catalog, TrailerHash: sum[:],
	}}})
	if err != nil {
		return s.recvErr(err)
	}
	if err := s.stream.CloseSend(); err != nil {
		return err
	}
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			return fmt.Errorf("target did not commit the file: %w", err)
		}
		if resp.GetAck() != nil {
			continue // durability acks that arrived during the stream
		}
		if s.Committed = resp.GetCommitted(); s.Committed == nil {
			return errors.New("target answered the finish with something other than a commit")
		}
		return nil
	}
}

// recvErr turns a failed Send into the target's reason: when the server
// ends the stream, Send returns io.EOF and Recv has the status.
func (s *Sender) recvErr(err error) error {
	if errors.Is(err, io.EOF) {
		for { // past the acks that are still queued, to the status
			resp, rerr := s.stream.Recv()
			if rerr != nil {
				return fmt.Errorf("target ended the transfer: %w", rerr)
			}
			if resp.GetAck() == nil {
				break
			}
		}
	}
	return fmt.Errorf("send to target: %w", err)
}
