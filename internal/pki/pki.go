package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names inside a PKI directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// Validity periods.
const (
	CAValidity      = 10 * 365 * 24 * time.Hour
	DefaultValidity = 365 * 24 * time.Hour
)

// backdate absorbs clock skew between the controller and the agents: a
// certificate minted a second ago must not be "not yet valid" elsewhere.
const backdate = 5 * time.Minute

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Name string
	Role Role
	// DNS and IPs are the SANs a client checks when dialling the holder.
	// When both are empty the certificate is valid for localhost,
	// 127.0.0.1 and ::1.
	DNS []string
	IPs []net.IP
	// Validity defaults to DefaultValidity; it is cut short at the CA's own
	// expiry, since a certificate cannot verify past its issuer's.
	Validity time.Duration
}

// Identity is the identity the request would put in the certificate.
func (r IssueRequest) Identity() Identity {
	return Identity{Name: r.Name, Role: r.Role}
}

func (r IssueRequest) validate() error {
	if err := ValidateName(r.Name); err != nil {
		return err
	}
	if !r.Role.Valid() {
		return fmt.Errorf("invalid role %q: want one of %s", r.Role, joinRoles(Roles()))
	}
	if r.Validity < 0 {
		return fmt.Errorf("invalid validity %v: must not be negative", r.Validity)
	}
	for _, d := range r.DNS {
		if d == "" {
			return errors.New("invalid dns name: empty")
		}
	}
	for _, ip := range r.IPs {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return fmt.Errorf("invalid ip address %v", ip)
		}
	}
	return nil
}

// CA is a loaded certificate authority able to sign certificates in memory.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// Leaf is a signed certificate and its private key, PEM encoded.
type Leaf struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte
}

// TLSCertificate returns the leaf ready for a tls.Config.
func (l *Leaf) TLSCertificate() (tls.Certificate, error) {
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load key pair for %s: %w", l.Cert.Subject.CommonName, err)
	}
	return c, nil
}

// NewCA creates a fresh self-signed CA in memory.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ca key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ferry CA", Organization: []string{"ferry"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// Only leaves sit below this CA; an intermediate would be a way
		// around it.
		MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse ca certificate: %w", err)
	}
	return &CA{cert: cert, certPEM: encodePEM("CERTIFICATE", der), key: key}, nil
}

// LoadCA loads the CA kept in dir by Init.
func LoadCA(dir string) (*CA, error) {
	certFile := filepath.Join(dir, CACertFile)
	keyFile := filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", certFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("load ca %s: not a ca certificate", certFile)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("load ca: %w", err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load ca %s: %w", keyFile, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("load ca: %s does not match %s", keyFile, certFile)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key}, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate, PEM encoded.
