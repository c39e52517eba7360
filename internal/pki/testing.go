package pki

import (
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"sync"
	"testing"
)

// TestPKI is a CA for tests of packages that start agents with real mutual
// TLS. It lives in a non-test file so those packages can import it.
type TestPKI struct {
	t testing.TB
	// Dir holds ca.crt, ca.key and whatever Issue wrote.
	Dir string
	// CAFile is the path of the CA certificate, for configs that take files.
	CAFile string
	CA     *CA

	mu    sync.Mutex
	certs map[Identity]tls.Certificate
}

// NewTestPKI initialises a CA in dir (a fresh t.TempDir() when dir is "").
func NewTestPKI(t testing.TB, dir string) *TestPKI {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if err := Init(dir); err != nil {
		t.Fatalf("test pki: %v", err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("test pki: %v", err)
	}
	return &TestPKI{t: t, Dir: dir, CAFile: filepath.Join(dir, CACertFile), CA: ca, certs: map[Identity]tls.Certificate{}}
}

// Issue writes <name>.crt and <name>.key for a component configured by
// file paths; SANs are the loopback defaults.
func (p *TestPKI) Issue(name string, role Role) (certFile, keyFile string) {
	p.t.Helper()
	certFile, keyFile, err := Issue(p.Dir, IssueRequest{Name: name, Role: role})
	if err != nil {
		p.t.Fatalf("test pki: %v", err)
	}
	return certFile, keyFile
}

// Cert returns an in-memory certificate for name and role, signing it on
// first use and reusing it afterwards.
func (p *TestPKI) Cert(name string, role Role) tls.Certificate {
	p.t.Helper()
	id := Identity{Name: name, Role: role}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.certs[id]; ok {
		return c
	}
	leaf, err := p.CA.Sign(IssueRequest{Name: name, Role: role})
	if err != nil {
		p.t.Fatalf("test pki: %v", err)
	}
	c, err := leaf.TLSCertificate()
	if err != nil {
		p.t.Fatalf("test pki: %v", err)
	}
	p.certs[id] = c
	return c
}

// Pool returns a pool holding the test CA.
func (p *TestPKI) Pool() *x509.CertPool { return p.CA.Pool() }

// ServerTLS is ServerConfig for an in-memory certificate of name and role.
func (p *TestPKI) ServerTLS(name string, role Role, allowed ...Role) *tls.Config {
	p.t.Helper()
	cfg, err := ServerConfig(p.Cert(name, role), p.Pool(), allowed...)
	if err != nil {
		p.t.Fatalf("test pki: %v", err)
	}
	return cfg
}

// ClientTLS is ClientConfig for an in-memory certificate of name and role.
func (p *TestPKI) ClientTLS(name string, role Role, serverRole Role) *tls.Config {
	p.t.Helper()
	cfg, err := ClientConfig(p.Cert(name, role), p.Pool(), serverRole)
	if err != nil {
		p.t.Fatalf("test pki: %v", err)
	}
	return cfg
}
