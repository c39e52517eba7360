package transfer

import (
	"crypto/subtle"
	"errors"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// BlockCache is the target's WAN global cache as the receiver uses it
// (*wancache.Cache). Get must check what it returns against the digest;
// any Get error is a miss.
type BlockCache interface {
	HasMany(digests [][32]byte) []bool
	Get(digest [32]byte) (data []byte, compressed bool, rawLen int, err error)
	Put(digest [32]byte, data []byte, compressed bool, rawLen int) error
}

// ErrStreamEnded is returned by WANReceiver.Run when the source's messages
// end before the file is finished; the stream's own error says why.
var ErrStreamEnded = errors.New("the stream ended before the file was finished")

// SendError wraps a failure to send to the source: the link, not the
// source, ended the transfer.
type SendError struct{ Err error }

func (e *SendError) Error() string { return "send to source: " + e.Err.Error() }
func (e *SendError) Unwrap() error { return e.Err }

// WANReceiver runs the target side of a WAN-mode transfer over a Receiver.
type WANReceiver struct {
	rc      *Receiver
	session *keys.Session
	prefix  uint32
	sealer  *backup.StoredSealer
	cache   BlockCache

	next     uint64 // index of the next entry to be announced
	done     uint64 // entries written: rc.Records
	queue    []*wanEntry
	promised map[[32]byte]bool // answered "send" in this transfer
	finish   *targetv1.TransferFinish

	out, scratch []byte
	hdr          [format.RecordHeaderSize]byte

	// Stats counts what this transfer took from the cache and asked for
	// again (WAN fields of SessionStats).
	Stats commonv1.SessionStats
	// CachePutErrors counts blocks the cache did not take (they are sent
	// again next time, nothing else).
	CachePutErrors int
}

type wanEntry struct {
	key        format.BlockKey
	digest     [32]byte
	rawLen     uint32
	send       bool // the source sends it (answered send, or refetched)
	data       []byte
	compressed bool
}

// NewWANReceiver starts the WAN side of rc's transfer: s is the session
// key the controller handed over (nil for an unencrypted file), prefix the
// nonce prefix of this attempt (distinct for every attempt of s), cache
// the WAN cache (nil: none, every new block is sent).
func NewWANReceiver(rc *Receiver, s *keys.Session, prefix uint32, cache BlockCache) (*WANReceiver, error) {
	h := rc.h
	switch {
	case h.Encrypted() && s == nil:
		return nil, refuse("the file is encrypted and the controller handed over no key for this session")
	case !h.Encrypted() && s != nil:
		return nil, refuse("the session has a key and the file would not be encrypted")
	case s != nil && (len(h.Secrets) != 1 || h.Secrets[0] != s.ID()):
		return nil, refuse("the file's header does not list the session's key")
	}
	bs := int(h.BlockSize)
	return &WANReceiver{
		rc: rc, session: s, prefix: prefix, sealer: backup.NewStoredSealer(s, h.BackupID, prefix), cache: cache,
		next: uint64(rc.Records), done: uint64(rc.Records), promised: map[[32]byte]bool{},
		out: make([]byte, bs+bs/128+4096+format.TagSize), scratch: make([]byte, bs),
	}, nil
}

// Run receives the transfer's messages after the open until the file is
// committed, sending answers, refetch requests and durability acks every
// interval bytes. It returns the committed point. A failed send is a
// *SendError; the end of msgs before the finish is ErrStreamEnded.
func (wr *WANReceiver) Run(msgs <-chan *targetv1.TransferRequest, send func(*targetv1.TransferResponse) error, interval int64) (*repo.Point, error) {
	sendMsg := func(m *targetv1.TransferResponse) error {
		if err := send(m); err != nil {
			return &SendError{err}
		}
		return nil
	}
	for {
		if err := wr.advance(sendMsg, interval); err != nil {
			return nil, err
		}
		if wr.finish != nil && len(wr.queue) == 0 {
			return wr.commit()
		}
		msg, ok := <-msgs
		if !ok {
			return nil, ErrStreamEnded
		}
		switch m := msg.Msg.(type) {
		case *targetv1.TransferRequest_Digests:
			ans, err := wr.announce(m.Digests)
			if err != nil {
				return nil, err
			}
			if err := sendMsg(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Answer{Answer: ans}}); err != nil {
				return nil, err
			}
		case *targetv1.TransferRequest_Block:
			if err := wr.attach(m.Block); err != nil {
				return nil, err
			}
		case *targetv1.TransferRequest_Finish:
			if wr.finish != nil {
				return nil, refuse("a second finish")
			}
			wr.finish = m.Finish
		default:
			return nil, refuse("unexpected message %T in a WAN transfer", msg.Msg)
		}
	}
}

// announce takes a digest batch and answers it.
func (wr *WANReceiver) announce(b *targetv1.WanDigestBatch) (*targetv1.WanDigestAnswer, error) {
	switch {
	case wr.finish != nil:
		return nil, refuse("digests after the finish")
	case b.First != wr.next:
		return nil, refuse("digest batch starts at entry %d, want %d", b.First, wr.next)
	case len(b.Blocks) == 0 || len(b.Blocks) > maxWANBatch:
		return nil, refuse("digest batch of %d entries", len(b.Blocks))
	}
	ds := make([][32]byte, len(b.Blocks))
	entries := make([]*wanEntry, len(b.Blocks))
	for i, d := range b.Blocks {
		if len(d.Digest) != 32 || d.RawLength == 0 || d.RawLength > wr.rc.h.BlockSize {
			return nil, refuse("entry %d: malformed digest or length", b.First+uint64(i))
		}
		copy(ds[i][:], d.Digest)
		entries[i] = &wanEntry{key: format.BlockKey{Object: d.Object, Block: d.Block}, digest: ds[i], rawLen: d.RawLength}
	}
	var have []bool
	if wr.cache != nil {
		have = wr.cache.HasMany(ds)
	}
	ans := &targetv1.WanDigestAnswer{First: b.First, Send: make([]bool, len(entries))}
	for i, e := range entries {
		// Without a cache there is nowhere to keep a block for a later
		// entry with the same digest: every entry is sent.
		e.send = wr.cache == nil || !have[i] && !wr.promised[e.digest]
		if e.send && wr.cache != nil {
			wr.promised[e.digest] = true
		}
		ans.Send[i] = e.send
	}
	wr.queue = append(wr.queue, entries...)
	wr.next += uint64(len(entries))
	return ans, nil
}

