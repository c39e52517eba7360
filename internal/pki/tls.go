package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ErrRoleNotAllowed means the peer's certificate is valid but carries a
// role this side does not accept.
var ErrRoleNotAllowed = errors.New("peer role not allowed")

// ServerTLSConfig loads a server configuration from PEM files; see
// ServerConfig.
func ServerTLSConfig(certFile, keyFile, caFile string, allowed ...Role) (*tls.Config, error) {
	cert, roots, err := loadFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	return ServerConfig(cert, roots, allowed...)
}

// ClientTLSConfig loads a client configuration from PEM files; see
// ClientConfig.
func ClientTLSConfig(certFile, keyFile, caFile string, serverRole Role) (*tls.Config, error) {
	cert, roots, err := loadFiles(certFile, keyFile, caFile)
	if err != nil {
		return nil, fmt.Errorf("client tls config: %w", err)
	}
	return ClientConfig(cert, roots, serverRole)
}

// ServerConfig requires TLS 1.3 and a client certificate chaining to roots
// whose role is one of allowed. An empty allowed list is an error rather
// than "anyone": forgetting the roles must not open the door.
func ServerConfig(cert tls.Certificate, roots *x509.CertPool, allowed ...Role) (*tls.Config, error) {
	if len(allowed) == 0 {
		return nil, errors.New("server tls config: no allowed client roles")
	}
	for _, r := range allowed {
		if !r.Valid() {
			return nil, fmt.Errorf("server tls config: invalid allowed role %q", r)
		}
	}
	if err := checkOwnCert(cert); err != nil {
		return nil, fmt.Errorf("server tls config: %w", err)
	}
	allowed = slices.Clone(allowed)
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// VerifyConnection rather than VerifyPeerCertificate: it also runs
		// on resumed sessions, which skip certificate verification.
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkPeerRole(cs, "client", allowed)
		},
	}, nil
}

// ClientConfig requires TLS 1.3, presents cert, and accepts only a server
// whose certificate chains to roots, matches the dialled host name, and
// carries serverRole.
func ClientConfig(cert tls.Certificate, roots *x509.CertPool, serverRole Role) (*tls.Config, error) {
	if !serverRole.Valid() {
		return nil, fmt.Errorf("client tls config: invalid server role %q", serverRole)
	}
	if err := checkOwnCert(cert); err != nil {
		return nil, fmt.Errorf("client tls config: %w", err)
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkPeerRole(cs, "server", []Role{serverRole})
		},
	}, nil
}

// PeerIdentity returns the verified identity of the peer of a gRPC call
// served over credentials built from ServerConfig (or of the server, on a
// client connection's context).
func PeerIdentity(ctx context.Context) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, errors.New("peer identity: no peer in context")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Identity{}, fmt.Errorf("peer identity of %v: connection is not tls (auth %T)", p.Addr, p.AuthInfo)
	}
	id, err := verifiedIdentity(info.State)
	if err != nil {
		return Identity{}, fmt.Errorf("peer identity of %v: %w", p.Addr, err)
	}
	return id, nil
}

// verifiedIdentity reads the identity from the verified chain only:
// PeerCertificates is whatever the peer sent, verified or not.
func verifiedIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Identity{}, errors.New("no verified peer certificate")
	}
	return IdentityFromCert(cs.VerifiedChains[0][0])
}

func checkPeerRole(cs tls.ConnectionState, side string, allowed []Role) error {
	id, err := verifiedIdentity(cs)
	if err != nil {
		return fmt.Errorf("verify %s: %w", side, err)
	}
	if !slices.Contains(allowed, id.Role) {
		return fmt.Errorf("verify %s %q: %w: role %q, want %s", side, id.Name, ErrRoleNotAllowed, id.Role, joinRoles(allowed))
	}
	return nil
}

// checkOwnCert catches a swapped file (the CA certificate, or a foreign
// one) when the config is built instead of at the peer's first handshake.
func checkOwnCert(cert tls.Certificate) error {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return errors.New("empty certificate")
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("parse own certificate: %w", err)
		}
	}
	if _, err := IdentityFromCert(leaf); err != nil {
		return fmt.Errorf("own certificate: %w", err)
	}
	return nil
}

func loadFiles(certFile, keyFile, caFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("load key pair %s: %w", certFile, err)
	}
	roots, err := LoadPool(caFile)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	return cert, roots, nil
}
