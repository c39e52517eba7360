package format

import (
	"bufio"
	"errors"
	"fmt"
	"io"
)

// Writer writes one backup file front to back: header and key table when
// made, records as they come, then block map, catalog and footer at Finish.
// It does not sync or rename; committing the file is the repository's job.
type Writer struct {
	bw      *bufio.Writer
	under   io.Writer
	h       Header
	hdr     []byte
	off     int64
	start   int64
	entries []MapEntry
	seen    map[BlockKey]struct{}
	plain   uint64
	sealed  uint64
	recBuf  []byte
	err     error // sticky
	done    bool
}

// NewWriter writes the header and key table of a new file to w.
func NewWriter(w io.Writer, h Header, kt KeyTable) (*Writer, error) {
	h.Secrets = append(h.Secrets[:0:0], h.Secrets...)
	if h.KeyTableCap == 0 {
		h.KeyTableCap = KeyTableCapFor(&kt)
	}
	for _, e := range kt.Entries {
		if !h.HasSecret(e.Secret) {
			return nil, fmt.Errorf("key table entry for a secret the header does not list")
		}
	}
	hdr, err := MarshalHeader(&h)
	if err != nil {
		return nil, err
	}
	ktb, err := MarshalKeyTable(&kt, h.KeyTableCap)
	if err != nil {
		return nil, err
	}
	fw := &Writer{bw: bufio.NewWriterSize(w, 256<<10), under: w, h: h, hdr: hdr, seen: map[BlockKey]struct{}{}}
	fw.write(hdr)
	fw.write(ktb) // the second slot starts empty
	fw.start = fw.off
	return fw, fw.err
}

func (w *Writer) write(b []byte) {
	if w.err != nil {
		return
	}
	n, err := w.bw.Write(b)
	w.off += int64(n)
	if err != nil {
		w.err = err
	}
}

// Header returns the file's header.
func (w *Writer) Header() *Header { return &w.h }

// Offset is the number of bytes written so far.
func (w *Writer) Offset() int64 { return w.off }

// Records returns how many records have been written.
func (w *Writer) Records() int { return len(w.entries) }

// Entries returns the block map written so far.
func (w *Writer) Entries() []MapEntry { return w.entries }

// ErrDuplicateRecord is returned for a second record of the same block.
var ErrDuplicateRecord = errors.New("block is already stored in this file")

// WriteRecord appends one record. sum, when not nil, is the record's
// checksum computed by the caller (a pipeline worker); otherwise it is
// computed here.
func (w *Writer) WriteRecord(rh *RecordHeader, payload []byte, sum *Checksum) error {
	if w.err != nil {
		return w.err
	}
	if w.done {
		return errors.New("write record: file already finished")
	}
	if err := rh.Check(&w.h); err != nil {
		return fmt.Errorf("record for object %d block %d: %w", rh.Object, rh.Block, err)
	}
	if int(rh.SealedLen) != len(payload) {
		return fmt.Errorf("record for object %d block %d: payload is %d bytes, header says %d", rh.Object, rh.Block, len(payload), rh.SealedLen)
	}
	k := BlockKey{rh.Object, rh.Block}
	if _, dup := w.seen[k]; dup {
		return fmt.Errorf("record for object %d block %d: %w", rh.Object, rh.Block, ErrDuplicateRecord)
	}
	w.recBuf = rh.Marshal(w.recBuf[:0])
	var c Checksum
	if sum != nil {
		c = *sum
	} else {
		c = RecordChecksum(w.recBuf, payload)
	}
	w.seen[k] = struct{}{}
	w.entries = append(w.entries, MapEntry{
		Object: rh.Object, Block: rh.Block, Offset: w.off,
		Length: uint32(RecordHeaderSize + len(payload)), Checksum: c,
	})
	w.plain += uint64(rh.PlainLen)
	w.sealed += uint64(rh.SealedLen)
	w.write(w.recBuf)
	w.write(payload)
	return w.err
}

// Finish writes the block map, the catalog section and the footer, and
// flushes. catalog is a section made by SealCatalog.
func (w *Writer) Finish(catalog []byte) (*Footer, error) {
	if w.err != nil {
		return nil, w.err
	}
	if w.done {
		return nil, errors.New("finish: file already finished")
	}
	if _, err := splitCatalog("(new file)", w.off, catalog, &w.h); err != nil {
		return nil, fmt.Errorf("finish: %w", err)
	}
	w.done = true
	bm := marshalBlockMap(w.entries)
	f := &Footer{
		RecordsOffset:  w.start,
		RecordCount:    uint64(len(w.entries)),
		BlockMapOffset: w.off,
		BlockMapLen:    int64(len(bm)),
		CatalogOffset:  w.off + int64(len(bm)),
		CatalogLen:     int64(len(catalog)),
		PlainBytes:     w.plain,
		SealedBytes:    w.sealed,
	}
	f.Hash = fileHash(w.hdr, bm, catalog, f)
	w.write(bm)
	w.write(catalog)
	w.write(f.marshal())
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return f, w.err
}

// Checkpoint is a point of a file being written that a writer can return
// to: after its first Records records, at byte Offset.
type Checkpoint struct {
	Records int
	Offset  int64
	plain   uint64
	sealed  uint64
}

// Flush writes out buffered bytes and returns a checkpoint at the end of
// what is written. Making it durable (fsync) is the caller's.
func (w *Writer) Flush() (Checkpoint, error) {
	if w.err == nil {
		w.err = w.bw.Flush()
	}
	return Checkpoint{Records: len(w.entries), Offset: w.off, plain: w.plain, sealed: w.sealed}, w.err
}

// Rewind returns the writer to cp, forgetting the records after it. The
// caller truncates the underlying file to cp.Offset first.
func (w *Writer) Rewind(cp Checkpoint) error {
	if w.done || cp.Records > len(w.entries) || cp.Offset > w.off {
		return errors.New("rewind: checkpoint is not behind the writer")
	}
	for _, e := range w.entries[cp.Records:] {
		delete(w.seen, e.Key())
	}
	w.entries = w.entries[:cp.Records]
	w.off, w.plain, w.sealed = cp.Offset, cp.plain, cp.sealed
	w.bw.Reset(w.under)
	w.err = nil
	return nil
}
