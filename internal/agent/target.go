package agent

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/grant"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/telemetry"
	"github.com/ferrybackup/ferry/internal/transfer"
)

// Repository is one repository an agent serves.
type Repository struct {
	Name              string
	Repo              *repo.Repo
	RequireEncryption bool

	notes notes
}

// Target is the target agent's TargetService.
type Target struct {
	targetv1.UnimplementedTargetServiceServer
	name  string
	repos map[string]*Repository
	log   hclog.Logger
	now   func() time.Time

	mu        sync.RWMutex
	grantKeys []ed25519.PublicKey
	// OnRegister, when set, persists the trusted grant keys after a
	// controller registers a new one.
	OnRegister func([]ed25519.PublicKey) error
	slots      *slots
	parked     map[string]*parked // by repository and backup
	closing    bool
	// DurabilityInterval is how many record bytes the target receives
	// between checkpoints (fsync + ack): what a cut link can cost again.
	DurabilityInterval int64
	// Metrics counts sessions and bytes (nil: none).
	Metrics *telemetry.Metrics
	// WANCache is the WAN global cache shared by every WAN session (nil:
	// none). Set before serving.
	WANCache transfer.BlockCache
	wan      map[string]*wanKey // keys of WAN sessions, by session id
}

// NewTarget makes the service. grantKeys are the controller keys whose
// grants it accepts.
func NewTarget(name string, repos []*Repository, grantKeys []ed25519.PublicKey, log hclog.Logger) *Target {
	t := &Target{name: name, repos: map[string]*Repository{}, log: log, now: time.Now, grantKeys: grantKeys, slots: newSlots(DefaultMaxSessions),
		parked: map[string]*parked{}, DurabilityInterval: DefaultDurabilityInterval}
	for _, r := range repos {
		t.repos[r.Name] = r
	}
	return t
}

// DefaultDurabilityInterval is the bytes between a target's checkpoints.
const DefaultDurabilityInterval = 32 << 20

// MaxMessageSize bounds a message on the data stream: one record of the
// largest block size with room for its framing.
const MaxMessageSize = format.MaxBlockSize + 1<<20

// Flow-control windows and I/O buffers of the data stream: a record is
// up to a few MiB, so the 64 KiB defaults would stall the sender every few
// frames and cost a syscall per 32 KiB.
const (
	streamWindow = 16 << 20
	connWindow   = 32 << 20
	ioBuffer     = 1 << 20
)

// ServerOptions are the options an agent's gRPC server needs.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.InitialWindowSize(streamWindow), grpc.InitialConnWindowSize(connWindow),
		grpc.ReadBufferSize(ioBuffer), grpc.WriteBufferSize(ioBuffer),
	}
}

// DialOptions are the options of a source agent's connection to a target.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(MaxMessageSize)),
		// Reconnect quickly after a cut link, to resume the session.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 3 * time.Second}}),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
		grpc.WithReadBufferSize(ioBuffer), grpc.WithWriteBufferSize(ioBuffer),
	}
}

func requireRole(ctx context.Context, roles ...pki.Role) (pki.Identity, error) {
	id, err := pki.PeerIdentity(ctx)
	if err != nil {
		return id, fmt.Errorf("%w: %v", errWrongPeer, err)
	}
	for _, r := range roles {
		if id.Role == r {
			return id, nil
		}
	}
	return id, fmt.Errorf("%w: %s may not call this", errWrongPeer, id)
}

func (t *Target) repo(name string) (*Repository, error) { return lookupRepo(t.repos, t.name, name) }

// lookupRepo finds a repository an agent serves.
func lookupRepo(repos map[string]*Repository, agent, name string) (*Repository, error) {
	r, ok := repos[name]
	if !ok {
		return nil, fmt.Errorf("%w %q on agent %s", errNoRepository, name, agent)
	}
	return r, nil
}

// SetMaxSessions bounds how many transfers run at once; more wait.
func (t *Target) SetMaxSessions(n int) { t.slots = newSlots(n) }

// Transfer receives one backup file from a source agent.
func (t *Target) Transfer(stream targetv1.TargetService_TransferServer) error {
	release, err := t.slots.take(stream.Context(), t.log, "")
	if err != nil {
		return toStatus(err)
	}
	defer release()
	done := t.Metrics.TrackSession(telemetry.KindCopy)
	err = t.transfer(stream)
	done(err)
	if err != nil {
		t.log.Warn("transfer failed", "error", err)
	}
	return toStatus(err)
}

