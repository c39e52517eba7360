package config

import (
	"encoding/base64"
	"net/url"
	"strings"
	"time"
)

// Defaults of the controller settings that have one (log_level and
// log_format default as for agents).
const (
	DefaultGrantTTL   = "1h"
	DefaultVaultMount = "transit"
)

// Controller is the configuration of the controller daemon
// (`controller serve`).
//
// GrantTTL and GrantTTLDuration, and RecoveryPublicKey and
// RecoveryPublicKeyBytes, are filled as pairs: the file sets the string
// and Validate sets the parsed twin.
type Controller struct {
	// Listen is the host:port of the controller's gRPC server (required),
	// which agents and the CLI dial.
	Listen string `hcl:"listen,optional"`
	// StateDir is the controller's state directory (required): the
	// catalog (catalog.db) and the master key (master.key) that wraps the
	// keys kept in the catalog. Back it up; keep it 0700.
	StateDir string `hcl:"state_dir,optional"`
	// LogLevel is one of LogLevels; default "info".
	LogLevel string `hcl:"log_level,optional"`
	// LogFormat is "text" or "json"; default "text".
	LogFormat string `hcl:"log_format,optional"`
	// GrantTTL is how long a session grant stays valid, as a Go duration
	// ("1h", "90m"); default "1h". A target refuses a stream whose grant
	// has expired.
	GrantTTL string `hcl:"grant_ttl,optional"`
	// GrantTTLDuration is GrantTTL parsed.
	GrantTTLDuration time.Duration
	// TLS is the controller's certificate and its CA (required).
	TLS *TLS `hcl:"tls,block"`
	// Telemetry serves metrics when present.
	Telemetry *Telemetry `hcl:"telemetry,block"`
	// Vault configures HashiCorp Vault's Transit engine as the KMS of
	// jobs encrypted in KMS mode. Nil when absent.
	Vault *Vault `hcl:"vault,block"`
	// RecoveryPublicKey is an optional recovery public key, standard
	// base64: every session secret is also sealed to it, so backups can
	// be recovered with the matching private key if a password is lost.
	RecoveryPublicKey string `hcl:"recovery_public_key,optional"`
	// RecoveryPublicKeyBytes is RecoveryPublicKey decoded; nil when unset.
	RecoveryPublicKeyBytes []byte
}

// Vault is how the controller reaches Vault. It authenticates with a
// token read from TokenFile or with AppRole, exactly one of the two.
type Vault struct {
	// Address is Vault's URL, e.g. "https://vault.example.net:8200"
	// (required in the block).
	Address string `hcl:"address,optional"`
	// Mount is the path where the Transit engine is mounted; default
	// "transit".
	Mount string `hcl:"mount,optional"`
	// Namespace is the Vault Enterprise namespace; empty for none.
	Namespace string `hcl:"namespace,optional"`
	// TokenFile is a file holding a Vault token.
	TokenFile string `hcl:"token_file,optional"`
	// AppRole logs in with AppRole instead of a token file.
	AppRole *AppRole `hcl:"approle,block"`
	// CAFile is a PEM CA certificate to verify Vault's certificate with;
	// empty for the system roots.
	CAFile string `hcl:"ca_file,optional"`
	// ClientCertFile and ClientKeyFile are a PEM client certificate and
	// key for Vault's TLS, both or neither.
	ClientCertFile string `hcl:"client_cert_file,optional"`
	ClientKeyFile  string `hcl:"client_key_file,optional"`
}

// AppRole is Vault AppRole login.
type AppRole struct {
	// RoleID is the role's ID (required); it is not a secret.
	RoleID string `hcl:"role_id,optional"`
	// SecretIDFile is a file holding the secret ID (required).
	SecretIDFile string `hcl:"secret_id_file,optional"`
}

// LoadController reads, defaults and validates the controller
// configuration in the file at path. Relative paths in it are resolved
// against the directory holding the file.
func LoadController(path string) (*Controller, error) {
	src, err := readFile("controller", path)
	if err != nil {
		return nil, err
	}
	return ParseController(src, path)
}

// ParseController parses src as a controller configuration in HCL, as
// ParseAgent does for agents: defaults, relative paths resolved against
// the directory of filename, validation, errors starting with
// file:line,column.
func ParseController(src []byte, filename string) (*Controller, error) {
	var c Controller
	body, err := decode(src, filename, &c)
	if err != nil {
		return nil, err
	}
	c.ApplyDefaults()
	dir, err := configDir(filename)
	if err != nil {
		return nil, err
	}
	c.resolvePaths(dir)
	if err := locate(c.Validate(), body); err != nil {
		return nil, err
	}
	return &c, nil
}