func (ca *CA) CertPEM() []byte { return ca.certPEM }

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Sign issues a certificate in memory.
func (ca *CA) Sign(req IssueRequest) (*Leaf, error) {
	if err := req.validate(); err != nil {
		return nil, fmt.Errorf("issue certificate: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue %s: generate key: %w", req.Name, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	validity := req.Validity
	if validity == 0 {
		validity = DefaultValidity
	}
	now := time.Now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	dns, ips := req.DNS, req.IPs
	if len(dns) == 0 && len(ips) == 0 {
		dns = []string{"localhost"}
		ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: req.Name, Organization: []string{"ferry"}},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		// Agents serve the controller and dial each other with the same
		// certificate, so every leaf is good for both sides.
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		DNSNames:              dns,
		IPAddresses:           ips,
		URIs:                  []*url.URL{req.Identity().URI()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: create certificate: %w", req.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue %s: parse certificate: %w", req.Name, err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("issue %s: marshal key: %w", req.Name, err)
	}
	return &Leaf{Cert: cert, CertPEM: encodePEM("CERTIFICATE", der), KeyPEM: encodePEM("PRIVATE KEY", keyDER)}, nil
}

// Init creates dir and a new CA in it. It refuses to replace an existing CA:
// every certificate issued so far would silently stop verifying.
func Init(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("init ca: %w", err)
	}
	certFile := filepath.Join(dir, CACertFile)
	keyFile := filepath.Join(dir, CAKeyFile)
	if err := refuseExisting(certFile, keyFile); err != nil {
		return fmt.Errorf("init ca: %w", err)
	}
	ca, err := NewCA()
	if err != nil {
		return fmt.Errorf("init ca: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return fmt.Errorf("init ca: marshal key: %w", err)
	}
	if err := writePair(certFile, ca.certPEM, keyFile, encodePEM("PRIVATE KEY", keyDER)); err != nil {
		return fmt.Errorf("init ca: %w", err)
	}
	return nil
}

// Issue signs a certificate with the CA in dir and writes <name>.crt and
// <name>.key next to it, refusing to replace existing files.
func Issue(dir string, req IssueRequest) (certPath, keyPath string, err error) {
	if err := req.validate(); err != nil {
		return "", "", fmt.Errorf("issue certificate: %w", err)
	}
	certPath = filepath.Join(dir, req.Name+".crt")
	keyPath = filepath.Join(dir, req.Name+".key")
	if err := refuseExisting(certPath, keyPath); err != nil {
		return "", "", fmt.Errorf("issue %s: %w", req.Name, err)
	}
	ca, err := LoadCA(dir)
	if err != nil {
		return "", "", fmt.Errorf("issue %s: %w", req.Name, err)
	}
	leaf, err := ca.Sign(req)
	if err != nil {
		return "", "", err
	}
	if err := writePair(certPath, leaf.CertPEM, keyPath, leaf.KeyPEM); err != nil {
		return "", "", fmt.Errorf("issue %s: %w", req.Name, err)
	}
	return certPath, keyPath, nil
}

// IdentityFromCert reads the ferry identity of a certificate. Exactly one
// ferry URI SAN must be present; anything else is ErrNoIdentity, because a
// certificate that could be read as two identities must be neither.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, fmt.Errorf("read identity: %w: nil certificate", ErrNoIdentity)
	}
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		id, err := parseIdentityURI(u)
		if err != nil {
			return Identity{}, fmt.Errorf("read identity of %q: %w: %w", cert.Subject.CommonName, ErrNoIdentity, err)
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, fmt.Errorf("read identity of %q: %w", cert.Subject.CommonName, ErrNoIdentity)
	case 1:
		return found[0], nil
	default:
		return Identity{}, fmt.Errorf("read identity of %q: %w: %d ferry uris", cert.Subject.CommonName, ErrNoIdentity, len(found))
	}
}

// LoadPool reads a PEM CA bundle into a pool, refusing a file with no
// certificate in it (an empty pool would make the error obscure later).
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("load ca pool: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("load ca pool %s: no pem certificate found", caFile)
	}
	return pool, nil
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	// A zero serial is not allowed by RFC 5280.
	return s.Add(s, big.NewInt(1)), nil
}

func encodePEM(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("no pem certificate found")
	}
	return x509.ParseCertificate(b.Bytes)
}

func parseKeyPEM(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, errors.New("no pem private key found")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", k)
	}
	return s, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func refuseExisting(paths ...string) error {
	for _, p := range paths {
		_, err := os.Lstat(p)
		if err == nil {
			return fmt.Errorf("refusing to overwrite existing %s", p)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("check %s: %w", p, err)
		}
	}
	return nil
}

// writePair writes the key first and removes it again if the certificate
// cannot be written, so a failure leaves neither half behind.
func writePair(certPath string, certPEM []byte, keyPath string, keyPEM []byte) error {
	if err := writeNew(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certPath, certPEM, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	return nil
}

// writeNew creates path exclusively: O_EXCL closes the gap between the
// existence check and the write against a concurrent issuer.
func writeNew(path string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("refusing to overwrite existing %s", path)
	}
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