func (t *Target) transfer(stream targetv1.TargetService_TransferServer) error {
	id, err := requireRole(stream.Context(), pki.RoleSource)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return fmt.Errorf("%w: a transfer starts with an open", errBadRequest)
	}
	t.mu.RLock()
	g, err := grant.Verify(t.grantKeys, open.Grant, open.GrantSignature, t.now())
	t.mu.RUnlock()
	if err != nil {
		return err
	}
	if g.SourceAgent != id.Name {
		return fmt.Errorf("%w: the grant of session %s is for source agent %q, not %q", grant.ErrInvalid, g.SessionId, g.SourceAgent, id.Name)
	}
	if open.Wan != g.Wan {
		return fmt.Errorf("%w: a transfer in WAN mode needs a WAN grant and the other way round (session %s)", grant.ErrInvalid, g.SessionId)
	}
	var (
		wanSess   *keys.Session
		wanPrefix uint32
	)
	if g.Wan {
		if wanSess, wanPrefix, err = t.wanAttempt(g, open.Grant); err != nil {
			return err
		}
	}
	r, err := t.repo(g.Repository)
	if err != nil {
		return err
	}
	want := transfer.Expect{Backup: g.Backup, Sequence: g.Sequence, RequireEncryption: r.RequireEncryption}
	if !copyID(&want.BackupID, g.BackupId) || !copyID(&want.ChainID, g.ChainId) || !copyID(&want.FileID, g.FileId) {
		return fmt.Errorf("%w: malformed ids in grant", grant.ErrInvalid)
	}
	log := t.log.With("session", g.SessionId, "job", g.Job, "backup", g.Backup, "source", id.Name)
	// A transfer of this file cut off earlier is parked, holding the
	// backup's lock: resume it when asked by the same session, or end it.
	parkKey := r.Repo.Dir + "\x00" + g.Backup
	rc := t.unpark(parkKey)
	var resumeFrom int
	if rc != nil && open.Resume && rc.Session == g.SessionId && rc.FileID() == want.FileID {
		if resumeFrom, err = rc.Rewind(open.Header, open.KeyTable); err != nil {
			rc.Abort()
			return err
		}
		log.Info("resuming a cut-off transfer", "records", resumeFrom)
	} else {
		if rc != nil {
			r.Note(g.Backup, "a transfer of session %s cut off earlier was ended by session %s; its partial file was removed", rc.Session, g.SessionId)
			log.Warn("ending a cut-off transfer of another session", "cut_off_session", rc.Session)
			rc.Abort()
		}
		if rc, err = transfer.NewReceiver(r.Repo, open.Header, open.KeyTable, want); err != nil {
			return err
		}
		rc.Session = g.SessionId
	}
	committed, park := false, false
	defer func() {
		switch {
		case committed:
		case park:
			// Make durable every record received up to the cut, so that a
			// resume sends again only what was still on the wire.
			if n, err := rc.Checkpoint(); err != nil {
				log.Warn("could not make the records received before the cut durable; a resume starts from the last checkpoint", "error", err)
			} else {
				log.Debug("link cut; the records received are durable", "records", n)
			}
			t.park(parkKey, r, g, rc, log)
		default:
			rc.Abort()
		}
	}()
	start := time.Now()
	if err := stream.Send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Accepted{Accepted: &targetv1.TransferAccepted{
		FileId: g.FileId, ResumeFrom: uint64(resumeFrom)}}}); err != nil {
		park = true
		return err
	}
	if g.Wan {
		committed, park, err = t.receiveWAN(stream, rc, g, wanSess, wanPrefix, log)
		return err
	}
	// Receiving (TLS, framing, unmarshalling) runs on its own goroutine so
	// it overlaps with checking and writing the records before it.
	msgs, recvErr := receive(stream, 8, false)
	for msg := range msgs {
		switch m := msg.Msg.(type) {
		case *targetv1.TransferRequest_Records:
			for _, rec := range m.Records.Records {
				if err := rc.Record(rec.Header, rec.Payload); err != nil {
					return err
				}
			}
			if rc.SinceCheckpoint() >= t.DurabilityInterval {
				n, err := rc.Checkpoint()
				if err != nil {
					return err
				}
				if err := stream.Send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Ack{Ack: &targetv1.TransferAck{Records: uint64(n)}}}); err != nil {
					park = true
					return err
				}
			}
		case *targetv1.TransferRequest_Finish:
			p, err := rc.Commit(m.Finish.Catalog, m.Finish.TrailerHash)
			if err != nil {
				return err
			}
			committed = true
			log.Info("backup file committed", "point", p.FileID, "sequence", p.Sequence, "records", rc.Records, "bytes", p.Size)
			t.Metrics.AddBytes(telemetry.StageReceived, g.Job, p.Size)
			t.Metrics.AddBytes(telemetry.StageWritten, g.Job, p.Size)
			return stream.Send(&targetv1.TransferResponse{Msg: &targetv1.TransferResponse_Committed{Committed: &targetv1.TransferCommitted{
				FileId: g.FileId, Size: p.Size,
				Stats: &commonv1.SessionStats{BytesWritten: p.Size, Records: int64(rc.Records), DurationNanos: int64(time.Since(start))},
			}}})
		default:
			return fmt.Errorf("%w: unexpected message %T", errBadRequest, msg.Msg)
		}
	}
	if err := <-recvErr; err != nil && !errors.Is(err, io.EOF) {
		// The link, not the sender, ended it: keep what is durable for a
		// resume under the same grant.
		park = linkCut(err)
		return err
	}
	return fmt.Errorf("%w: the stream ended before the file was finished", transfer.ErrRefused)
}

