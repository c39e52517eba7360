package controller

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ferrybackup/ferry/internal/telemetry"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferrybackup/ferry/internal/catalog"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
)

const (
	resultRunning = "running"
	resultSuccess = "success"
	resultFailed  = "failed"
)

func resultProto(r string) controllerv1.SessionResult {
	switch r {
	case resultRunning:
		return controllerv1.SessionResult_SESSION_RESULT_RUNNING
	case resultSuccess:
		return controllerv1.SessionResult_SESSION_RESULT_SUCCESS
	case resultFailed:
		return controllerv1.SessionResult_SESSION_RESULT_FAILED
	}
	return controllerv1.SessionResult_SESSION_RESULT_UNSPECIFIED
}

// liveSession is a running session: its record, updated as the agent
// reports progress, and a channel closed when it ends.
type liveSession struct {
	mu    sync.Mutex
	sess  catalog.Session
	total int64
	point *commonv1.Point
	done  chan struct{}
}

func (ls *liveSession) snapshot() (catalog.Session, int64, *commonv1.Point) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.sess, ls.total, ls.point
}

func (ls *liveSession) progress(st *commonv1.SessionStats, total int64) {
	if st == nil {
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.sess.BytesRead, ls.sess.BytesSent, ls.sess.BytesWritten, ls.sess.Records = st.BytesRead, st.BytesSent, st.BytesWritten, st.Records
	if w := wanStats(st); w != nil {
		ls.sess.WAN = w
	}
	if total > 0 {
		ls.total = total
	}
}

func sessionProto(sess catalog.Session, pt *commonv1.Point) *controllerv1.Session {
	kind := controllerv1.JobKind_JOB_KIND_BACKUP
	if sess.Kind == kindCopy {
		kind = controllerv1.JobKind_JOB_KIND_COPY
	}
	out := &controllerv1.Session{
		Id: sess.ID, Job: sess.Job, Kind: kind, Mode: sess.Mode, Result: resultProto(sess.Result), Error: sess.Error,
		StartedUnixNano: sess.StartedAt.UnixNano(),
		Stats:           &commonv1.SessionStats{BytesRead: sess.BytesRead, BytesSent: sess.BytesSent, BytesWritten: sess.BytesWritten, Records: sess.Records},
		Point:           pt,
		Notes:           sess.Notes,
	}
	end := time.Now()
	if !sess.EndedAt.IsZero() {
		out.EndedUnixNano = sess.EndedAt.UnixNano()
		end = sess.EndedAt
	}
	out.Stats.DurationNanos = int64(end.Sub(sess.StartedAt))
	fillWANStats(out.Stats, sess.WAN)
	return out
}

func newFileID() format.ID {
	var id format.ID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err)
	}
	return id
}

// RunJob starts a session of a job; with wait it reports progress until
// the session ends.
func (s *Server) RunJob(req *controllerv1.RunJobRequest, stream controllerv1.ControllerService_RunJobServer) error {
	if err := requireClient(stream.Context()); err != nil {
		return err
	}
	j, err := s.job(req.Name)
	if err != nil {
		return toStatus(err)
	}
	var ls *liveSession
	switch {
	case req.HealthCheck || req.HealthCheckFull:
		if j.Kind != kindCopy {
			return toStatus(invalidf("job %s is a backup job; health checks are for copy jobs (use `controller verify` for any job)", j.Name))
		}
		mode := sessHealthKeyless
		if req.HealthCheckFull {
			mode = sessHealthFull
		}
		ls, err = s.startMode(j, false, mode)
	default:
		ls, err = s.start(j, req.Full)
	}
	if err != nil {
		return toStatus(err)
	}
	for {
		sess, total, pt := ls.snapshot()
		if err := stream.Send(&controllerv1.RunJobResponse{Session: sessionProto(sess, pt), TotalBytes: total}); err != nil {
			return err
		}
		if !req.Wait || sess.Result != resultRunning {
			return nil
		}
		select {
		case <-ls.done:
		case <-time.After(500 * time.Millisecond):
		case <-stream.Context().Done():
			return nil // the session goes on without its watcher
		}
	}
}

// start records a new session and runs it in the background.
func (s *Server) start(j catalog.Job, full bool) (*liveSession, error) {
	return s.startMode(j, full, sessionMode(j))
}

// sessionMode is the mode of a job's ordinary sessions.
func sessionMode(j catalog.Job) string {
	if j.Kind == kindCopy && j.WAN {
		return sessWAN
	}
	return "default"
}

// startMode starts a session in a mode: "default", or a health check.
// A job never runs two sessions at once.
func (s *Server) startMode(j catalog.Job, full bool, mode string) (*liveSession, error) {
	return s.startIf(j, full, mode, nil)
}