// ApplyDefaults sets every unset optional setting to its default. A vault
// block gets its default mount only when the block is present.
func (c *Controller) ApplyDefaults() {
	if c.LogLevel == "" {
		c.LogLevel = DefaultLogLevel
	}
	if c.LogFormat == "" {
		c.LogFormat = DefaultLogFormat
	}
	if c.GrantTTL == "" {
		c.GrantTTL = DefaultGrantTTL
	}
	if c.Vault != nil && c.Vault.Mount == "" {
		c.Vault.Mount = DefaultVaultMount
	}
}

func (c *Controller) resolvePaths(dir string) {
	resolve(dir, &c.StateDir)
	c.TLS.resolve(dir)
	if v := c.Vault; v != nil {
		resolve(dir, &v.TokenFile, &v.CAFile, &v.ClientCertFile, &v.ClientKeyFile)
		if v.AppRole != nil {
			resolve(dir, &v.AppRole.SecretIDFile)
		}
	}
}

// Validate checks every setting and returns all problems found, joined,
// each a *FieldError naming the setting and what it allows. It expects
// defaults to be applied (ApplyDefaults), and fills GrantTTLDuration and
// RecoveryPublicKeyBytes. It does not touch the file system or Vault.
func (c *Controller) Validate() error {
	var ps problems
	top := fieldPath{}
	checkListen(&ps, top.attr("listen"), c.Listen, "0.0.0.0:7700")
	required(&ps, top.attr("state_dir"), c.StateDir, "the directory for the catalog and master key, e.g. \"/var/lib/ferry/controller\"")
	checkOneOf(&ps, top.attr("log_level"), c.LogLevel, LogLevels)
	checkOneOf(&ps, top.attr("log_format"), c.LogFormat, LogFormats)
	if d, err := parseDuration(c.GrantTTL); err != nil {
		ps.add(top.attr("grant_ttl"), "%v", err)
	} else if d <= 0 {
		ps.add(top.attr("grant_ttl"), "%q is not positive; use e.g. %q", c.GrantTTL, DefaultGrantTTL)
	} else {
		c.GrantTTLDuration = d
	}
	c.TLS.validate(&ps, top.block("tls", 0, ""))
	c.Telemetry.validate(&ps, top.block("telemetry", 0, ""), "127.0.0.1:9100")
	c.Vault.validate(&ps, top.block("vault", 0, ""))
	c.RecoveryPublicKeyBytes = nil
	if c.RecoveryPublicKey != "" {
		b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(c.RecoveryPublicKey))
		switch {
		case err != nil:
			ps.add(top.attr("recovery_public_key"), "not standard base64 (%v); paste the public key exactly as it was printed", err)
		case len(b) == 0:
			ps.add(top.attr("recovery_public_key"), "empty key; remove the setting or paste the public key")
		default:
			c.RecoveryPublicKeyBytes = b
		}
	}
	return ps.err()
}

func (v *Vault) validate(ps *problems, p fieldPath) {
	if v == nil {
		return
	}
	if required(ps, p.attr("address"), v.Address, "Vault's URL, e.g. \"https://vault.example.net:8200\"") {
		u, err := url.Parse(v.Address)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			ps.add(p.attr("address"), "%q is not an http(s) URL; use e.g. \"https://vault.example.net:8200\"", v.Address)
		}
	}
	if v.Mount == "" || strings.HasPrefix(v.Mount, "/") || strings.HasSuffix(v.Mount, "/") {
		ps.add(p.attr("mount"), "%q is not a mount path; use the Transit engine's path without leading or trailing slashes, e.g. %q", v.Mount, DefaultVaultMount)
	}
	switch {
	case v.TokenFile != "" && v.AppRole != nil:
		ps.add(p.attr("token_file"), "set either token_file or an approle block, not both")
	case v.TokenFile == "" && v.AppRole == nil:
		ps.add(p, "no authentication; set token_file = \"...\" or add an approle { role_id = \"...\", secret_id_file = \"...\" } block")
	}
	if a := v.AppRole; a != nil {
		ap := p.block("approle", 0, "")
		required(ps, ap.attr("role_id"), a.RoleID, "the AppRole's role ID")
		required(ps, ap.attr("secret_id_file"), a.SecretIDFile, "a file holding the AppRole's secret ID")
	}
	if (v.ClientCertFile == "") != (v.ClientKeyFile == "") {
		ps.add(p.attr("client_key_file"), "client_cert_file and client_key_file go together; set both or neither")
	}
}