// linkCut tells a connection that went away from a refused message.
func linkCut(err error) bool {
	switch status.Code(err) {
	case codes.Canceled, codes.Unavailable, codes.DeadlineExceeded:
		return true
	}
	return errors.Is(err, context.Canceled)
}

// park keeps a cut-off transfer until its grant expires, for a resume.
// It holds its backup's lock meanwhile; a new transfer into the backup
// ends it.
func (t *Target) park(key string, r *Repository, g *targetv1.Grant, rc *transfer.Receiver, log hclog.Logger) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closing {
		rc.Abort()
		return
	}
	p := &parked{rc: rc}
	p.timer = time.AfterFunc(time.Until(time.Unix(g.ExpiresUnix, 0)), func() {
		if got := t.unpark(key); got != nil {
			log.Warn("a cut-off transfer was not resumed before its grant expired; its partial file is removed")
			r.Note(g.Backup, "the transfer of session %s was cut off and not resumed before its grant expired; its partial file was removed", g.SessionId)
			got.Abort()
		}
	})
	t.parked[key] = p
	log.Info("transfer cut off; keeping what is durable for a resume", "records", rc.Records)
}

// unpark takes the parked transfer of a backup, if there is one.
func (t *Target) unpark(key string) *transfer.Receiver {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parked[key]
	if p == nil {
		return nil
	}
	delete(t.parked, key)
	p.timer.Stop()
	return p.rc
}

// Close ends parked transfers (removing their partial files) and parks
// no more: a resume does not survive the process.
func (t *Target) Close() error {
	t.mu.Lock()
	t.closing = true
	ps := t.parked
	t.parked = map[string]*parked{}
	t.mu.Unlock()
	for _, p := range ps {
		p.timer.Stop()
		p.rc.Abort()
	}
	return nil
}

type parked struct {
	rc    *transfer.Receiver
	timer *time.Timer
}

// receive reads a transfer stream on its own goroutine, up to depth
// messages ahead. The channel closes at the end of the stream, after a
// finish (unless pastFinish: a WAN transfer's refetched blocks may follow
// it), or on an error, which the second channel then holds. It stops when
// the call ends.
func receive(stream targetv1.TargetService_TransferServer, depth int, pastFinish bool) (<-chan *targetv1.TransferRequest, <-chan error) {
	msgs := make(chan *targetv1.TransferRequest, depth)
	errc := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			msg, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- msg:
			case <-stream.Context().Done():
				errc <- stream.Context().Err()
				return
			}
			if msg.GetFinish() != nil && !pastFinish {
				errc <- nil
				return
			}
		}
	}()
	return msgs, errc
}

