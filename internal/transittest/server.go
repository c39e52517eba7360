package transittest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Version is the Vault version that sys/health and sys/seal-status report.
const Version = "1.21.0+transittest"

// Vault's system default and maximum token TTL (32 days).
const defaultTokenTTL = 768 * time.Hour

// Options configures a Server. The zero value gives a root token "root", the
// engine at "transit" and no AppRole.
type Options struct {
	// RootToken never expires and may do anything, like the root token of
	// `vault server -dev`. Default "root".
	RootToken string
	// Mount is the path the Transit engine answers under. Default "transit".
	Mount string
	// AppRole enables auth/approle/login when RoleID is set.
	AppRole AppRole
	// TokenTTL is the TTL of tokens that AppRole login issues, and the
	// default increment of renew-self. Default 768h, Vault's default.
	TokenTTL time.Duration
	// TokenMaxTTL caps an AppRole token's life however often it renews.
	// Default 768h, Vault's default.
	TokenMaxTTL time.Duration
	// Logger gets one debug line per request (never a token or a
	// plaintext). Nil discards.
	Logger hclog.Logger
}

// AppRole is the one role that auth/approle/login accepts.
type AppRole struct {
	RoleID   string
	SecretID string
	// Policy limits what the role's tokens may do; nil lets them do
	// anything, as if they held the root policy.
	Policy Policy
}

// Policy maps a path, relative to the namespace and written as in a Vault
// ACL policy ("transit/encrypt/backup", "transit/decrypt/*",
// "transit/keys/+/rotate"), to its capabilities: "create", "read", "update",
// "delete", "list" or "deny". Like Vault, encrypt on a key that does not
// exist needs "create"; with only "update" it is denied.
type Policy map[string][]string

// Server is the Transit test server. Its methods are safe for concurrent use.
type Server struct {
	opts   Options
	logger hclog.Logger

	mu       sync.Mutex
	sealed   bool
	tokens   map[string]*token
	engines  map[string]*engine // by namespace path, "" for root
	requests map[string]int     // by request path without "/v1/"
	total    int

	httpSrv *http.Server
	url     string
}

// New returns a server that has not started listening; use Start, or mount
// Handler on a server of your own.
func New(opts Options) *Server {
	if opts.RootToken == "" {
		opts.RootToken = "root"
	}
	opts.Mount = strings.Trim(opts.Mount, "/")
	if opts.Mount == "" {
		opts.Mount = "transit"
	}
	if opts.TokenTTL <= 0 {
		opts.TokenTTL = defaultTokenTTL
	}
	if opts.TokenMaxTTL <= 0 {
		opts.TokenMaxTTL = defaultTokenTTL
	}
	if opts.TokenTTL > opts.TokenMaxTTL {
		opts.TokenTTL = opts.TokenMaxTTL
	}
	logger := opts.Logger
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s := &Server{
		opts:     opts,
		logger:   logger,
		tokens:   map[string]*token{},
		engines:  map[string]*engine{},
		requests: map[string]int{},
	}
	s.tokens[opts.RootToken] = &token{
		id:          opts.RootToken,
		accessor:    randomID(24),
		policies:    []string{"root"},
		root:        true,
		displayName: "root",
		path:        "auth/token/root",
		issued:      time.Now(),
	}
	return s
}

// Start listens on addr ("127.0.0.1:0" in tests) and serves in the
// background. It returns the base URL for api.Config{Address: url}.
func (s *Server) Start(addr string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.httpSrv != nil {
		return "", errors.New("transit test server already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.httpSrv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.url = "http://" + ln.Addr().String()
	go func() {
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("serve", "error", err)
		}
	}()
	return s.url, nil
}

// URL is the base URL Start returned, or "" before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// RootToken is the token that may do anything.
func (s *Server) RootToken() string { return s.opts.RootToken }

// Mount is the path the Transit engine answers under.
func (s *Server) Mount() string { return s.opts.Mount }

// AppRole is the role that auth/approle/login accepts.
func (s *Server) AppRole() AppRole { return s.opts.AppRole }

// Close stops a started server, waiting up to five seconds for requests in
// flight. Keys and tokens are dropped with the server.
func (s *Server) Close() error {
	s.mu.Lock()
	srv := s.httpSrv
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		return errors.Join(err, srv.Close())
	}
	return nil
}

// Seal makes every request except sys/health and sys/seal-status fail with
// 503 "Vault is sealed", as a sealed Vault does. Keys and tokens survive.
func (s *Server) Seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
}

// Unseal undoes Seal.
func (s *Server) Unseal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = false
}

// Sealed reports whether the server is sealed.
func (s *Server) Sealed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealed
}

// Requests is how many requests arrived for path, which is the URL path
// with or without the leading "/v1/" ("transit/encrypt/backup",
// "sys/health"), whatever their namespace or outcome: rejected and sealed
// ones count too. An empty path counts every request.
func (s *Server) Requests(path string) int {
	path = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(path, "/"), "v1/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	if path == "" {
		return s.total
	}
	return s.requests[path]
}

// ResetRequests zeroes the request counts.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = map[string]int{}
	s.total = 0
}

// engineFor returns the keyring of a namespace, making it on first use:
// every namespace has the engine mounted.
func (s *Server) engineFor(ns string) *engine {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.engines[ns]
	if !ok {
		e = newEngine()
		s.engines[ns] = e
	}
	return e
}
