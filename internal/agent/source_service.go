package agent

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/ratelimit"
	"github.com/ferrybackup/ferry/internal/telemetry"
)

// Dialer opens a connection to another agent, with this agent's
// certificate, checking that the peer has the given role.
type Dialer func(ctx context.Context, addr string, role pki.Role, opts ...grpc.DialOption) (*grpc.ClientConn, error)

// Source is the source agent's SourceService.
type Source struct {
	sourcev1.UnimplementedSourceServiceServer
	name  string
	repos map[string]*Repository
	dial  Dialer
	log   hclog.Logger
	// ProgressEvery is how often running sessions report progress.
	ProgressEvery time.Duration
	slots         *slots
	// Metrics counts sessions and bytes (nil: none).
	Metrics *telemetry.Metrics
	// Bandwidth caps the bytes all of this agent's copies move over their
	// links to targets, together (nil: no cap).
	Bandwidth *ratelimit.Limiter
}

// NewSource makes the service.
func NewSource(name string, repos []*Repository, dial Dialer, log hclog.Logger) *Source {
	s := &Source{name: name, repos: map[string]*Repository{}, dial: dial, log: log, ProgressEvery: 500 * time.Millisecond, slots: newSlots(DefaultMaxSessions)}
	for _, r := range repos {
		s.repos[r.Name] = r
	}
	return s
}

// SetMaxSessions bounds how many sessions run at once; more wait.
func (s *Source) SetMaxSessions(n int) { s.slots = newSlots(n) }

func (s *Source) repo(name string) (*Repository, error) { return lookupRepo(s.repos, s.name, name) }

// sessionKey unwraps what the controller handed over for one session.
func sessionKey(sk *commonv1.SessionKey) (*keys.Session, error) {
	if sk == nil || len(sk.Secret) == 0 {
		return nil, nil
	}
	s, err := keys.SessionWithID(sk.Secret, sk.KeyId)
	if err != nil {
		return nil, fmt.Errorf("%w: session key: %v", errBadRequest, err)
	}
	return s, nil
}

