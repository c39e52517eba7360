package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferrybackup/ferry/internal/backup"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/pki"
)

// errNoCache is returned for a WAN cache operation on a target without one.
var errNoCache = errors.New("this target agent has no WAN cache (add a wan_cache block to its configuration)")

// seedBatch is how many digests are looked up in the cache at once.
const seedBatch = 256

// SeedWanCache puts the blocks of a point of a backup this target holds
// into its WAN cache, so that WAN copies of the same data (from any
// source) need not send them. An encrypted backup is opened with the keys
// the controller hands over for this call only; each block is checked
// against its digest before it is cached.
func (t *Target) SeedWanCache(ctx context.Context, req *targetv1.SeedWanCacheRequest) (*targetv1.SeedWanCacheResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	if t.WANCache == nil {
		return nil, toStatus(fmt.Errorf("%w: %w", errBadRequest, errNoCache))
	}
	start := time.Now()
	r, err := t.repo(req.Repository)
	if err != nil {
		return nil, toStatus(err)
	}
	kr, err := keyringFrom(req.Keys)
	if err != nil {
		return nil, toStatus(err)
	}
	w, err := backup.OpenBlocks(r.Repo, req.Backup, fmt.Sprintf("%x", req.PointId), kr)
	if err != nil {
		return nil, toStatus(err)
	}
	defer w.Close()
	resp := &targetv1.SeedWanCacheResponse{PointId: w.Source.FileID[:], Blocks: int64(w.Len())}
	buf := make([]byte, w.RecordBufferSize())
	scratch := make([]byte, 0, w.Header.BlockSize)
	seen := map[[32]byte]bool{}
	for lo := 0; lo < w.Len(); lo += seedBatch {
		if err := ctx.Err(); err != nil {
			return nil, toStatus(err)
		}
		hi := min(lo+seedBatch, w.Len())
		ds := make([][32]byte, 0, hi-lo)
		for i := lo; i < hi; i++ {
			_, d, _ := w.Block(i)
			ds = append(ds, d)
		}
		have := t.WANCache.HasMany(ds)
		for i := lo; i < hi; i++ {
			_, d, rawLen := w.Block(i)
			if have[i-lo] || seen[d] {
				resp.Already++
				continue
			}
			data, compressed, err := w.ReadBlock(i, buf)
			if err != nil {
				return nil, toStatus(err)
			}
			if err := backup.CheckBlock(data, compressed, rawLen, d, scratch); err != nil {
				return nil, toStatus(fmt.Errorf("%w: block %d of point %x: %v; verify the backup", backup.ErrVerify, i, w.Source.FileID, err))
			}
			if err := t.WANCache.Put(d, data, compressed, int(rawLen)); err != nil {
				return nil, toStatus(err)
			}
			seen[d] = true
			resp.Added++
			resp.AddedBytes += int64(len(data))
		}
	}
	resp.DurationNanos = int64(time.Since(start))
	t.log.Info("seeded the WAN cache", "repository", r.Name, "backup", req.Backup, "point", w.Source.FileID,
		"blocks", resp.Blocks, "already", resp.Already, "added", resp.Added, "bytes", resp.AddedBytes)
	return resp, nil
}