// startIf is startMode that starts nothing (nil, nil) when, checked once
// the job is known to be idle, says so: a session that ended records its
// point before the job is idle, so when sees the catalog as it will be.
func (s *Server) startIf(j catalog.Job, full bool, mode string, when func() bool) (*liveSession, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.running[j.UID]; ok {
		sess, _, _ := cur.snapshot()
		return nil, fmt.Errorf("%w: job %s is running already (session %s)", errBusy, j.Name, sess.ID)
	}
	if when != nil && !when() {
		return nil, nil
	}
	ls := &liveSession{done: make(chan struct{}), sess: catalog.Session{
		ID: catalog.NewID(), Job: j.Name, JobUID: j.UID, Kind: j.Kind, Mode: mode, Result: resultRunning,
		StartedAt: time.Now().UTC(),
	}}
	if err := s.store.PutSession(ls.sess); err != nil {
		return nil, err
	}
	s.running[j.UID] = ls
	s.sessions[ls.sess.ID] = ls
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.run(ls, j, full)
	}()
	return ls, nil
}

func (s *Server) run(ls *liveSession, j catalog.Job, full bool) {
	log := s.log.With("session", ls.sess.ID, "job", j.Name)
	log.Info("session started", "kind", j.Kind)
	metricKind := j.Kind
	if isHealthCheck(ls.sess) {
		metricKind = telemetry.KindHealth
	}
	tracked := s.o.Metrics.TrackSession(metricKind)
	// Bring the catalog in line with the job's agent first: a point an
	// earlier session committed while this controller lost track of it
	// (an agent killed before it answered) becomes the parent it is.
	if notes := s.reconcileJob(s.ctx, j, log); len(notes) > 0 {
		ls.mu.Lock()
		ls.sess.Notes = append(ls.sess.Notes, notes...)
		ls.mu.Unlock()
	}
	var (
		pt     *catalog.Point
		secret catalog.SessionSecret
		err    error
	)
	switch {
	case isHealthCheck(ls.sess):
		err = s.runHealthCheck(s.ctx, ls, j)
	case j.Kind == kindBackup:
		pt, secret, err = s.runBackup(s.ctx, ls, j, full)
	case j.Kind == kindCopy:
		pt, secret, err = s.runCopy(s.ctx, ls, j, full)
	}
	// The final state is recorded first and shown to watchers last, once
	// the job is free again: a client that sees the result may start the
	// next session at once.
	sess, _, _ := ls.snapshot()
	sess.EndedAt = time.Now().UTC()
	tracked(err)
	s.o.Metrics.AddBytes(telemetry.StageRead, j.Name, sess.BytesRead)
	s.o.Metrics.AddBytes(telemetry.StageSent, j.Name, sess.BytesSent)
	s.o.Metrics.AddBytes(telemetry.StageWritten, j.Name, sess.BytesWritten)
	if err != nil {
		sess.Result, sess.Error = resultFailed, err.Error()
	} else {
		sess.Result = resultSuccess
	}

	var cerr error
	if err == nil && pt != nil {
		cerr = s.store.Update(func(tx *catalog.Tx) error {
			if err := tx.CommitSession(sess, *pt, secret); err != nil {
				return err
			}
			cur, err := tx.GetJob(j.Name)
			if err != nil || cur.UID != j.UID {
				return nil // deleted meanwhile; its point is recorded
			}
			cur.NewChainPending = false
			cur.ChainID, cur.BackupID = pt.ChainID, pt.BackupID
			_, err = tx.PutJob(cur)
			return err
		})
	} else {
		cerr = s.store.PutSession(sess)
	}
	if cerr != nil {
		log.Error("recording the session failed", "error", cerr)
	}
	// Retention runs inside the session, so no other session of the job
	// starts while the target merges.
	// A session with nothing new to copy still catches up a merge an
	// earlier one could not finish.
	if err == nil && cerr == nil && j.Kind == kindCopy && !isHealthCheck(sess) {
		chain := s.retentionChain(j, pt)
		notes := append(s.applyRetention(s.ctx, j, chain, log), s.applyGFS(s.ctx, j, chain, log)...)
		if len(notes) > 0 {
			sess.Notes = append(sess.Notes, notes...)
			if err := s.store.PutSession(sess); err != nil {
				log.Error("recording the session failed", "error", err)
			}
		}
	}
	switch {
	case err != nil:
		log.Warn("session failed", "error", err)
	case pt != nil:
		log.Info("session succeeded", "point", hex.EncodeToString(pt.FileID), "kind", pt.Kind, "sequence", pt.Sequence)
	case isHealthCheck(sess):
		log.Info("health check passed", "mode", sess.Mode)
	default:
		log.Info("session succeeded: nothing new to copy")
	}
	s.mu.Lock()
	delete(s.running, j.UID)
	delete(s.sessions, sess.ID)
	s.mu.Unlock()
	ls.mu.Lock()
	ls.sess = sess
	ls.mu.Unlock()
	close(ls.done)
	if err == nil && pt != nil {
		s.afterPoint(j)
	}
}

