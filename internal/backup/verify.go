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
	"github.com/ferrybackup/ferry/internal/repo"
)

// VerifyOptions configure a verify.
type VerifyOptions struct {
	// Point limits the verify to the chain of one point, from its full up
	// to it; empty verifies every chain of the backup.
	Point string
	// Keyless checks structure, record checksums and the footer hash with
	// no key at all. Otherwise every record and catalog is opened and
	// every block's digest checked against the catalog.
	Keyless bool
	Keys    *keyring.Keyring
	Workers int
}

// VerifyResult says what was checked and what was wrong.
type VerifyResult struct {
	Files    int
	Records  int
	Bytes    int64 // plaintext bytes checked (full) or record bytes read (keyless)
	Problems []string
	Duration time.Duration
}

// ErrVerify is returned when a verify found problems.
var ErrVerify = errors.New("verify found problems")

// Verify checks the files of a backup. A nil error means every checked
// file is intact; otherwise the result lists each problem with the file
// and offset, and the error wraps ErrVerify (or says why nothing could be
// checked).
func Verify(ctx context.Context, r *repo.Repo, backup string, o VerifyOptions) (*VerifyResult, error) {
	start := time.Now()
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Keys == nil {
		o.Keys = keyring.New()
	}
	ix, err := r.Index(backup)
	if err != nil {
		return nil, err
	}
	type span struct {
		c *repo.Chain
		p *repo.Point
	}
	var spans []span
	if o.Point != "" {
		p, c, err := ix.Find(o.Point)
		if err != nil {
			return nil, err
		}
		spans = append(spans, span{c, p})
	} else {
		for i := range ix.Chains {
			c := &ix.Chains[i]
			if len(c.Points) == 0 {
				continue
			}
			spans = append(spans, span{c, &c.Points[len(c.Points)-1]})
		}
		if len(spans) == 0 {
			return nil, fmt.Errorf("backup %s: %w (it has no restore points)", backup, repo.ErrNoPoint)
		}
	}
	res := &VerifyResult{}
	for _, s := range spans {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var kr *keyring.Keyring
		if !o.Keyless {
			kr = o.Keys
		}
		files, err := openChain(r, backup, s.c, s.p, kr)
		if err != nil {
			if errors.Is(err, keyring.ErrWrongPassword) || errors.Is(err, keyring.ErrNeedKey) {
				return nil, err // not a damaged file: the user must act
			}
			res.Problems = append(res.Problems, err.Error())
			// Check the files one by one so every damaged one is named.
			for qi := range s.c.Points {
				q := &s.c.Points[qi]
				if q.Sequence > s.p.Sequence {
					break
				}
				if q.Damaged != "" {
					continue // already named by the chain error
				}
				res.Problems = append(res.Problems, verifyLone(r, backup, q, kr, o, res)...)
			}
			continue
		}
		// stored grows file by file: what the chain holds up to each point.
		stored := map[format.BlockKey]loc{}
		for i, cf := range files {
			res.Files++
			cat, problems := verifyFile(ctx, cf, o, res)
			res.Problems = append(res.Problems, problems...)
			for ei := range cf.f.Entries {
				stored[cf.f.Entries[ei].Key()] = loc{int32(i), int32(ei)}
			}
			if cat != nil {
				if err := checkResolvable(cat, stored, cf); err != nil {
					res.Problems = append(res.Problems, err.Error())
				}
			}
		}
		closeChain(files)
	}
	res.Duration = time.Since(start)
	if len(res.Problems) > 0 {
		return res, fmt.Errorf("backup %s: %w: %d", backup, ErrVerify, len(res.Problems))
	}
	return res, nil
}

// verifyLone checks one file of a chain that did not open as a whole.
func verifyLone(r *repo.Repo, backup string, q *repo.Point, kr *keyring.Keyring, o VerifyOptions, res *VerifyResult) []string {
	f, fd, err := format.OpenPath(r.Path(backup, q))
	if err != nil {
		return []string{err.Error()}
	}
	defer fd.Close()
	cf := &chainFile{point: q, f: f, fd: fd}
	if kr != nil && f.Header.Encrypted() {
		if cf.sessions, err = kr.Open(f); err != nil {
			return []string{err.Error()}
		}
	}
	res.Files++
	_, problems := verifyFile(context.Background(), cf, o, res)
	return problems
}

// verifyFile checks every record of one file and, unless keyless, opens
// it and compares its digest with the file's own catalog, which it
// returns (nil when keyless or unreadable).
func verifyFile(ctx context.Context, cf *chainFile, o VerifyOptions, res *VerifyResult) (*format.Catalog, []string) {
	var cat map[format.BlockKey]*format.Digest
	var c *format.Catalog
	if !o.Keyless {
		var err error
		if c, err = cf.f.Catalog(cf.meta()); err != nil {
			return nil, []string{err.Error()}
		}
		cat = map[format.BlockKey]*format.Digest{}
		for i := range c.Objects {
			obj := &c.Objects[i]
			for b := range obj.Digests {
				cat[format.BlockKey{Object: obj.ID, Block: uint64(b)}] = &obj.Digests[b]
			}
		}
	}
	var (
		mu       sync.Mutex
		problems []string
		wg       sync.WaitGroup
	)
	entries := make(chan int, 2*o.Workers)
	bs := cf.f.Header.BlockSize
	for range o.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op := &opener{sessions: cf.sessions}
			rec := make([]byte, format.RecordHeaderSize+bs+format.TagSize)
			dst := make([]byte, bs)
			scratch := make([]byte, bs+format.TagSize)
			for i := range entries {
				e := &cf.f.Entries[i]
				n, err := verifyRecord(cf, e, op, cat, rec, dst, scratch, o.Keyless)
				mu.Lock()
				if err != nil {
					problems = append(problems, err.Error())
				} else {
					res.Records++
					res.Bytes += int64(n)
				}
				mu.Unlock()
			}
		}()
	}
	for i := range cf.f.Entries {
		if ctx.Err() != nil {
			break
		}
		entries <- i
	}
	close(entries)
	wg.Wait()
	return c, problems
}

func verifyRecord(cf *chainFile, e *format.MapEntry, op *opener, cat map[format.BlockKey]*format.Digest, rec, dst, scratch []byte, keyless bool) (int, error) {
	rh, payload, err := cf.f.ReadRecord(e, rec)
	if err != nil {
		return 0, err
	}
	if keyless {
		return int(e.Length), nil
	}
	want := cat[e.Key()]
	if want == nil && cf.f.Header.Kind == format.KindMerged {
		// A merge without the point's extents (repo.Merge) carries over
		// records of blocks the point no longer has: dead weight that no
		// restore reads, with no digest left to check them against.
		return 0, nil
	}
	if want == nil {
		return 0, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordHeader, Offset: e.Offset,
			Reason: fmt.Sprintf("%s is not in the file's catalog", e)}
	}
	plain, err := op.open(cf.f, e, &rh, payload, dst, scratch)
	if err != nil {
		return 0, err
	}
	if digest(plain) != *want {
		return 0, &format.CorruptError{File: cf.f.Name, Region: format.RegionRecordPayload, Offset: e.Offset + format.RecordHeaderSize,
			Reason: fmt.Sprintf("%s does not match its digest in the catalog", e)}
	}
	return len(plain), nil
}
