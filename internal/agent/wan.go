package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"github.com/ferrybackup/ferry/internal/telemetry"
	"github.com/ferrybackup/ferry/internal/wancache"
	"io"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/grant"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transfer"
)

// WAN mode, agent side. The target holds the session key of a WAN session
// in memory only, from the controller's PrepareWanSession until the
// transfer commits, fails without a chance to resume, or the grant
// expires. Without a WAN cache (no wan_cache block) WAN sessions still
// run: blocks unchanged since the chain's previous point are not sent (as
// in default mode) and the rest is sent compressed, but nothing is deduped
// across sessions or sources.

// wanKey is the session key of one WAN session.
type wanKey struct {
	grant    []byte // the grant it was handed over with
	sess     *keys.Session
	attempts uint32 // transfers started: the nonce prefix of the next is attempts+1
	timer    *time.Timer
}

// PrepareWanSession takes the session key of a WAN session from the
// controller.
func (t *Target) PrepareWanSession(ctx context.Context, req *targetv1.PrepareWanSessionRequest) (*targetv1.PrepareWanSessionResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	t.mu.RLock()
	g, err := grant.Verify(t.grantKeys, req.Grant, req.GrantSignature, t.now())
	t.mu.RUnlock()
	if err != nil {
		return nil, toStatus(err)
	}
	if !g.Wan {
		return nil, toStatus(fmt.Errorf("%w: session %s is not a WAN session: a target takes keys only for WAN sessions", grant.ErrInvalid, g.SessionId))
	}
	sess, err := sessionKey(req.Key)
	if err != nil {
		return nil, toStatus(err)
	}
	if sess == nil {
		return nil, toStatus(fmt.Errorf("%w: no session key", errBadRequest))
	}
	t.mu.Lock()
	if t.wan == nil {
		t.wan = map[string]*wanKey{}
	}
	if old := t.wan[g.SessionId]; old != nil {
		same := bytes.Equal(old.grant, req.Grant) && old.sess.ID() == sess.ID()
		t.mu.Unlock()
		if !same {
			return nil, toStatus(fmt.Errorf("%w: session %s has another key already", errBadRequest, g.SessionId))
		}
		return &targetv1.PrepareWanSessionResponse{Cache: t.WANCache != nil}, nil
	}
	wk := &wanKey{grant: bytes.Clone(req.Grant), sess: sess}
	wk.timer = time.AfterFunc(time.Until(time.Unix(g.ExpiresUnix, 0)), func() { t.dropWANKey(g.SessionId, wk) })
	t.wan[g.SessionId] = wk
	t.mu.Unlock()
	t.log.Info("holding the key of a WAN session until it commits or its grant expires", "session", g.SessionId, "job", g.Job, "wan_cache", t.WANCache != nil)
	return &targetv1.PrepareWanSessionResponse{Cache: t.WANCache != nil}, nil
}

// dropWANKey forgets a session's key (only wk, when given).
func (t *Target) dropWANKey(session string, wk *wanKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.wan[session]; cur != nil && (wk == nil || cur == wk) {
		cur.timer.Stop()
		delete(t.wan, session)
	}
}

// wanAttempt returns the key handed over for a WAN grant (nil when none:
// an unencrypted copy) and the nonce prefix of this transfer attempt.
func (t *Target) wanAttempt(g *targetv1.Grant, grantMsg []byte) (*keys.Session, uint32, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	wk := t.wan[g.SessionId]
	if wk == nil {
		return nil, 1, nil
	}
	if !bytes.Equal(wk.grant, grantMsg) {
		return nil, 0, fmt.Errorf("%w: the key of session %s was handed over with another grant", grant.ErrInvalid, g.SessionId)
	}
	wk.attempts++
	return wk.sess, wk.attempts, nil
}