// latest returns the newest point of a list, or nil.
func latest(pts []catalog.Point) *catalog.Point {
	var out *catalog.Point
	for i := range pts {
		if out == nil || pts[i].Created.After(out.Created) {
			out = &pts[i]
		}
	}
	return out
}

// newKey is a new session secret with its wrapped forms.
type newKey struct {
	sess     *keys.Session
	keyTable []byte // the file's key table section
	wrapped  string // the Transit ciphertext, for KMS jobs
}

// sessionKey makes a new session secret for a job's next file and wraps
// it under the job's secret key: the password-derived key, or the Vault
// Transit key (one Vault request). It returns a zero newKey for an
// unencrypted job.
func (s *Server) sessionKey(ctx context.Context, j catalog.Job) (newKey, error) {
	var nk newKey
	if j.Encryption == encNone {
		return nk, nil
	}
	sess, err := keys.NewSession()
	if err != nil {
		return nk, err
	}
	nk.sess = sess
	var kt format.KeyTable
	switch j.Encryption {
	case encKMS:
		if s.o.Transit == nil {
			return nk, fmt.Errorf("job %s uses KMS encryption but the controller has no Vault configured", j.Name)
		}
		if err := s.o.Transit.CheckKey(ctx, j.KMSKey); err != nil {
			return nk, err
		}
		w, err := s.o.Transit.Wrap(ctx, j.KMSKey, [][]byte{sess.Secret()})
		if err != nil {
			return nk, err
		}
		nk.wrapped = w[0]
		te := keys.TransitEntry{Mount: s.o.Transit.Mount(), Namespace: s.o.Transit.Namespace(), Key: j.KMSKey, Ciphertext: w[0]}
		kt = format.KeyTable{Generation: 1, Entries: []format.KeyEntry{{Secret: sess.ID(), Type: format.EntryTransit, Data: te.Marshal()}}}
	default:
		pk, err := s.passwordKey(j)
		if err != nil {
			return nk, err
		}
		if kt, err = keyring.PasswordTable(pk, sess); err != nil {
			return nk, err
		}
	}
	if s.o.Recovery != nil {
		sealed, err := s.o.Recovery.Seal(sess)
		if err != nil {
			return nk, err
		}
		kt.Entries = append(kt.Entries, format.KeyEntry{Secret: sess.ID(), Type: format.EntryRecovery, Data: sealed})
	}
	if nk.keyTable, err = format.MarshalKeyTable(&kt, format.KeyTableCapFor(&kt)); err != nil {
		return nk, err
	}
	return nk, nil
}

// passwordKey rebuilds a password job's current secret key from its key
// record (the sealed Argon2id output with its parameters and salt).
func (s *Server) passwordKey(j catalog.Job) (*keys.PasswordKey, error) {
	rec, raw, err := s.store.GetKeyRecord(j.KeyID)
	if err != nil {
		return nil, fmt.Errorf("job %s: its key: %w", j.Name, err)
	}
	if len(rec.Salt) != 16 {
		return nil, fmt.Errorf("job %s: key record %s has no salt", j.Name, rec.ID)
	}
	return keys.PasswordKeyFromRaw(keys.KDFParams{Time: rec.KDFTime, Memory: rec.KDFMemory, Threads: rec.KDFThreads}, [16]byte(rec.Salt), rec.Hint, raw)
}

func protoKey(sess *keys.Session) *commonv1.SessionKey {
	if sess == nil {
		return nil
	}
	id := sess.ID()
	return &commonv1.SessionKey{KeyId: id[:], Secret: sess.Secret()}
}

// secretsOf returns the session secrets of a job's files (only of those
// for which keep says so, when it is not nil), as the keys an agent needs
// to read them: sealed ones from the catalog, Transit-wrapped ones
// unwrapped by Vault in one request per Transit key.
func (s *Server) secretsOf(ctx context.Context, jobUID string, keep func(catalog.Point) bool) ([]*commonv1.SessionKey, error) {
	pts, err := s.store.ListAllPoints(jobUID)
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, p := range pts {
		if len(p.MergedInto) == 0 && (keep == nil || keep(p)) {
			wanted[string(p.FileID)] = true
		}
	}
	// A point retention merged away lends its secret to the merged file.
	for _, p := range pts {
		if len(p.MergedInto) > 0 && wanted[string(p.MergedInto)] {
			wanted[string(p.FileID)] = true
		}
	}
	byKey := map[string][]catalog.Point{}
	for _, p := range pts {
		if wanted[string(p.FileID)] && p.Wrapped != "" {
			byKey[p.WrappedKey] = append(byKey[p.WrappedKey], p)
		}
	}
	ss, err := s.store.ListSessionSecrets(jobUID)
	if err != nil {
		return nil, err
	}
	var out []*commonv1.SessionKey
	for _, sec := range ss {
		if wanted[string(sec.FileID)] {
			out = append(out, &commonv1.SessionKey{KeyId: sec.KeyID, Secret: []byte(sec.Secret)})
		}
	}
	for key, kp := range byKey {
		if s.o.Transit == nil {
			return nil, fmt.Errorf("points of this job are wrapped by Vault Transit key %q, and the controller has no Vault configured", key)
		}
		wrapped := make([]string, len(kp))
		for i, p := range kp {
			wrapped[i] = p.Wrapped
		}
		plain, err := s.o.Transit.Unwrap(ctx, key, wrapped)
		if err != nil {
			return nil, err
		}
		for _, secret := range plain {
			sess, err := keys.SessionFromSecret(secret)
			if err != nil {
				return nil, err
			}
			out = append(out, protoKey(sess))
		}
	}
	return out, nil
}

