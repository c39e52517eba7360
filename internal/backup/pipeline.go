package backup

import (
	"context"
	"crypto/cipher"
	"fmt"
	"sync"

	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keys"
)

func metaAEAD(s *keys.Session) cipher.AEAD {
	if s == nil {
		return nil
	}
	return s.Meta()
}

func sealCatalog(cat *format.Catalog, h *format.Header, s *keys.Session) ([]byte, error) {
	plain, err := cat.Encode(h.BlockSize)
	if err != nil {
		return nil, err
	}
	if s == nil {
		return format.SealCatalog(plain, h, keys.KeyID{}, nil, 0), nil
	}
	return format.SealCatalog(plain, h, s.ID(), s.Meta(), 0), nil
}

// window is how many blocks may be in flight between reader and writer:
// enough to keep every worker busy while the writer waits for the oldest,
// and bounded in bytes so that 4 MiB blocks do not multiply memory.
func window(blockSize uint32, workers int) int {
	n := (48 << 20) / int(blockSize)
	return min(max(n, 2*workers+2), 64)
}

type job struct {
	seq   uint64
	obj   int    // index into the catalog's objects
	objID uint64 // its id, which records carry
	block uint64
	buf   []byte // pooled plaintext buffer
	plain []byte // buf[:n]
	out   []byte // pooled record buffer
	prev  *format.Digest

	// end marks the end of an object that was read short or vanished.
	end       bool
	finalSize uint64
	vanished  bool

	digest  format.Digest
	skip    bool
	rh      format.RecordHeader
	payload []byte
	sum     format.Checksum
}

// pipeline coordinates the reader, the workers and the writer, and stops
// them all on the first error.
type pipeline struct {
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once
	err    error
}

func (p *pipeline) fail(err error) {
	p.once.Do(func() {
		p.err = err
		p.cancel()
	})
}