// receiveWAN runs a WAN-mode transfer after the accept. It says whether
// the file was committed, or the transfer is worth parking for a resume.
func (t *Target) receiveWAN(stream targetv1.TargetService_TransferServer, rc *transfer.Receiver, g *targetv1.Grant, sess *keys.Session, prefix uint32, log hclog.Logger) (committed, park bool, err error) {
	defer func() {
		if !committed && !park {
			t.dropWANKey(g.SessionId, nil)
		}
	}()
	cache := t.WANCache
	wr, err := transfer.NewWANReceiver(rc, sess, prefix, cache)
	if err != nil {
		return false, false, err
	}
	if cache == nil {
		log.Info("no wan_cache configured: this WAN session dedupes only against the chain's previous point")
	}
	start := time.Now()
	msgs, recvErr := receive(stream, 8, true) // refetched blocks may follow the finish
	p, err := wr.Run(msgs, stream.Send, t.DurabilityInterval)
	if err != nil {
		var se *transfer.SendError
		switch {
		case errors.As(err, &se):
			return false, true, err
		case errors.Is(err, transfer.ErrStreamEnded):
			if rerr := <-recvErr; rerr != nil && !errors.Is(rerr, io.EOF) {
				return false, linkCut(rerr), rerr
			}
			return false, false, fmt.Errorf("%w: the stream ended before the file was finished", transfer.ErrRefused)
		}
		return false, false, err
	}
	t.dropWANKey(g.SessionId, nil)
	log.Info("backup file committed", "point", p.FileID, "sequence", p.Sequence, "records", rc.Records, "bytes", p.Size,
		"cache_hit_blocks", wr.Stats.CacheHitBlocks, "blocks_refetched", wr.Stats.BlocksRefetched, "cache_put_errors", wr.CachePutErrors)
	st := proto.Clone(&wr.Stats).(*commonv1.SessionStats)
	st.BytesWritten, st.Records, st.DurationNanos = p.Size, int64(rc.Records), int64(time.Since(start))
	t.Metrics.WANCacheLookup(int(wr.Stats.CacheHitBlocks), rc.Records-int(wr.Stats.CacheHitBlocks))
	t.Metrics.AddBytes(telemetry.StageWritten, g.Job, p.Size)
	if c, ok := t.WANCache.(interface{ Stats() wancache.Stats }); ok {
		t.Metrics.SetWANCacheBytes(c.Stats().Bytes)
	}
	err = stream.Send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Committed{Committed: &targetv1.TransferCommitted{
		FileId: g.FileId, Size: p.Size, Stats: st,
	}}})
	return true, false, err
}

// WANResult is what a WAN-mode copy did.
type WANResult struct {
	Source   *repo.Point
	Kind     format.Kind
	Stats    *commonv1.SessionStats // BytesRead, BytesSent and the WAN counters
	Duration time.Duration
	// Resumed lists the entries the target held at each resumed attempt.
	Resumed []int
}

