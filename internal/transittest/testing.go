package transittest

import (
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// NewTest starts a server on 127.0.0.1:0 that logs to t and closes when
// the test ends. Its URL() is ready for api.Config{Address: url}.
func NewTest(t testing.TB, opts Options) *Server {
	t.Helper()
	out := &testLog{t: t}
	if opts.Logger == nil {
		opts.Logger = hclog.New(&hclog.LoggerOptions{Name: "transittest", Level: hclog.Debug, Output: out})
	}
	s := New(opts)
	if _, err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatalf("transit test server: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close transit test server: %v", err)
		}
		out.stop()
	})
	return s
}

// Target is the Vault that a test runs against: a real one when
// VAULT_ADDR and VAULT_TOKEN are both set (srv is nil then), otherwise a
// test server started for t, with AppRole enabled. Tests that need Seal or
// Requests use srv, and so run only against the test server.
func Target(t testing.TB) (addr, token string, srv *Server) {
	t.Helper()
	addr, token = os.Getenv("VAULT_ADDR"), os.Getenv("VAULT_TOKEN")
	if addr != "" && token != "" {
		return addr, token, nil
	}
	srv = NewTest(t, Options{AppRole: AppRole{RoleID: "transittest-role", SecretID: randomID(32)}})
	return srv.URL(), srv.RootToken(), srv
}

// testLog writes log lines to t until the test's cleanup, after which
// t.Log would panic.
type testLog struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.done {
		l.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) stop() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done = true
}