func runBackupPipeline(ctx context.Context, src *source, cat *format.Catalog, prev *format.Catalog, w *format.Writer, s *keys.Session, o Options) (*pipelineStats, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := &pipeline{ctx: ctx, cancel: cancel}
	sl, err := newSealer(o.Compression, s, w.Header().BackupID, o.Workers)
	if err != nil {
		return nil, err
	}
	defer sl.close()

	n := window(o.BlockSize, o.Workers)
	bufs := make(chan []byte, n)
	outs := make(chan []byte, n)
	for range n {
		bufs <- make([]byte, o.BlockSize)
		outs <- make([]byte, outCap(o.BlockSize))
	}
	jobs := make(chan *job, n)
	done := make(chan *job, n)
	stats := &pipelineStats{}

	prevByID := map[uint64]*format.Object{}
	if prev != nil {
		for i := range prev.Objects {
			prevByID[prev.Objects[i].ID] = &prev.Objects[i]
		}
	}

	// Reader: one goroutine, in catalog order.
	go func() {
		defer close(jobs)
		if err := p.read(src, cat, prevByID, o, bufs, outs, jobs, stats); err != nil {
			p.fail(err)
		}
	}()
	// Workers.
	var wg sync.WaitGroup
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				if !j.end {
					work(sl, j)
				}
				done <- j
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	// Writer: here, putting results back in order.
	vanished := map[int]bool{}
	var progress int64
	inOrder(p, done, func(j *job) uint64 { return j.seq }, func(j *job) {
		obj := &cat.Objects[j.obj]
		if j.end {
			obj.Size = j.finalSize
			obj.Digests = obj.Digests[:format.Blocks(j.finalSize, o.BlockSize)]
			if j.vanished {
				vanished[j.obj] = true
			}
			return
		}
		obj.Digests[j.block] = j.digest
		if !j.skip {
			if err := w.WriteRecord(&j.rh, j.payload, &j.sum); err != nil {
				p.fail(fmt.Errorf("write backup file: %w", err))
			}
		}
		progress += int64(len(j.plain))
		recycle(j, bufs, outs)
		if o.Progress != nil {
			o.Progress(progress)
		}
	}, func(j *job) { recycle(j, bufs, outs) })
	if p.err != nil {
		return nil, p.err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(vanished) > 0 {
		kept := cat.Objects[:0]
		for i, obj := range cat.Objects {
			if !vanished[i] {
				kept = append(kept, obj)
			}
		}
		cat.Objects = kept
	}
	for i := range cat.Objects {
		stats.sourceSize += int64(cat.Objects[i].Size)
	}
	return stats, nil
}

// inOrder receives the results of a pipeline's workers, which finish in
// any order, and hands them to emit in the order of their sequence numbers
// (0, 1, ...). Once the pipeline has failed, results are handed to drop.
func inOrder[T any](p *pipeline, done <-chan T, seq func(T) uint64, emit, drop func(T)) {
	pending := map[uint64]T{}
	var next uint64
	for r := range done {
		if p.ctx.Err() != nil {
			drop(r)
			continue
		}
		pending[seq(r)] = r
		for p.ctx.Err() == nil {
			r, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			next++
			emit(r)
		}
	}
}

func recycle(j *job, bufs, outs chan []byte) {
	if j.buf != nil {
		bufs <- j.buf
	}
	if j.out != nil {
		outs <- j.out
	}
}

func work(sl *sealer, j *job) {
	j.digest = digest(j.plain)
	if j.prev != nil && *j.prev == j.digest {
		j.skip = true
		return
	}
	var hdr [format.RecordHeaderSize]byte
	j.rh, j.payload = sl.seal(j.objID, j.block, j.plain, j.out, j.seq)
	j.sum = format.RecordChecksum(j.rh.Marshal(hdr[:0]), j.payload)
}

// read walks the data objects and sends their blocks, taking over the
// digests of files whose size and mtime did not change.
func (p *pipeline) read(src *source, cat *format.Catalog, prevByID map[uint64]*format.Object, o Options,
	bufs, outs chan []byte, jobs chan<- *job, st *pipelineStats) error {
	var seq uint64
	send := func(j *job) error {
		j.seq = seq
		seq++
		select {
		case jobs <- j:
			return nil
		case <-p.ctx.Done():
			recycle(j, bufs, outs)
			return p.ctx.Err()
		}
	}
	for i := range cat.Objects {
		obj := &cat.Objects[i]
		if !obj.HasData() {
			continue
		}
		po := prevByID[obj.ID]
		if po != nil && !o.FullScan && sameFile(obj, po) {
			obj.Digests = po.Digests
			continue
		}
		nb := format.Blocks(obj.Size, o.BlockSize)
		obj.Digests = make([]format.Digest, nb)
		if nb == 0 {
			continue
		}
		f, err := src.open(obj)
		if err != nil {
			if isNotExist(err) {
				if err := send(&job{obj: i, end: true, vanished: true}); err != nil {
					return err
				}
				continue
			}
			return fmt.Errorf("read %s: %w", obj.Path, err)
		}
		err = func() error {
			defer f.Close()
			for b := uint64(0); b < nb; b++ {
				var buf, out []byte
				select {
				case buf = <-bufs:
				case <-p.ctx.Done():
					return p.ctx.Err()
				}
				out = <-outs // outs is refilled with bufs, one for one
				want := format.BlockLen(obj.Size, o.BlockSize, b)
				off := int64(b) * int64(o.BlockSize)
				n, err := readBlock(f, buf[:want], off)
				if err != nil {
					bufs <- buf
					outs <- out
					return fmt.Errorf("read %s at offset %d: %w", obj.Path, off, err)
				}
				st.readBytes += int64(n)
				j := &job{obj: i, objID: obj.ID, block: b, buf: buf, out: out, plain: buf[:n]}
				if po != nil && b < uint64(len(po.Digests)) {
					j.prev = &po.Digests[b]
				}
				if n < int(want) {
					// The file shrank since it was scanned: keep what was
					// read and record the new size, as if scanned now.
					if n > 0 {
						if err := send(j); err != nil {
							return err
						}
					} else {
						recycle(j, bufs, outs)
					}
					return send(&job{obj: i, end: true, finalSize: uint64(off) + uint64(n)})
				}
				if err := send(j); err != nil {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	return nil
}
