package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ferrybackup/ferry/internal/ratelimit"
	"github.com/ferrybackup/ferry/internal/telemetry"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/ferrybackup/ferry/internal/agent"
	"github.com/ferrybackup/ferry/internal/config"
	"github.com/ferrybackup/ferry/internal/controller"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/kms"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/wancache"
)

// Logger builds the root logger of a daemon.
func Logger(name, level, format string, out io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name: name, Level: hclog.LevelFromString(level), Output: out, JSONFormat: format == "json",
	})
}

// Server is a running daemon.
type Server struct {
	Addr string // where it listens
	// MetricsAddr is where its metrics are served (mTLS), "" without a
	// telemetry block.
	MetricsAddr string
	Metrics     *telemetry.Metrics
	grpc        *grpc.Server
	health      *health.Server
	done        chan error
	shutdown    time.Duration
	closers     []func() error
	log         hclog.Logger
}

// Wait blocks until the server stops and returns why.
func (s *Server) Wait() error { return <-s.done }

// Stop drains in-flight calls for up to the shutdown bound, then cuts
// them: a session cut off this way leaves only a partial file, which is
// never a restore point.
func (s *Server) Stop() {
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.shutdown):
		s.log.Warn("shutdown bound reached; ending the remaining calls", "bound", s.shutdown)
		s.grpc.Stop()
		<-stopped
	}
	for _, c := range s.closers {
		if err := c(); err != nil {
			s.log.Error("close", "error", err)
		}
	}
}

func serve(ln net.Listener, g *grpc.Server, hs *health.Server, shutdown time.Duration, log hclog.Logger) *Server {
	healthpb.RegisterHealthServer(g, hs)
	s := &Server{Addr: ln.Addr().String(), grpc: g, health: hs, done: make(chan error, 1), shutdown: shutdown, log: log}
	go func() { s.done <- g.Serve(ln) }()
	return s
}

// loadGrantKeys reads the controller grant keys a target trusts.
func loadGrantKeys(path string) ([]ed25519.PublicKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("controller grant keys: %w", err)
	}
	var out []ed25519.PublicKey
	for _, line := range strings.Fields(string(b)) {
		k, err := hex.DecodeString(line)
		if err != nil || len(k) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("controller grant keys %s: malformed key", path)
		}
		out = append(out, ed25519.PublicKey(k))
	}
	return out, nil
}

