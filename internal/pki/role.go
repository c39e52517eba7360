package pki

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// Role is what a certificate holder is allowed to act as.
type Role string

// The roles ferry components play. Agents are both gRPC servers (for the
// controller) and clients (of each other), so a role names the component,
// not the side of a connection.
const (
	RoleController Role = "controller"
	RoleSource     Role = "source"
	RoleTarget     Role = "target"
	RoleClient     Role = "client"
)

// Roles returns every valid role.
func Roles() []Role {
	return []Role{RoleController, RoleSource, RoleTarget, RoleClient}
}

// Valid reports whether r is one of the defined roles.
func (r Role) Valid() bool {
	switch r {
	case RoleController, RoleSource, RoleTarget, RoleClient:
		return true
	}
	return false
}

// ParseRole parses a role name exactly as written in certificates; no case
// folding, so the CLI and the certificate spell roles the same way.
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if !r.Valid() {
		return "", fmt.Errorf("parse role %q: want one of %s", s, joinRoles(Roles()))
	}
	return r, nil
}

func joinRoles(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// URIScheme is the scheme of the URI SAN that carries a ferry identity.
const URIScheme = "ferry"

// caName is reserved because its files are the CA's own.
const caName = "ca"

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,64}$`)

// ValidateName checks a certificate name: it becomes a file name and the
// path of the identity URI, so it is restricted to characters that need no
// escaping in either.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("invalid name %q: want 1-64 characters of [a-zA-Z0-9._-]", name)
	}
	if name == "." || name == ".." {
		return fmt.Errorf("invalid name %q: reserved path element", name)
	}
	if name == caName {
		return fmt.Errorf("invalid name %q: reserved for the CA's own files", name)
	}
	return nil
}

// Identity is who a verified certificate belongs to.
type Identity struct {
	Name string
	Role Role
}

// String renders the identity as role/name, the URI without its scheme.
func (id Identity) String() string {
	return string(id.Role) + "/" + id.Name
}

// URI is the SAN that encodes the identity: ferry://<role>/<name>.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(id.Role), Path: "/" + id.Name}
}

// ErrNoIdentity means a certificate carries no (or an ambiguous) ferry
// identity.
var ErrNoIdentity = errors.New("no ferry identity in certificate")

// parseIdentityURI accepts only the exact form Identity.URI produces, so that
// two different readings of one certificate are impossible.
func parseIdentityURI(u *url.URL) (Identity, error) {
	if u.Scheme != URIScheme {
		return Identity{}, fmt.Errorf("uri %q: scheme is not %s", u, URIScheme)
	}
	if u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.RawPath != "" || u.Port() != "" {
		return Identity{}, fmt.Errorf("uri %q: want exactly ferry://<role>/<name>", u)
	}
	role, err := ParseRole(u.Host)
	if err != nil {
		return Identity{}, fmt.Errorf("uri %q: %w", u, err)
	}
	name, ok := strings.CutPrefix(u.Path, "/")
	if !ok {
		return Identity{}, fmt.Errorf("uri %q: want exactly ferry://<role>/<name>", u)
	}
	if err := ValidateName(name); err != nil {
		return Identity{}, fmt.Errorf("uri %q: %w", u, err)
	}
	return Identity{Name: name, Role: role}, nil
}