func kindName(k commonv1.PointKind) string {
	if k == commonv1.PointKind_POINT_KIND_INCREMENTAL {
		return "incremental"
	}
	return "full"
}

func (s *Server) pointRecord(j catalog.Job, p *commonv1.Point, agent, repository string) *catalog.Point {
	pt := &catalog.Point{
		Job: j.Name, JobUID: j.UID, FileID: p.FileId, BackupID: p.BackupId, ChainID: p.ChainId, Sequence: p.Sequence,
		Kind: kindName(p.Kind), Created: time.Unix(0, p.CreatedUnixNano).UTC(), Size: p.Size, Encrypted: p.Encrypted,
		Agent: agent, Repository: repository, Backup: j.Name,
	}
	if p.Kind == commonv1.PointKind_POINT_KIND_INCREMENTAL {
		pt.ParentID = p.ParentId
	}
	if p.Encrypted && j.Encryption == encPass {
		pt.KeyRecord = j.KeyID
		pt.KeyRefs = []string{"password key " + shortID(j.KeyID)}
		pt.Hint = j.PasswordHint
	}
	return pt
}

// withKey records how a new point's session secret is kept: sealed in the
// catalog (password jobs) or as Vault wrapped it (KMS jobs).
func (s *Server) withKey(pt *catalog.Point, j catalog.Job, nk newKey) catalog.SessionSecret {
	if nk.sess == nil {
		return catalog.SessionSecret{}
	}
	if nk.wrapped != "" {
		pt.Wrapped, pt.WrappedKey = nk.wrapped, j.KMSKey
		te := keys.TransitEntry{Mount: s.o.Transit.Mount(), Key: j.KMSKey, Ciphertext: nk.wrapped}
		pt.KeyRefs = []string{te.Ref()}
		return catalog.SessionSecret{}
	}
	return secretRecord(pt.FileID, nk.sess)
}

func shortID(s string) string {
	if len(s) > 8 {
		return s[:8]
	}
	return s
}

func secretRecord(fileID []byte, sess *keys.Session) catalog.SessionSecret {
	id := sess.ID()
	return catalog.SessionSecret{FileID: fileID, KeyID: id[:], Secret: sess.Secret()}
}

func (s *Server) runBackup(ctx context.Context, ls *liveSession, j catalog.Job, full bool) (*catalog.Point, catalog.SessionSecret, error) {
	a, err := s.agent(j.Agent, "source")
	if err != nil {
		return nil, catalog.SessionSecret{}, err
	}
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		return nil, catalog.SessionSecret{}, err
	}
	var prev []*commonv1.SessionKey
	if last := latest(pts); last != nil && last.Encrypted {
		prev, err = s.secretsOf(ctx, j.UID, func(p catalog.Point) bool { return bytes.Equal(p.FileID, last.FileID) })
		if err != nil {
			return nil, catalog.SessionSecret{}, fmt.Errorf("the key of the previous point: %w", err)
		}
	}
	nk, err := s.sessionKey(ctx, j)
	if err != nil {
		return nil, catalog.SessionSecret{}, err
	}
	fileID := newFileID()
	ls.mu.Lock()
	ls.sess.FileID, ls.sess.SourceAgent = fileID[:], a.Name
	ls.mu.Unlock()
	c, err := s.sourceClient(a)
	if err != nil {
		return nil, catalog.SessionSecret{}, err
	}
	comp := commonv1.Compression_COMPRESSION_ZSTD
	if j.Compression == "none" {
		comp = commonv1.Compression_COMPRESSION_NONE
	}
	stream, err := c.Backup(ctx, &sourcev1.BackupRequest{
		SessionId: ls.sess.ID, Job: j.Name, Repository: j.Repository, Backup: j.Name, Path: j.Path, BlockSize: j.BlockSize,
		Compression: comp, CompressionLevel: int32(j.CompressionLevel), Key: protoKey(nk.sess), KeyTable: nk.keyTable,
		PreviousKeys: prev, NewChain: j.NewChainPending || full, FileId: fileID[:], AllowUnencrypted: j.Encryption == encNone,
	})
	if err != nil {
		return nil, catalog.SessionSecret{}, agentErr(a, "backup", err)
	}
	var final *sourcev1.SessionEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, catalog.SessionSecret{}, agentErr(a, "backup", err)
		}
		ev := resp.GetEvent()
		ls.progress(ev.GetStats(), ev.GetTotalBytes())
		if ev.GetDone() {
			final = ev
		}
	}
	if final == nil || final.Point == nil || !bytes.Equal(final.Point.FileId, fileID[:]) {
		return nil, catalog.SessionSecret{}, fmt.Errorf("source agent %s ended the backup without reporting the point", a.Name)
	}
	ls.mu.Lock()
	ls.point = final.Point
	ls.sess.Sequence = final.Point.Sequence
	ls.mu.Unlock()
	pt := s.pointRecord(j, final.Point, a.Name, j.Repository)
	return pt, s.withKey(pt, j, nk), nil
}