// saveGrantKeys writes them atomically.
func saveGrantKeys(path string, ks []ed25519.PublicKey) error {
	var b strings.Builder
	for _, k := range ks {
		b.WriteString(hex.EncodeToString(k) + "\n")
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// recoverRepo finishes what a crash of the previous agent process left in
// a repository before serving it: interrupted key table rewrites are
// replayed or dropped (by taking each backup's lock), and partial files of
// interrupted sessions are removed, since they are never restore points.
func recoverRepo(ar *agent.Repository, log hclog.Logger) error {
	r, name := ar.Repo, ar.Name
	backups, err := r.Backups()
	if err != nil {
		return err
	}
	for _, b := range backups {
		done, err := r.RecoverJournals(b)
		if err != nil {
			return fmt.Errorf("repository %s, backup %s: %w", name, b, err)
		}
		for _, d := range done {
			log.Warn("recovered an interrupted key table rewrite", "repository", name, "backup", b, "what", d)
			ar.Note(b, "agent restart: recovered an interrupted key table rewrite (%s)", d)
		}
		l, err := r.Lock(b)
		if err != nil {
			return fmt.Errorf("repository %s, backup %s: %w", name, b, err)
		}
		removed, err := r.RemovePartials(b)
		l.Unlock()
		if err != nil {
			return err
		}
		for _, p := range removed {
			log.Warn("removed the partial file of an interrupted session", "repository", name, "backup", b, "path", p)
			ar.Note(b, "agent restart: removed the partial file %s of an interrupted session", filepath.Base(p))
		}
	}
	return nil
}

// testControllerNow, set only by this package's tests, is the clock of
// the controllers they start (GFS periods); nil is time.Now.
var testControllerNow func() time.Time

// testAgentOptions are extra server options for the agents of a role,
// set only by this package's tests (to record what an agent receives).
var testAgentOptions = map[string][]grpc.ServerOption{}

// StartAgent starts a source or target agent from its configuration.
func StartAgent(cfg *config.Agent, logOut io.Writer) (*Server, error) {
	log := Logger("agent-"+cfg.Role, cfg.LogLevel, cfg.LogFormat, logOut).With("agent", cfg.Name)
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate %s: %w", cfg.TLS.CertFile, err)
	}
	roots, err := pki.LoadPool(cfg.TLS.CAFile)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	var repos []*agent.Repository
	for _, rc := range cfg.Repositories {
		r, err := repo.Create(rc.Path)
		if err != nil {
			return nil, fmt.Errorf("repository %s: %w", rc.Name, err)
		}
		ar := &agent.Repository{Name: rc.Name, Repo: r, RequireEncryption: rc.RequireEncryption}
		if err := recoverRepo(ar, log); err != nil {
			return nil, err
		}
		repos = append(repos, ar)
	}
	allowed := []pki.Role{pki.RoleController}
	if cfg.Role == config.RoleTarget {
		allowed = append(allowed, pki.RoleSource)
	}
	stls, err := pki.ServerConfig(cert, roots, allowed...)
	if err != nil {
		return nil, err
	}
	// WaitForHandlers: when Stop cuts calls off at the shutdown bound, their
	// handlers still run to the end, so a transfer removes its partial file.
	opts := append(agent.ServerOptions(), grpc.Creds(credentials.NewTLS(stls)), grpc.WaitForHandlers(true))
	opts = append(opts, testAgentOptions[cfg.Role]...)
	g := grpc.NewServer(opts...)
	rs := agent.NewRepositories(cfg.Name, cfg.Role, repos)
	rs.Log = log
	metrics := telemetry.New(agent.Version)
	rs.Metrics = metrics
	repositoryv1.RegisterRepositoryServiceServer(g, rs)
	var closeTarget func() error
	switch cfg.Role {
	case config.RoleSource:
		dial := func(ctx context.Context, addr string, role pki.Role, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
			ctls, err := pki.ClientConfig(cert, roots, role)
			if err != nil {
				return nil, err
			}
			return grpc.NewClient(addr, append(append(agent.DialOptions(), grpc.WithTransportCredentials(credentials.NewTLS(ctls))), opts...)...)
		}
		src := agent.NewSource(cfg.Name, repos, dial, log)
		src.Metrics = metrics
		if cfg.BandwidthBytesPerSec > 0 {
			src.Bandwidth = ratelimit.New(cfg.BandwidthBytesPerSec)
		}
		src.SetMaxSessions(cfg.MaxSessions)
		sourcev1.RegisterSourceServiceServer(g, src)
	case config.RoleTarget:
		keysFile := filepath.Join(cfg.StateDir, "controller-grant-keys")
		trusted, err := loadGrantKeys(keysFile)
		if err != nil {
			return nil, err
		}
		tgt := agent.NewTarget(cfg.Name, repos, trusted, log)
		tgt.Metrics = metrics
		// Kept across restarts, so a session cut off by a restart of the
		// target resumes under its grant.
		tgt.OnRegister = func(ks []ed25519.PublicKey) error { return saveGrantKeys(keysFile, ks) }
		tgt.SetMaxSessions(cfg.MaxSessions)
		if cfg.DurabilityIntervalBytes > 0 {
			tgt.DurabilityInterval = cfg.DurabilityIntervalBytes
		}
		var cache *wancache.Cache
		if c := cfg.WANCache; c != nil {
			key, err := wancache.LoadOrCreateKey(cfg.StateDir)
			if err != nil {
				return nil, err
			}
			if cache, err = wancache.Open(c.Path, c.SizeBytes, key); err != nil {
				return nil, err
			}
			tgt.WANCache = cache
			st := cache.Stats()
			log.Info("wan cache open", "path", c.Path, "entries", st.Entries, "bytes", st.Bytes, "max_bytes", st.MaxBytes)
		}
		targetv1.RegisterTargetServiceServer(g, tgt)
		closeTarget = func() error {
			err := tgt.Close()
			if cache != nil {
				if cerr := cache.Close(); err == nil {
					err = cerr
				}
			}
			return err
		}
	default:
		return nil, fmt.Errorf("unknown agent role %q", cfg.Role)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		if closeTarget != nil {
			closeTarget() // releases the WAN cache's lock
		}
		return nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	if cfg.Role == config.RoleTarget && cfg.BandwidthBytesPerSec > 0 {
		// A target's cap: every byte its sessions receive and send.
		ln = ratelimit.Listener(ln, ratelimit.New(cfg.BandwidthBytesPerSec))
	}
	s := serve(ln, g, health.NewServer(), cfg.ShutdownTimeoutDuration, log)
	if closeTarget != nil {
		s.closers = append(s.closers, closeTarget)
	}
	if err := s.serveMetrics(cfg.Telemetry, metrics, cert, roots, log); err != nil {
		s.Stop()
		return nil, err
	}
	log.Info("agent listening", "role", cfg.Role, "address", s.Addr, "repositories", len(repos))
	return s, nil
}

// vaultClient connects to Vault Transit as the controller's vault block
// says; without a block it uses VAULT_ADDR and VAULT_TOKEN when both are
// set (as `controller dev` does), and otherwise KMS jobs are unavailable.
func vaultClient(v *config.Vault, log hclog.Logger, observe func(op string, err error)) (*kms.Transit, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if v == nil {
		if os.Getenv("VAULT_ADDR") == "" || os.Getenv("VAULT_TOKEN") == "" {
			return nil, nil
		}
		t, err := kms.New(ctx, kms.Config{Logger: log, Observe: observe})
		if err != nil {
			return nil, err
		}
		log.Info("KMS jobs use Vault Transit from the environment", "vault", t.Address(), "mount", t.Mount())
		return t, nil
	}
	kc := kms.Config{Address: v.Address, Namespace: v.Namespace, Mount: v.Mount, TokenFile: v.TokenFile,
		CACert: v.CAFile, ClientCert: v.ClientCertFile, ClientKey: v.ClientKeyFile, Logger: log, Observe: observe}
	if v.AppRole != nil {
		kc.AppRoleID, kc.AppSecretFile = v.AppRole.RoleID, v.AppRole.SecretIDFile
	}
	t, err := kms.New(ctx, kc)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	log.Info("KMS jobs use Vault Transit", "vault", t.Address(), "mount", t.Mount())
	return t, nil
}

// StartController starts the controller from its configuration. kdf
// overrides the Argon2id parameters of new password keys (tests).
func StartController(cfg *config.Controller, logOut io.Writer, kdf keys.KDFParams) (*Server, *controller.Server, error) {
	log := Logger("controller", cfg.LogLevel, cfg.LogFormat, logOut)
	cert, err := tls.LoadX509KeyPair(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("load certificate %s: %w", cfg.TLS.CertFile, err)
	}
	roots, err := pki.LoadPool(cfg.TLS.CAFile)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("state dir: %w", err)
	}
	metrics := telemetry.New(agent.Version)
	transit, err := vaultClient(cfg.Vault, log, metrics.VaultRequest)
	if err != nil {
		return nil, nil, err
	}
	var recovery *keys.RecoveryPublic
	if rk := cfg.RecoveryPublicKey; rk != "" {
		if recovery, err = keys.ParseRecoveryPublic(rk); err != nil {
			return nil, nil, fmt.Errorf("recovery_public_key: %w", err)
		}
		log.Info("sealing every new session secret to the recovery key too")
	}
	c, err := controller.New(controller.Options{Now: testControllerNow, StateDir: cfg.StateDir, Cert: cert, Roots: roots, GrantTTL: cfg.GrantTTLDuration, KDF: kdf, Logger: log,
		Transit: transit, Recovery: recovery, Metrics: metrics})
	if err != nil {
		return nil, nil, err
	}
	stls, err := c.ServerTLS()
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(stls)), grpc.WaitForHandlers(true))
	c.Register(g)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	s := serve(ln, g, health.NewServer(), 30*time.Second, log)
	s.closers = append(s.closers, c.Close)
	if transit != nil {
		s.closers = append(s.closers, func() error { transit.Close(); return nil })
	}
	if err := s.serveMetrics(cfg.Telemetry, metrics, cert, roots, log); err != nil {
		s.Stop()
		return nil, nil, err
	}
	log.Info("controller listening", "address", s.Addr, "state_dir", cfg.StateDir)
	return s, c, nil
}

// serveMetrics serves a daemon's metrics when its configuration has a
// telemetry block: over mutual TLS like every listener, for scrapers that
// present a certificate of the client role (controller pki issue --role
// client).
func (s *Server) serveMetrics(t *config.Telemetry, m *telemetry.Metrics, cert tls.Certificate, roots *x509.CertPool, log hclog.Logger) error {
	s.Metrics = m
	if t == nil {
		return nil
	}
	tc, err := pki.ServerConfig(cert, roots, pki.RoleClient)
	if err != nil {
		return err
	}
	addr, stop, err := telemetry.Serve(context.Background(), t.Listen, tc, m.Registry(), log.Named("telemetry"))
	if err != nil {
		return fmt.Errorf("telemetry: %w", err)
	}
	s.MetricsAddr = addr
	s.closers = append(s.closers, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return stop(ctx)
	})
	log.Info("serving metrics", "address", addr)
	return nil
}