// attach keeps the data of an entry the target asked for.
func (wr *WANReceiver) attach(b *targetv1.WanBlock) error {
	if b.Index < wr.done || b.Index >= wr.next {
		return refuse("block for entry %d, which is not pending", b.Index)
	}
	e := wr.queue[b.Index-wr.done]
	if !e.send || e.data != nil {
		return refuse("block for entry %d, which the target did not ask for", b.Index)
	}
	if len(b.Data) == 0 || len(b.Data) > int(wr.rc.h.BlockSize) {
		return refuse("block for entry %d of %d bytes", b.Index, len(b.Data))
	}
	e.data, e.compressed = b.Data, b.Compressed
	return nil
}

// advance writes the entries at the head of the queue whose block is at
// hand, in order, and stops at the first that waits for its data.
func (wr *WANReceiver) advance(send func(*targetv1.TransferResponse) error, interval int64) error {
	for len(wr.queue) > 0 {
		e := wr.queue[0]
		var stored []byte
		compressed := false
		switch {
		case e.data != nil:
			if err := backup.CheckBlock(e.data, e.compressed, e.rawLen, e.digest, wr.scratch); err != nil {
				return refuse("entry %d (object %d, block %d): %v", wr.done, e.key.Object, e.key.Block, err)
			}
			stored, compressed = e.data, e.compressed
			if wr.cache != nil {
				if err := wr.cache.Put(e.digest, stored, compressed, int(e.rawLen)); err != nil {
					wr.CachePutErrors++
				}
			}
		case !e.send:
			data, c, rawLen, err := wr.cache.Get(e.digest)
			if err != nil || rawLen != int(e.rawLen) {
				// Evicted or damaged since the answer: ask for it.
				e.send = true
				wr.Stats.BlocksRefetched++
				return send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Refetch{Refetch: &targetv1.WanRefetch{Index: wr.done}}})
			}
			wr.Stats.CacheHitBlocks++
			wr.Stats.CacheHitBytes += int64(rawLen)
			stored, compressed = data, c
		default:
			return nil // its data has not arrived yet
		}
		rh, payload := wr.sealer.Seal(e.key, stored, compressed, e.rawLen, wr.out, wr.done)
		if err := wr.rc.Record(rh.Marshal(wr.hdr[:0]), payload); err != nil {
			return err
		}
		wr.queue[0] = nil
		wr.queue = wr.queue[1:]
		wr.done++
		if wr.rc.SinceCheckpoint() >= interval {
			n, err := wr.rc.Checkpoint()
			if err != nil {
				return err
			}
			if err := send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Ack{Ack: &targetv1.TransferAck{Records: uint64(n)}}}); err != nil {
				return err
			}
		}
	}
	return nil
}

// commit checks the finish against the file written and commits it.
func (wr *WANReceiver) commit() (*repo.Point, error) {
	rc, f := wr.rc, wr.finish
	if len(f.Catalog) > 0 {
		return nil, refuse("a WAN transfer's finish carries the catalog plaintext, not a section")
	}
	section, cat, err := backup.SealCatalogPlain(f.CatalogPlain, rc.h, wr.session, wr.prefix)
	if err != nil {
		return nil, refuse("%v", err)
	}
	digests := map[format.BlockKey]format.Digest{}
	for i := range cat.Objects {
		o := &cat.Objects[i]
		for b, d := range o.Digests {
			digests[format.BlockKey{Object: o.ID, Block: uint64(b)}] = d
		}
	}
	entries := rc.w.Entries()
	if rc.h.Kind.IsFull() && len(entries) != len(digests) {
		return nil, refuse("the file holds %d blocks and its catalog %d: a full holds them all", len(entries), len(digests))
	}
	tr := newWANTrailer(rc.hb, rc.kb)
	for i := range entries {
		k := entries[i].Key()
		d, ok := digests[k]
		if !ok {
			return nil, refuse("the catalog has no block %d of object %d, which the file holds", k.Block, k.Object)
		}
		tr.block(k, d)
	}
	want := tr.sum(f.CatalogPlain)
	if subtle.ConstantTimeCompare(want[:], f.TrailerHash) != 1 {
		return nil, refuse("WAN trailer hash does not match the file and its catalog")
	}
	return rc.commitOwn(section)
}

// commitOwn commits a file whose records the receiver made itself (WAN
// mode), so the sender's trailer over record checksums does not apply.
func (rc *Receiver) commitOwn(section []byte) (*repo.Point, error) {
	st, err := rc.tr.state()
	if err != nil {
		return nil, err
	}
	rc.tr.part(section)
	sum := rc.tr.sum()
	if err := rc.tr.restore(st); err != nil {
		return nil, err
	}
	return rc.Commit(section, sum[:])
}

// Header is the header of the file being received.
func (rc *Receiver) Header() *format.Header { return rc.h }