func (s *Server) runCopy(ctx context.Context, ls *liveSession, j catalog.Job, full bool) (*catalog.Point, catalog.SessionSecret, error) {
	none := catalog.SessionSecret{}
	src, err := s.agent(j.FromAgent, "source")
	if err != nil {
		return nil, none, err
	}
	tgt, err := s.agent(j.ToAgent, "target")
	if err != nil {
		return nil, none, err
	}
	// Checked again here: the repository's policy may have changed since
	// the job was made.
	if err := s.checkTargetRepo(ctx, &j); err != nil {
		return nil, none, err
	}
	srcPts, keysFor, err := s.copySource(ctx, j, src)
	if err != nil {
		return nil, none, err
	}
	p := latest(srcPts)
	if p == nil {
		return nil, none, fmt.Errorf("backup %s has no restore points yet: run its backup job first", j.FromJob)
	}
	mine, err := s.store.ListPoints(j.UID)
	if err != nil {
		return nil, none, err
	}
	last := latest(mine)
	if !full && !j.NewChainPending {
		// Periodic: the latest point; immediate: the next one in order.
		if p = nextToCopy(j, srcPts, mine); p == nil {
			return nil, none, nil // copied already
		}
	}
	day := s.o.Now().UTC().Format(time.DateOnly)
	if !full && last != nil && gfsRotate(j, *last, day) {
		full = true // the first copy of a new GFS week or month: a full
	}
	incremental := last != nil && !full && !j.NewChainPending
	if incremental {
		// An incremental needs the last copied point in the same source
		// chain; after an active full at the source, copy a full too.
		incremental = false
		for _, sp := range srcPts {
			if bytes.Equal(sp.FileID, last.SourceFileID) && bytes.Equal(sp.ChainID, p.ChainID) {
				incremental = true
			}
		}
	}
	srcKeys, err := keysFor(p.ChainID)
	if err != nil {
		return nil, none, fmt.Errorf("the keys of the source backup: %w", err)
	}
	fileID := newFileID()
	backupID := j.BackupID
	if len(backupID) == 0 {
		id := newFileID()
		backupID = id[:]
	}
	req := &sourcev1.CopyRequest{
		SessionId: ls.sess.ID, Job: j.Name, Repository: j.FromRepository, Backup: j.FromJob, PointId: p.FileID, BandwidthBytesPerSec: bandwidthOf(j),
		SourceKeys: srcKeys, FileId: fileID[:], BackupId: backupID, TargetBackup: j.Name, TargetAddress: tgt.Address,
	}
	if incremental {
		req.BasePointId, req.ChainId, req.ParentId, req.Sequence = last.SourceFileID, last.ChainID, last.FileID, last.Sequence+1
	} else {
		c := newFileID()
		req.ChainId, req.Sequence = c[:], 1
	}
	nk, err := s.sessionKey(ctx, j)
	if err != nil {
		return nil, none, err
	}
	req.Key, req.KeyTable = protoKey(nk.sess), nk.keyTable
	if j.WAN {
		// The target seals a WAN copy: the source gets no key, only the
		// key table (wrapped secrets), whose key ids the header lists.
		req.Key, req.Wan = nil, true
	}
	g := &targetv1.Grant{
		SessionId: ls.sess.ID, Job: j.Name, Repository: j.ToRepository, Backup: j.Name, BackupId: backupID,
		ChainId: req.ChainId, FileId: fileID[:], Sequence: req.Sequence, SourceAgent: src.Name,
		ExpiresUnix: time.Now().Add(s.o.GrantTTL).Unix(), Wan: j.WAN,
	}
	if req.Grant, req.GrantSignature, err = s.signer.Sign(g); err != nil {
		return nil, none, err
	}
	tc, err := s.targetClient(tgt)
	if err != nil {
		return nil, none, err
	}
	rctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
	_, err = tc.RegisterController(rctx, &targetv1.RegisterControllerRequest{GrantPublicKey: s.signer.Public()})
	cancel()
	if err != nil {
		return nil, none, agentErr(tgt, "register the controller's grant key", err)
	}
	if j.WAN && nk.sess != nil {
		if err := s.prepareWAN(ctx, tc, tgt, req.Grant, req.GrantSignature, nk.sess); err != nil {
			return nil, none, err
		}
	}
	ls.mu.Lock()
	ls.sess.FileID, ls.sess.Sequence, ls.sess.SourceAgent, ls.sess.TargetAgent = fileID[:], req.Sequence, src.Name, tgt.Name
	ls.total = int64(p.Size)
	ls.mu.Unlock()

	sc, err := s.sourceClient(src)
	if err != nil {
		return nil, none, err
	}
	stream, err := sc.Copy(ctx, req)
	if err != nil {
		return nil, none, agentErr(src, "copy", err)
	}
	var final *sourcev1.SessionEvent
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, none, agentErr(src, "copy", err)
		}
		ev := resp.GetEvent()
		// A WAN copy reports its total (plaintext of the new file's
		// blocks) once it knows it; default mode reports none.
		ls.progress(ev.GetStats(), ev.GetTotalBytes())
		if ev.GetDone() {
			final = ev
		}
	}
	if final == nil || final.Point == nil || !bytes.Equal(final.Point.FileId, fileID[:]) {
		return nil, none, fmt.Errorf("source agent %s ended the copy without reporting the point", src.Name)
	}
	ls.mu.Lock()
	ls.point = final.Point
	ls.mu.Unlock()
	pt := s.pointRecord(j, final.Point, tgt.Name, j.ToRepository)
	pt.SourceFileID, pt.Day = p.FileID, day
	return pt, s.withKey(pt, j, nk), nil
}