func copyID(dst *format.ID, b []byte) bool {
	if len(b) != len(dst) {
		return false
	}
	copy(dst[:], b)
	return true
}

// listPoints serves both agents' ListPoints.
func listPoints(lookup func(string) (*Repository, error), repoName, backupName string) ([]*commonv1.Point, error) {
	r, err := lookup(repoName)
	if err != nil {
		return nil, err
	}
	ix, err := r.Repo.Index(backupName)
	if err != nil {
		return nil, err
	}
	var out []*commonv1.Point
	for _, p := range ix.Points() {
		out = append(out, PointProto(backupName, p))
	}
	return out, nil
}

// PointProto converts a repository point for the wire.
func PointProto(backupName string, p *repo.Point) *commonv1.Point {
	kind := commonv1.PointKind_POINT_KIND_FULL
	if p.Kind == format.KindIncremental {
		kind = commonv1.PointKind_POINT_KIND_INCREMENTAL
	}
	return &commonv1.Point{
		Backup: backupName, FileId: p.FileID[:], BackupId: p.BackupID[:], ChainId: p.ChainID[:], ParentId: p.ParentID[:],
		Sequence: p.Sequence, Kind: kind, Encrypted: p.Encryption != format.EncryptionNone, BlockSize: p.BlockSize,
		CreatedUnixNano: p.Created.UnixNano(), Size: p.Size, PlainBytes: p.PlainBytes, KeyRefs: p.KeyRefs,
		PasswordHint: p.Hint, Damaged: p.Damaged,
	}
}

// keyringFrom builds a keyring from session keys handed over for one call.
func keyringFrom(sks []*commonv1.SessionKey) (*keyring.Keyring, error) {
	kr := keyring.New()
	for _, sk := range sks {
		s, err := sessionKey(sk)
		if err != nil {
			return nil, err
		}
		if s != nil {
			kr.AddSession(s)
		}
	}
	return kr, nil
}

// verifyIn and restoreIn serve both agents' Verify and Restore.
func verifyIn(ctx context.Context, lookup func(string) (*Repository, error), repoName, backupName string, pointID []byte, keyless bool, sks []*commonv1.SessionKey) (*backup.VerifyResult, error) {
	r, err := lookup(repoName)
	if err != nil {
		return nil, err
	}
	kr, err := keyringFrom(sks)
	if err != nil {
		return nil, err
	}
	res, err := backup.Verify(ctx, r.Repo, backupName, backup.VerifyOptions{Point: hexID(pointID), Keyless: keyless, Keys: kr})
	if res == nil {
		return nil, err
	}
	// Problems are the answer, not a failure of the call.
	return res, nil
}

func restoreIn(ctx context.Context, lookup func(string) (*Repository, error), repoName, backupName string, pointID []byte, to string, sks []*commonv1.SessionKey) (*backup.RestoreResult, error) {
	r, err := lookup(repoName)
	if err != nil {
		return nil, err
	}
	kr, err := keyringFrom(sks)
	if err != nil {
		return nil, err
	}
	return backup.Restore(ctx, r.Repo, backupName, to, backup.RestoreOptions{Point: hexID(pointID), Keys: kr})
}

func hexID(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return fmt.Sprintf("%x", b)
}

// RegisterController trusts the controller's grant signing key.
func (t *Target) RegisterController(ctx context.Context, req *targetv1.RegisterControllerRequest) (*targetv1.RegisterControllerResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	if len(req.GrantPublicKey) != ed25519.PublicKeySize {
		return nil, toStatus(fmt.Errorf("%w: grant public key of %d bytes", errBadRequest, len(req.GrantPublicKey)))
	}
	key := ed25519.PublicKey(append([]byte(nil), req.GrantPublicKey...))
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range t.grantKeys {
		if k.Equal(key) {
			return &targetv1.RegisterControllerResponse{}, nil
		}
	}
	t.grantKeys = append(t.grantKeys, key)
	if t.OnRegister != nil {
		if err := t.OnRegister(t.grantKeys); err != nil {
			return nil, toStatus(err)
		}
	}
	t.log.Info("trusting a controller's grant key", "key", fmt.Sprintf("%x", key[:8]))
	return &targetv1.RegisterControllerResponse{}, nil
}

// Version is the agent's version, reported by Describe.
var Version = "dev"
