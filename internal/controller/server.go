package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/ferrybackup/ferry/internal/schedule"
	"github.com/ferrybackup/ferry/internal/telemetry"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/catalog"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/grant"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/kms"
	"github.com/ferrybackup/ferry/internal/pki"
)

// Options configure a controller.
type Options struct {
	// StateDir holds the catalog, its master key and the grant key.
	StateDir string
	// Cert and Roots are the controller's certificate and the CA, used
	// both to serve the CLI and to call agents.
	Cert  tls.Certificate
	Roots *x509.CertPool
	// GrantTTL bounds how long a session's grant is valid.
	GrantTTL time.Duration
	// KDF are the Argon2id parameters of new password keys.
	KDF    keys.KDFParams
	Logger hclog.Logger
	// AgentTimeout bounds control calls to agents (not data sessions).
	AgentTimeout time.Duration
	// Transit wraps the session secrets of KMS jobs; nil when no Vault is
	// configured.
	Transit *kms.Transit
	// Recovery, when set, also seals every new session secret, so that a
	// point opens with the offline recovery key alone.
	Recovery *keys.RecoveryPublic
	// Metrics counts sessions and their bytes (nil: none).
	Metrics *telemetry.Metrics
	// Now is the controller's clock for GFS periods (default time.Now).
	Now func() time.Time
}

// Server is the controller.
type Server struct {
	controllerv1.UnimplementedControllerServiceServer
	o      Options
	store  *catalog.Store
	signer *grant.Signer
	log    hclog.Logger

	mu       sync.Mutex
	conns    map[string]*grpc.ClientConn // by agent address
	running  map[string]*liveSession     // by job uid
	polled   map[string]time.Time        // by job uid: an immediate copy job last looked for new points
	sched    *schedule.Runner            // set by RunScheduler
	seen     seen                        // when each agent last answered
	sessions map[string]*liveSession     // by session id, while running
	wg       sync.WaitGroup
	ctx      context.Context
	cancel   context.CancelFunc
}

// New opens the catalog in o.StateDir and makes a controller. Sessions
// the catalog says are running were cut off by a restart: they are marked
// failed.
func New(o Options) (*Server, error) {
	if o.GrantTTL <= 0 {
		o.GrantTTL = time.Hour
	}
	if o.KDF == (keys.KDFParams{}) {
		o.KDF = keys.DefaultKDF
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AgentTimeout <= 0 {
		o.AgentTimeout = 15 * time.Second
	}
	store, err := catalog.Open(o.StateDir)
	if err != nil {
		return nil, err
	}
	signer, err := grant.LoadOrCreate(joinPath(o.StateDir, "grant.key"))
	if err != nil {
		store.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{o: o, store: store, signer: signer, log: o.Logger,
		conns: map[string]*grpc.ClientConn{}, running: map[string]*liveSession{}, sessions: map[string]*liveSession{}, polled: map[string]time.Time{},
		ctx: ctx, cancel: cancel}
	if err := s.reconcile(); err != nil {
		store.Close()
		return nil, err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.RunScheduler(s.ctx)
	}()
	return s, nil
}

// reconcile marks sessions left running by a previous process as failed.
func (s *Server) reconcile() error {
	ss, err := s.store.ListSessions("")
	if err != nil {
		return err
	}
	for _, sess := range ss {
		if sess.Result != resultRunning {
			continue
		}
		sess.Result, sess.Error, sess.EndedAt = resultFailed, "the controller restarted while the session ran", time.Now().UTC()
		if err := s.store.PutSession(sess); err != nil {
			return err
		}
		s.log.Warn("marked a session cut off by a restart as failed", "session", sess.ID, "job", sess.Job)
	}
	return nil
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { controllerv1.RegisterControllerServiceServer(g, s) }

// ServerTLS is the TLS config the controller's listener needs: clients
// (the CLI) with the client role only.
func (s *Server) ServerTLS() (*tls.Config, error) {
	return pki.ServerConfig(s.o.Cert, s.o.Roots, pki.RoleClient)
}

// Close stops running sessions and closes the catalog.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
	s.mu.Unlock()
	return s.store.Close()
}

// conn returns a cached connection to an agent, checking its role.
func (s *Server) conn(addr string, role pki.Role) (*grpc.ClientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := string(role) + "|" + addr
	if c, ok := s.conns[key]; ok {
		return c, nil
	}
	cfg, err := pki.ClientConfig(s.o.Cert, s.o.Roots, role)
	if err != nil {
		return nil, err
	}
	// Reconnect quickly after an agent restarts: the default first backoff
	// of a second would fail control calls made just after.
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second}}))
	if err != nil {
		return nil, fmt.Errorf("connect to agent at %s: %w", addr, err)
	}
	s.conns[key] = c
	return c, nil
}

func requireClient(ctx context.Context) error {
	id, err := pki.PeerIdentity(ctx)
	if err != nil {
		return status.Error(codes.Unauthenticated, err.Error())
	}
	if id.Role != pki.RoleClient {
		return status.Errorf(codes.PermissionDenied, "%s may not use the controller API", id)
	}
	return nil
}

// Domain errors, made into status codes by toStatus.
var (
	errInvalid     = errors.New("invalid")
	errNotFound    = errors.New("not found")
	errExists      = errors.New("exists already")
	errUnreachable = errors.New("unreachable")
	errBusy        = errors.New("busy")
)

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalid, fmt.Sprintf(format, args...))
}

// toStatus maps domain errors to gRPC codes at the boundary. Messages are
// kept without the sentinel's prefix, so the CLI shows what to do.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, errInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, errNotFound), errors.Is(err, catalog.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, errExists):
		code = codes.AlreadyExists
	case errors.Is(err, errUnreachable), errors.Is(err, kms.ErrUnreachable), errors.Is(err, kms.ErrSealed):
		code = codes.Unavailable
	case errors.Is(err, kms.ErrDenied):
		code = codes.PermissionDenied
	case errors.Is(err, kms.ErrKeyNotFound):
		code = codes.NotFound
	case errors.Is(err, kms.ErrTooOld):
		code = codes.FailedPrecondition
	case errors.Is(err, errBusy):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, trimSentinel(err.Error()))
}

func trimSentinel(msg string) string {
	for _, e := range []error{errInvalid, errNotFound, errExists, errUnreachable, errBusy} {
		p := e.Error() + ": "
		if len(msg) > len(p) && msg[:len(p)] == p {
			return msg[len(p):]
		}
	}
	return msg
}
