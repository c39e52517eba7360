package backup

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

// FileSink receives a backup file as it is made, in file order: where a
// copy goes (a stream to a target agent, or a local file).
type FileSink interface {
	// Open starts the file with its exact header and key table bytes.
	Open(header, keyTable []byte) error
	// Record adds one record; sum is its block map checksum. The buffers
	// are reused once Record returns.
	Record(header, payload []byte, sum format.Checksum) error
	// Finish ends the file with its catalog section.
	Finish(catalog []byte) error
}

// CopySpec says which point to copy and what the new file is.
type CopySpec struct {
	// Point is the source point (id or unique prefix); empty means latest.
	Point string
	// Base is the source point the target already holds as the parent of
	// the new file; empty for a full. It must be in the same source chain
	// as Point (ErrBaseElsewhere otherwise: make a full instead).
	Base string
	// SourceKeys opens the source files when they are encrypted.
	SourceKeys *keyring.Keyring
	// The new file.
	FileID, BackupID, ChainID, ParentID format.ID
	Sequence                            uint32
	BackupName                          string
	Created                             time.Time
	// Session seals the new file; nil writes it unencrypted. KeyTable holds
	// its wrapped forms.
	Session  *keys.Session
	KeyTable format.KeyTable
	Workers  int
	Progress func(sent int64)
}

// CopyResult describes what a copy sent.
type CopyResult struct {
	Source    *repo.Point
	Kind      format.Kind
	Records   int
	ReadBytes int64 // record bytes read from the source files
	SentBytes int64 // record bytes handed to the sink
	Duration  time.Duration
}

// ErrBaseElsewhere is returned when the base point is not in the chain of
// the point to copy (the source started a new chain): copy a full instead.
var ErrBaseElsewhere = errors.New("the last copied point is not in the chain of the point to copy")

// Copy sends a restore point of backup in r to sink as one new backup
// file: a full holding every block of the point, or, with a base, an
// incremental holding the blocks whose digest changed since the base.
// Payloads keep their compression; encrypted sources are opened with
// SourceKeys and everything is sealed again under spec.Session.
func Copy(ctx context.Context, r *repo.Repo, backup string, spec CopySpec, sink FileSink) (*CopyResult, error) {
	start := time.Now()
	if spec.Workers <= 0 {
		spec.Workers = runtime.GOMAXPROCS(0)
	}
	if spec.SourceKeys == nil {
		spec.SourceKeys = keyring.New()
	}
	v, err := openPoint(r, backup, spec.Point, spec.SourceKeys)
	if err != nil {
		return nil, err
	}
	defer v.close()
	p, files, cat, bix := v.point, v.files, v.cat, v.bix
	last := files[len(files)-1]
	res := &CopyResult{Source: p, Kind: format.KindFull}
	baseDigests, err := v.baseDigests(spec.Base)
	if err != nil {
		return nil, err
	}
	if baseDigests != nil {
		res.Kind = format.KindIncremental
	}
	var secrets []keys.KeyID
	if spec.Session != nil {
		secrets = []keys.KeyID{spec.Session.ID()}
	}
	h, hb, kb, err := copyHeader(spec, res.Kind, last.f.Header.BlockSize, secrets)
	if err != nil {
		return nil, err
	}
	if err := sink.Open(hb, kb); err != nil {
		return nil, err
	}

	// The blocks to send, in catalog order.
	var todo []copyJob
	for i := range cat.Objects {
		o := &cat.Objects[i]
		for b, d := range o.Digests {
			k := format.BlockKey{Object: o.ID, Block: uint64(b)}
			if bd, ok := baseDigests[k]; ok && bd == d {
				continue
			}
			todo = append(todo, copyJob{key: k, loc: bix[k]})
		}
	}
	if err := runCopyPipeline(ctx, files, todo, h, spec, sink, res); err != nil {
		return nil, err
	}
	section, err := sealCatalog(cat, h, spec.Session)
	if err != nil {
		return nil, err
	}
	if err := sink.Finish(section); err != nil {
		return nil, err
	}
	res.Duration = time.Since(start)
	return res, nil
}

// baseDigests returns the block digests of base, the point the target
// already holds, for an incremental copy of v; nil for a full (base "").
func (v *pointView) baseDigests(base string) (map[format.BlockKey]format.Digest, error) {
	if base == "" {
		return nil, nil
	}
	ix, p, c, files := v.ix, v.point, v.chain, v.files
	bp, bc, err := ix.Find(base)
	if err != nil {
		return nil, fmt.Errorf("base point: %w", err)
	}
	// files starts at the chain's full, which after a merge (retention)
	// is a merged full of a later sequence than 1.
	first := files[0].point.Sequence
	if bc.ID != c.ID || bp.Sequence > p.Sequence || bp.Sequence < first {
		return nil, fmt.Errorf("%w (base %s in chain %s, point %s in chain %s)", ErrBaseElsewhere, bp.FileID, bc.ID, p.FileID, c.ID)
	}
	bf := files[bp.Sequence-first]
	bcat, err := bf.f.Catalog(bf.meta())
	if err != nil {
		return nil, err
	}
	out := map[format.BlockKey]format.Digest{}
	for i := range bcat.Objects {
		o := &bcat.Objects[i]
		for b, d := range o.Digests {
			out[format.BlockKey{Object: o.ID, Block: uint64(b)}] = d
		}
	}
	return out, nil
}