// copySource returns the points of the backup a copy job copies, and a
// function giving the session keys of one of its chains: from the catalog
// for a backup job of this controller, or, for a backup it did not make,
// from the source agent's listing and key tables, opened with the job's
// source password or Vault.
func (s *Server) copySource(ctx context.Context, j catalog.Job, src catalog.Agent) ([]catalog.Point, func(chain []byte) ([]*commonv1.SessionKey, error), error) {
	if !j.FromForeign {
		from, err := s.store.GetJob(j.FromJob)
		if err != nil {
			return nil, nil, fmt.Errorf("the backup job %s this job copies is gone", j.FromJob)
		}
		pts, err := s.store.ListPoints(from.UID)
		if err != nil {
			return nil, nil, err
		}
		keysFor := func(chain []byte) ([]*commonv1.SessionKey, error) {
			return s.secretsOf(ctx, from.UID, func(sp catalog.Point) bool { return bytes.Equal(sp.ChainID, chain) })
		}
		return pts, keysFor, nil
	}
	rc, err := s.repoClient(src)
	if err != nil {
		return nil, nil, err
	}
	list, err := rc.ListPoints(ctx, &repositoryv1.ListPointsRequest{Repository: j.FromRepository, Backup: j.FromJob})
	if err != nil {
		return nil, nil, agentErr(src, "list points", err)
	}
	var pts []catalog.Point
	encrypted := map[string]bool{}
	for _, lp := range list.Points {
		if lp.Damaged != "" {
			continue
		}
		pts = append(pts, catalog.Point{FileID: lp.FileId, ChainID: lp.ChainId, Sequence: lp.Sequence,
			Created: time.Unix(0, lp.CreatedUnixNano), Size: lp.Size, Encrypted: lp.Encrypted})
		encrypted[string(lp.ChainId)] = encrypted[string(lp.ChainId)] || lp.Encrypted
	}
	keysFor := func(chain []byte) ([]*commonv1.SessionKey, error) {
		if !encrypted[string(chain)] {
			return nil, nil
		}
		kr := keyring.New()
		if j.SourceKeyID != "" {
			_, pw, err := s.store.GetKeyRecord(j.SourceKeyID)
			if err != nil {
				return nil, err
			}
			kr = keyring.New(pw)
		}
		if s.o.Transit != nil {
			kr.WithTransit(s.o.Transit)
		}
		if kr.Empty() {
			return nil, invalidf("backup %s on %s:%s is encrypted and this controller did not make it: give the copy job --source-password-file or --source-kms-key", j.FromJob, j.FromAgent, j.FromRepository)
		}
		tables, err := rc.GetKeyTables(ctx, &repositoryv1.GetKeyTablesRequest{Repository: j.FromRepository, Backup: j.FromJob})
		if err != nil {
			return nil, agentErr(src, "read key tables", err)
		}
		inChain := map[string]bool{}
		for _, sp := range pts {
			if bytes.Equal(sp.ChainID, chain) {
				inChain[string(sp.FileID)] = true
			}
		}
		var out []*commonv1.SessionKey
		for _, t := range tables.Tables {
			if !inChain[string(t.FileId)] {
				continue
			}
			kt, err := parseTable(t)
			if err != nil {
				return nil, err
			}
			// The key table is all a keyring needs to open a file's secrets.
			h := &format.Header{}
			for _, e := range kt.Entries {
				if !slices.Contains(h.Secrets, e.Secret) {
					h.Secrets = append(h.Secrets, e.Secret)
				}
			}
			sessions, err := kr.Open(&format.File{Name: fmt.Sprintf("%s %x", j.FromJob, t.FileId), Header: h, KeyTable: kt})
			if err != nil {
				return nil, err
			}
			for _, sess := range sessions {
				out = append(out, protoKey(sess))
			}
		}
		return out, nil
	}
	return pts, keysFor, nil
}