// SendCopyWAN copies a point to a target agent in WAN mode (spec has no
// session key: the target seals the file) and returns once the target has
// committed it. A cut link is resumed under the same grant, as SendCopy
// does. progress, when set, is called with the plaintext bytes handled so
// far and in all.
func SendCopyWAN(ctx context.Context, client targetv1.TargetServiceClient, r *repo.Repo, backupName string, spec backup.CopySpec, grantMsg, grantSig []byte, progress func(done, total int64)) (*WANResult, *targetv1.TransferCommitted, error) {
	start := time.Now()
	g := &targetv1.Grant{}
	if err := proto.Unmarshal(grantMsg, g); err != nil {
		return nil, nil, fmt.Errorf("grant: %w", err)
	}
	expires := time.Unix(g.ExpiresUnix, 0)
	if spec.Created.IsZero() {
		spec.Created = time.Now().UTC() // every attempt sends the same header
	}
	wc, err := backup.OpenWAN(r, backupName, spec)
	if err != nil {
		return nil, nil, err
	}
	defer wc.Close()
	ws := transfer.NewWANSession(wc, wc.HeaderBytes, wc.KeyTableBytes, wc.Catalog)
	if spec.Workers > 0 {
		ws.Workers = spec.Workers
	}
	if progress != nil {
		total := ws.Stats().PlainBytes
		progress(0, total)
		ws.Progress = func(done int64) { progress(done, total) }
	}
	wait := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		before := ws.Stats().WireBytesSent
		err := wanOnce(ctx, client, ws, grantMsg, grantSig, attempt > 0)
		if ws.Stats().WireBytesSent > before+int64(len(wc.HeaderBytes)+len(wc.KeyTableBytes)+len(grantMsg)+1024) {
			wait = 100 * time.Millisecond // it made progress: try again soon
		}
		if err == nil {
			st := ws.Stats()
			st.BytesRead, st.BytesSent = wc.ReadBytes(), st.WireBytesSent
			st.BytesWritten, st.Records = ws.Committed.GetSize(), ws.Committed.GetStats().GetRecords()
			return &WANResult{Source: wc.Source, Kind: wc.Kind, Stats: st, Duration: time.Since(start), Resumed: ws.Resumed}, ws.Committed, nil
		}
		if !linkError(err) || ctx.Err() != nil {
			return nil, nil, err
		}
		if time.Now().Add(wait).After(expires) {
			return nil, nil, fmt.Errorf("the link to the target kept failing until the session's grant expired: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func wanOnce(ctx context.Context, client targetv1.TargetServiceClient, ws *transfer.WANSession, grantMsg, grantSig []byte, resume bool) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if the attempt fails part-way
	stream, err := client.Transfer(ctx)
	if err != nil {
		return fmt.Errorf("open transfer to target: %w", err)
	}
	return ws.Send(ctx, stream, grantMsg, grantSig, resume)
}

// copyWAN runs a WAN-mode Copy request on the source agent.
func (s *Source) copyWAN(ctx context.Context, req *sourcev1.CopyRequest, stream sourcev1.SourceService_CopyServer, r *Repository, spec backup.CopySpec, client targetv1.TargetServiceClient) (*sourcev1.SessionEvent, error) {
	var done, total atomic.Int64
	stop := s.progress(&done, 0, func(e *sourcev1.SessionEvent) error {
		e.TotalBytes = total.Load() // plaintext of the new file's blocks, known once the point is open
		return stream.Send(&sourcev1.CopyResponse{Event: e})
	})
	res, committed, err := SendCopyWAN(ctx, client, r.Repo, req.Backup, spec, req.Grant, req.GrantSignature, func(n, all int64) { done.Store(n); total.Store(all) })
	stop()
	if err != nil {
		return nil, err
	}
	kind := commonv1.PointKind_POINT_KIND_FULL
	if res.Kind == format.KindIncremental {
		kind = commonv1.PointKind_POINT_KIND_INCREMENTAL
	}
	st := res.Stats
	st.DurationNanos = int64(res.Duration)
	s.log.Info("wan copy negotiated", "session", req.SessionId, "job", req.Job, "blocks", st.Blocks, "blocks_sent", st.BlocksSent,
		"cache_hit_blocks", st.CacheHitBlocks, "wire_bytes_sent", st.WireBytesSent, "block_bytes_sent", st.BlockBytesSent)
	return &sourcev1.SessionEvent{
		Done: true,
		Point: &commonv1.Point{
			Backup: req.TargetBackup, FileId: req.FileId, BackupId: req.BackupId, ChainId: req.ChainId, ParentId: req.ParentId,
			Sequence: req.Sequence, Kind: kind, Encrypted: len(spec.KeyTable.Entries) > 0, BlockSize: res.Source.BlockSize,
			CreatedUnixNano: time.Now().UnixNano(), Size: committed.Size, PlainBytes: res.Source.PlainBytes,
		},
		Stats: st,
	}, nil
}