// copyHeader makes the new file's header and key table bytes; secrets are
// the key ids of the session secrets that seal it (none: unencrypted).
func copyHeader(spec CopySpec, kind format.Kind, blockSize uint32, secrets []keys.KeyID) (*format.Header, []byte, []byte, error) {
	h := &format.Header{
		FileID: spec.FileID, BackupID: spec.BackupID, ChainID: spec.ChainID, ParentID: spec.ParentID,
		Sequence: spec.Sequence, Kind: kind, BlockSize: blockSize, Created: spec.Created,
		BackupName: spec.BackupName,
	}
	if h.Created.IsZero() {
		h.Created = time.Now().UTC()
	}
	if len(secrets) > 0 {
		h.Encryption = format.EncryptionAES256GCM
		h.Secrets = secrets
	}
	h.KeyTableCap = format.KeyTableCapFor(&spec.KeyTable)
	hb, err := format.MarshalHeader(h)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("copy: %w", err)
	}
	kb, err := format.MarshalKeyTable(&spec.KeyTable, h.KeyTableCap)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("copy: %w", err)
	}
	return h, hb, kb, nil
}

type copyJob struct {
	key format.BlockKey
	loc loc
	seq uint64

	rec     []byte // pooled: the source record
	out     []byte // pooled: the new record's payload
	rh      format.RecordHeader
	payload []byte
	sum     format.Checksum
	read    int
	err     error
}

func runCopyPipeline(ctx context.Context, files []*chainFile, todo []copyJob, h *format.Header, spec CopySpec, sink FileSink, res *CopyResult) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &pipeline{ctx: ctx, cancel: cancel}
	bs := h.BlockSize
	n := window(bs, spec.Workers)
	recs := make(chan []byte, n)
	outs := make(chan []byte, n)
	for range n {
		recs <- make([]byte, format.RecordHeaderSize+bs+format.TagSize)
		outs <- make([]byte, bs+format.TagSize)
	}
	jobs := make(chan *copyJob, n)
	done := make(chan *copyJob, n)

	go func() {
		defer close(jobs)
		for i := range todo {
			j := &todo[i]
			j.seq = uint64(i)
			select {
			case j.rec = <-recs:
			case <-ctx.Done():
				return
			}
			j.out = <-outs
			select {
			case jobs <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for range spec.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				j.err = reseal(files, j, h, spec.Session)
				done <- j
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	var hdr [format.RecordHeaderSize]byte
	inOrder(p, done, func(j *copyJob) uint64 { return j.seq }, func(j *copyJob) {
		if j.err != nil {
			p.fail(j.err)
			return
		}
		if err := sink.Record(j.rh.Marshal(hdr[:0]), j.payload, j.sum); err != nil {
			p.fail(err)
			return
		}
		res.Records++
		res.ReadBytes += int64(j.read)
		res.SentBytes += int64(format.RecordHeaderSize + len(j.payload))
		recs <- j.rec
		outs <- j.out
		j.rec, j.out, j.payload = nil, nil, nil
		if spec.Progress != nil {
			spec.Progress(res.SentBytes)
		}
	}, func(*copyJob) {})
	if p.err != nil {
		return p.err
	}
	return ctx.Err()
}

// reseal reads one source record, opens it if the source is encrypted
// (without decompressing), and seals it for the new file.
func reseal(files []*chainFile, j *copyJob, h *format.Header, s *keys.Session) error {
	cf := files[j.loc.file]
	e := &cf.f.Entries[j.loc.entry]
	read := cf.f.ReadRecord
	if cf.f.Header.Encrypted() {
		read = cf.f.ReadSealedRecord // opened below: GCM authenticates it
	}
	srh, payload, err := read(e, j.rec)
	if err != nil {
		return err
	}
	j.read = int(e.Length)
	stored := payload
	if cf.f.Header.Encrypted() {
		sess := cf.sessions[srh.KeyID]
		if sess == nil {
			return fmt.Errorf("backup file %s: %w %x", cf.f.Name, errKey, srh.KeyID[:4])
		}
		var aad [64]byte
		// Open in place: the record buffer is ours until the writer
		// takes the result.
		stored, err = sess.Data().Open(payload[:0], srh.Nonce[:], payload, format.RecordAAD(aad[:0], cf.f.Header.BackupID, &srh))
		if err != nil {
			return &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
				Reason: fmt.Sprintf("%s does not authenticate (wrong key or altered data)", e)}
		}
	}
	rh := format.RecordHeader{Object: srh.Object, Block: srh.Block, PlainLen: srh.PlainLen, StoredLen: srh.StoredLen, Compression: srh.Compression}
	if s == nil {
		rh.SealedLen = rh.StoredLen
		j.payload = stored
	} else {
		rh.SealedLen = rh.StoredLen + format.TagSize
		rh.KeyID = s.ID()
		rh.Nonce = format.Nonce(0, j.seq)
		var aad [64]byte
		j.payload = s.Data().Seal(j.out[:0], rh.Nonce[:], stored, format.RecordAAD(aad[:0], h.BackupID, &rh))
	}
	j.rh = rh
	var hdr [format.RecordHeaderSize]byte
	j.sum = format.RecordChecksum(rh.Marshal(hdr[:0]), j.payload)
	return nil
}