// ListSessions lists sessions, of one job or all, newest first.
func (s *Server) ListSessions(ctx context.Context, req *controllerv1.ListSessionsRequest) (*controllerv1.ListSessionsResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	uid := ""
	if req.Job != "" {
		j, err := s.job(req.Job)
		if err != nil {
			return nil, toStatus(err)
		}
		uid = j.UID
	}
	ss, err := s.store.ListSessions(uid)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controllerv1.ListSessionsResponse{}
	for _, sess := range ss {
		resp.Sessions = append(resp.Sessions, s.liveView(sess))
	}
	return resp, nil
}

// liveView shows a running session's progress rather than its start.
func (s *Server) liveView(sess catalog.Session) *controllerv1.Session {
	s.mu.Lock()
	ls := s.sessions[sess.ID]
	s.mu.Unlock()
	if ls != nil {
		cur, _, pt := ls.snapshot()
		return sessionProto(cur, pt)
	}
	return sessionProto(sess, nil)
}

// findSession finds a session by its id or a unique prefix of it.
func (s *Server) findSession(id string) (catalog.Session, error) {
	if id == "" {
		return catalog.Session{}, invalidf("a session id is needed")
	}
	ss, err := s.store.ListSessions("")
	if err != nil {
		return catalog.Session{}, err
	}
	var found []catalog.Session
	for _, sess := range ss {
		if strings.HasPrefix(sess.ID, strings.ToLower(id)) {
			found = append(found, sess)
		}
	}
	switch len(found) {
	case 0:
		return catalog.Session{}, fmt.Errorf("%w: no session %q (see `controller session list`)", errNotFound, id)
	case 1:
		return found[0], nil
	default:
		return catalog.Session{}, invalidf("session id %q is ambiguous", id)
	}
}

// GetSession shows one session; a unique prefix of its id is enough.
func (s *Server) GetSession(ctx context.Context, req *controllerv1.GetSessionRequest) (*controllerv1.GetSessionResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	sess, err := s.findSession(req.Id)
	if err != nil {
		return nil, toStatus(err)
	}
	v := s.liveView(sess)
	if v.Point == nil && len(sess.FileID) > 0 {
		if j, err := s.store.GetJob(sess.Job); err == nil && j.UID == sess.JobUID {
			if pt, err := s.store.GetPoint(j.UID, sess.FileID); err == nil {
				v.Point = pointProto(pt)
			}
		}
	}
	return &controllerv1.GetSessionResponse{Session: v}, nil
}

func pointProto(p catalog.Point) *commonv1.Point {
	kind := commonv1.PointKind_POINT_KIND_FULL
	if p.Kind == "incremental" {
		kind = commonv1.PointKind_POINT_KIND_INCREMENTAL
	}
	return &commonv1.Point{
		Backup: p.Backup, FileId: p.FileID, BackupId: p.BackupID, ChainId: p.ChainID, ParentId: p.ParentID,
		Sequence: p.Sequence, Kind: kind, Encrypted: p.Encrypted, CreatedUnixNano: p.Created.UnixNano(),
		Size: p.Size, KeyRefs: p.KeyRefs, PasswordHint: p.Hint,
	}
}

// ListPoints lists a job's restore points.
func (s *Server) ListPoints(ctx context.Context, req *controllerv1.ListPointsRequest) (*controllerv1.ListPointsResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controllerv1.ListPointsResponse{}
	for _, p := range pts {
		resp.Points = append(resp.Points, pointProto(p))
	}
	return resp, nil
}