// keyTable parses a key table section the controller made.
func keyTable(b []byte) (format.KeyTable, error) {
	if len(b) == 0 {
		return format.KeyTable{}, nil
	}
	kt, err := format.ParseKeyTable("(request)", 0, b, uint32(len(b)/2))
	if err != nil {
		return format.KeyTable{}, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	return *kt, nil
}

// progress sends an event every interval until stop is closed.
func (s *Source) progress(done *atomic.Int64, total int64, send func(*sourcev1.SessionEvent) error) (stop func()) {
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(s.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				if send(&sourcev1.SessionEvent{Stats: &commonv1.SessionStats{BytesRead: done.Load()}, TotalBytes: total}) != nil {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-finished }
}

// Backup makes a restore point of a local path.
func (s *Source) Backup(req *sourcev1.BackupRequest, stream sourcev1.SourceService_BackupServer) error {
	if _, err := requireRole(stream.Context(), pki.RoleController); err != nil {
		return toStatus(err)
	}
	log := s.log.With("session", req.SessionId, "job", req.Job)
	release, err := s.slots.take(stream.Context(), log, req.SessionId)
	if err != nil {
		return toStatus(err)
	}
	defer release()
	log.Info("backup started", "backup", req.Backup, "path", req.Path)
	done := s.Metrics.TrackSession(telemetry.KindBackup)
	ev, err := s.backup(req, stream, log)
	done(err)
	s.Metrics.AddBytes(telemetry.StageRead, req.Job, ev.GetStats().GetBytesRead())
	s.Metrics.AddBytes(telemetry.StageWritten, req.Job, ev.GetStats().GetBytesWritten())
	if err != nil {
		log.Warn("backup failed", "error", err)
		return toStatus(err)
	}
	return stream.Send(&sourcev1.BackupResponse{Event: ev})
}

func (s *Source) backup(req *sourcev1.BackupRequest, stream sourcev1.SourceService_BackupServer, log hclog.Logger) (*sourcev1.SessionEvent, error) {
	r, err := s.repo(req.Repository)
	if err != nil {
		return nil, err
	}
	sess, err := sessionKey(req.Key)
	if err != nil {
		return nil, err
	}
	kt, err := keyTable(req.KeyTable)
	if err != nil {
		return nil, err
	}
	prev, err := keyringFrom(req.PreviousKeys)
	if err != nil {
		return nil, err
	}
	o := backup.Options{
		BlockSize: req.BlockSize, Session: sess, KeyTable: kt, Keys: prev,
		NewChain: req.NewChain, AllowUnencrypted: req.AllowUnencrypted,
		Compression: backup.Compression{Algorithm: format.CompressionZstd, Level: int(req.CompressionLevel)},
		Logger:      log.With("backup", req.Backup),
	}
	if req.Compression == commonv1.Compression_COMPRESSION_NONE {
		o.Compression.Algorithm = format.CompressionNone
	}
	if len(req.FileId) > 0 && !copyID(&o.FileID, req.FileId) {
		return nil, fmt.Errorf("%w: file id", errBadRequest)
	}
	var done atomic.Int64
	o.Progress = func(n int64) { done.Store(n) }
	stop := s.progress(&done, 0, func(e *sourcev1.SessionEvent) error { return stream.Send(&sourcev1.BackupResponse{Event: e}) })
	res, err := backup.Backup(stream.Context(), r.Repo, req.Backup, req.Path, o)
	stop()
	if err != nil {
		return nil, err
	}
	ix, err := r.Repo.Index(req.Backup)
	if err != nil {
		return nil, err
	}
	p, _, err := ix.Find(res.FileID.String())
	if err != nil {
		return nil, err
	}
	return &sourcev1.SessionEvent{
		Done:  true,
		Point: PointProto(req.Backup, p),
		Stats: &commonv1.SessionStats{BytesRead: res.ReadBytes, BytesWritten: res.StoredSize, Records: int64(res.Records), DurationNanos: int64(res.Duration)},
	}, nil
}

// Copy sends a restore point to a target agent.
func (s *Source) Copy(req *sourcev1.CopyRequest, stream sourcev1.SourceService_CopyServer) error {
	if _, err := requireRole(stream.Context(), pki.RoleController); err != nil {
		return toStatus(err)
	}
	log := s.log.With("session", req.SessionId, "job", req.Job)
	release, err := s.slots.take(stream.Context(), log, req.SessionId)
	if err != nil {
		return toStatus(err)
	}
	defer release()
	log.Info("copy started", "backup", req.Backup, "point", fmt.Sprintf("%x", req.PointId), "target", req.TargetAddress)
	done := s.Metrics.TrackSession(telemetry.KindCopy)
	ev, err := s.copy(req, stream)
	done(err)
	s.Metrics.AddBytes(telemetry.StageRead, req.Job, ev.GetStats().GetBytesRead())
	s.Metrics.AddBytes(telemetry.StageSent, req.Job, ev.GetStats().GetBytesSent())
	if err != nil {
		log.Warn("copy failed", "error", err)
		return toStatus(err)
	}
	log.Info("copy committed at the target", "bytes_sent", ev.GetStats().GetBytesSent(), "records", ev.GetStats().GetRecords())
	return stream.Send(&sourcev1.CopyResponse{Event: ev})
}

func (s *Source) copy(req *sourcev1.CopyRequest, stream sourcev1.SourceService_CopyServer) (*sourcev1.SessionEvent, error) {
	ctx := stream.Context()
	r, err := s.repo(req.Repository)
	if err != nil {
		return nil, err
	}
	sess, err := sessionKey(req.Key)
	if err != nil {
		return nil, err
	}
	if req.Wan && sess != nil {
		return nil, fmt.Errorf("%w: a WAN copy is sealed by the target; its request carries no session key", errBadRequest)
	}
	kt, err := keyTable(req.KeyTable)
	if err != nil {
		return nil, err
	}
	srcKeys, err := keyringFrom(req.SourceKeys)
	if err != nil {
		return nil, err
	}
	spec := backup.CopySpec{
		Point: fmt.Sprintf("%x", req.PointId), SourceKeys: srcKeys, Sequence: req.Sequence,
		BackupName: req.TargetBackup, Session: sess, KeyTable: kt,
	}
	if len(req.BasePointId) > 0 {
		spec.Base = fmt.Sprintf("%x", req.BasePointId)
	}
	if !copyID(&spec.FileID, req.FileId) || !copyID(&spec.BackupID, req.BackupId) || !copyID(&spec.ChainID, req.ChainId) ||
		(len(req.ParentId) > 0 && !copyID(&spec.ParentID, req.ParentId)) {
		return nil, fmt.Errorf("%w: malformed ids", errBadRequest)
	}
	// The bytes that cross the link, both ways, count against the job's
	// limit and the agent's cap.
	var lims []*ratelimit.Limiter
	if req.BandwidthBytesPerSec > 0 {
		lims = append(lims, ratelimit.New(req.BandwidthBytesPerSec))
	}
	if s.Bandwidth != nil {
		lims = append(lims, s.Bandwidth)
	}
	var opts []grpc.DialOption
	if len(lims) > 0 {
		opts = append(opts, grpc.WithContextDialer(ratelimit.Dialer(lims...)))
	}
	conn, err := s.dial(ctx, req.TargetAddress, pki.RoleTarget, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to target agent at %s: %w", req.TargetAddress, err)
	}
	defer conn.Close()
	if req.Wan {
		return s.copyWAN(ctx, req, stream, r, spec, targetv1.NewTargetServiceClient(conn))
	}
	var done atomic.Int64
	spec.Progress = func(n int64) { done.Store(n) }
	stop := s.progress(&done, 0, func(e *sourcev1.SessionEvent) error { return stream.Send(&sourcev1.CopyResponse{Event: e}) })
	res, committed, err := SendCopy(ctx, targetv1.NewTargetServiceClient(conn), r.Repo, req.Backup, spec, req.Grant, req.GrantSignature)
	stop()
	if err != nil {
		return nil, err
	}
	kind := commonv1.PointKind_POINT_KIND_FULL
	if res.Kind == format.KindIncremental {
		kind = commonv1.PointKind_POINT_KIND_INCREMENTAL
	}
	return &sourcev1.SessionEvent{
		Done: true,
		Point: &commonv1.Point{
			Backup: req.TargetBackup, FileId: req.FileId, BackupId: req.BackupId, ChainId: req.ChainId, ParentId: req.ParentId,
			Sequence: req.Sequence, Kind: kind, Encrypted: sess != nil, BlockSize: res.Source.BlockSize,
			CreatedUnixNano: time.Now().UnixNano(), Size: committed.Size, PlainBytes: res.Source.PlainBytes,
		},
		Stats: &commonv1.SessionStats{BytesRead: res.ReadBytes, BytesSent: res.SentBytes, BytesWritten: committed.Size,
			Records: int64(res.Records), DurationNanos: int64(res.Duration)},
	}, nil
}