// findPoint resolves a point id or prefix (bytes; empty for the latest)
// among a job's points.
func (s *Server) findPoint(j catalog.Job, id []byte) (*catalog.Point, error) {
	pts, err := s.store.ListPoints(j.UID)
	if err != nil {
		return nil, err
	}
	if len(pts) == 0 {
		return nil, fmt.Errorf("%w: job %s has no restore points", errNotFound, j.Name)
	}
	if len(id) == 0 {
		return latest(pts), nil
	}
	var found *catalog.Point
	for i := range pts {
		if bytes.HasPrefix(pts[i].FileID, id) {
			if found != nil {
				return nil, invalidf("point id %x is ambiguous", id)
			}
			found = &pts[i]
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w: job %s has no point %x (see `controller point list --job %s`)", errNotFound, j.Name, id, j.Name)
	}
	return found, nil
}

// holderClient is holder with a client of that agent's repositories.
func (s *Server) holderClient(j catalog.Job) (catalog.Agent, string, repositoryv1.RepositoryServiceClient, error) {
	a, repoName, err := s.holder(j)
	if err != nil {
		return a, "", nil, err
	}
	rc, err := s.repoClient(a)
	return a, repoName, rc, err
}

// holder returns the agent and repository holding a job's points.
func (s *Server) holder(j catalog.Job) (catalog.Agent, string, error) {
	if j.Kind == kindCopy {
		a, err := s.agent(j.ToAgent, "target")
		return a, j.ToRepository, err
	}
	a, err := s.agent(j.Agent, "source")
	return a, j.Repository, err
}

// Restore restores a point on the agent that holds it, handing that agent
// the job's session keys for this call only.
func (s *Server) Restore(ctx context.Context, req *controllerv1.RestoreRequest) (*controllerv1.RestoreResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	a, repoName, err := s.holder(j)
	if err != nil {
		return nil, toStatus(err)
	}
	if req.Agent != a.Name {
		return nil, toStatus(invalidf("the points of job %s are on agent %s, not %s: restore to %s:PATH", j.Name, a.Name, req.Agent, a.Name))
	}
	if !filepath.IsAbs(req.Path) {
		return nil, toStatus(invalidf("restore path %q on agent %s must be absolute", req.Path, a.Name))
	}
	p, err := s.findPoint(j, req.PointId)
	if err != nil {
		return nil, toStatus(err)
	}
	ks, err := s.secretsOf(ctx, j.UID, nil)
	if err != nil {
		return nil, toStatus(err)
	}
	rc, err := s.repoClient(a)
	if err != nil {
		return nil, toStatus(err)
	}
	r, err := rc.Restore(ctx, &repositoryv1.RestoreRequest{Repository: repoName, Backup: j.Name, PointId: p.FileID, To: req.Path, Keys: ks})
	if err != nil {
		return nil, toStatus(agentErr(a, "restore", err))
	}
	s.log.Info("restored", "job", j.Name, "point", hex.EncodeToString(p.FileID), "agent", a.Name, "path", req.Path)
	return &controllerv1.RestoreResponse{Objects: r.Objects, Bytes: r.Bytes}, nil
}

// Verify verifies a job's chain on the agent that holds it; keyless needs
// no key, a full verify hands the agent the job's keys for this call only.
func (s *Server) Verify(ctx context.Context, req *controllerv1.VerifyRequest) (*controllerv1.VerifyResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Job)
	if err != nil {
		return nil, toStatus(err)
	}
	a, repoName, err := s.holder(j)
	if err != nil {
		return nil, toStatus(err)
	}
	var point []byte
	if len(req.PointId) > 0 {
		p, err := s.findPoint(j, req.PointId)
		if err != nil {
			return nil, toStatus(err)
		}
		point = p.FileID
	}
	r, err := s.verifyAt(ctx, j, a, repoName, point, req.Keyless)
	if err != nil {
		return nil, toStatus(err)
	}
	return &controllerv1.VerifyResponse{Files: r.Files, Records: r.Records, Bytes: r.Bytes, Problems: r.Problems}, nil
}

// verifyAt verifies a job's files (one point's chain, or all) on the agent
// holding them; a full verify hands it the job's keys for this call only.
func (s *Server) verifyAt(ctx context.Context, j catalog.Job, a catalog.Agent, repoName string, point []byte, keyless bool) (*repositoryv1.VerifyResponse, error) {
	var ks []*commonv1.SessionKey
	if !keyless {
		var err error
		if ks, err = s.secretsOf(ctx, j.UID, nil); err != nil {
			return nil, err
		}
	}
	rc, err := s.repoClient(a)
	if err != nil {
		return nil, err
	}
	r, err := rc.Verify(ctx, &repositoryv1.VerifyRequest{Repository: repoName, Backup: j.Name, PointId: point, Keyless: keyless, Keys: ks})
	if err != nil {
		return nil, agentErr(a, "verify", err)
	}
	return r, nil
}
