package config

import (
	"regexp"
	"time"

	"github.com/ferrybackup/ferry/internal/pki"
)

// Defaults of the agent settings that have one.
const (
	DefaultLogLevel        = "info"
	DefaultLogFormat       = "text"
	DefaultMaxSessions     = 4
	DefaultShutdownTimeout = "30s"
	DefaultWANCacheSize    = "10GiB"
)

// MaxMaxSessions is the largest max_sessions an agent accepts.
const MaxMaxSessions = 64

// Agent roles, spelt as in certificates.
const (
	RoleSource = string(pki.RoleSource)
	RoleTarget = string(pki.RoleTarget)
)

var repoNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Agent is the configuration of agent-source and agent-target, one file
// per agent.
//
// The string fields with a parsed twin (ShutdownTimeout and
// ShutdownTimeoutDuration, Bandwidth and BandwidthBytesPerSec) are filled
// as a pair: the file sets the string and Validate sets the twin.
type Agent struct {
	// Name is the agent's name (required). It must equal the name in the
	// agent's certificate (ferry://<role>/<name>): 1-64 characters of
	// letters, digits, '.', '_' and '-'.
	Name string `hcl:"name,optional"`
	// Role is "source" or "target" (required) and must equal the role in
	// the agent's certificate.
	Role string `hcl:"role,optional"`
	// Listen is the host:port of the agent's gRPC server (required), which
	// the controller and, for a target, source agents dial.
	Listen string `hcl:"listen,optional"`
	// StateDir is the directory of the agent's own state (required): the
	// durable progress of sessions, so that they can resume. No key
	// material is ever kept there.
	StateDir string `hcl:"state_dir,optional"`
	// LogLevel is one of LogLevels; default "info".
	LogLevel string `hcl:"log_level,optional"`
	// LogFormat is "text" or "json"; default "text".
	LogFormat string `hcl:"log_format,optional"`
	// MaxSessions is how many sessions the agent runs at once, 1 to
	// MaxMaxSessions; default 4.
	MaxSessions int `hcl:"max_sessions,optional"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM, as a Go
	// duration ("30s", "2m"); default "30s". Sessions still running when it
	// expires are interrupted and resume later.
	ShutdownTimeout string `hcl:"shutdown_timeout,optional"`
	// ShutdownTimeoutDuration is ShutdownTimeout parsed.
	ShutdownTimeoutDuration time.Duration
	// DurabilityInterval is how much a target agent receives between two
	// fsyncs of a session's file; each is acknowledged to the source, so a
	// session cut off resends at most this much ("32MiB" default; 1MiB to
	// 1GiB). Smaller suits slow links, larger fast ones. Targets only.
	DurabilityInterval string `hcl:"durability_interval,optional"`
	// DurabilityIntervalBytes is DurabilityInterval parsed; 0 when unset.
	DurabilityIntervalBytes int64
	// TLS is the agent's certificate and the controller's CA (required).
	TLS *TLS `hcl:"tls,block"`
	// Repositories are the agent's repositories, in file order; names are
	// unique. A source agent reads restore points from them (and writes
	// its own backups there); a target agent commits copies to them.
	Repositories []Repository `hcl:"repository,block"`
	// Bandwidth caps the bytes per second this agent sends and receives
	// over the network: bits per second ("50Mbit", "1Gbit"), bytes per
	// second ("10MB/s", "512KiB/s") or a plain number of bytes per second.
	// Empty or "0" means unlimited.
	Bandwidth string `hcl:"bandwidth,optional"`
	// BandwidthBytesPerSec is Bandwidth parsed; 0 means unlimited.
	BandwidthBytesPerSec int64
	// WANCache is the global block cache of WAN mode; target agents only.
	// Nil when absent.
	WANCache *WANCache `hcl:"wan_cache,block"`
	// Telemetry serves metrics when present.
	Telemetry *Telemetry `hcl:"telemetry,block"`
}

// Repository is a directory of backups that an agent owns, declared as
// repository "NAME" { ... }.
type Repository struct {
	// Name is the block's label, by which jobs refer to the repository:
	// 1-64 characters of letters, digits, '.', '_' and '-', starting with
	// a letter or a digit.
	Name string `hcl:"name,label"`
	// Path is the repository's directory (required).
	Path string `hcl:"path,optional"`
	// RequireEncryption refuses every job and session that would write
	// unencrypted backup files into the repository; default false.
	RequireEncryption bool `hcl:"require_encryption,optional"`
}

// WANCache is the target agent's global cache of blocks in WAN mode: the
// source sends only the blocks that the cache (and the previous restore
// point) lacks.
type WANCache struct {
	// Path is the cache's directory (required in the block).
	Path string `hcl:"path,optional"`
	// Size is the cache's capacity in bytes, with an optional unit
	// ("10GiB", "500GB"); default "10GiB".
	Size string `hcl:"size,optional"`
	// SizeBytes is Size parsed.
	SizeBytes int64
}

// LoadAgent reads, defaults and validates the agent configuration in the
// file at path. Relative paths in it are resolved against the directory
// holding the file.
func LoadAgent(path string) (*Agent, error) {
	src, err := readFile("agent", path)
	if err != nil {
		return nil, err
	}
	return ParseAgent(src, path)
}

// ParseAgent parses src as an agent configuration in HCL, applies the
// defaults, resolves relative paths against the directory of filename
// (made absolute from the working directory if it is relative), and
// validates the result. filename also appears in error positions.
//
// Errors start with file:line,column. A syntax error, an unknown attribute
// or block, or a value of the wrong type stops at decoding; otherwise
// every validation problem is reported, each a *FieldError.
func ParseAgent(src []byte, filename string) (*Agent, error) {
	var a Agent
	body, err := decode(src, filename, &a)
	if err != nil {
		return nil, err
	}
	var ps problems
	if a.MaxSessions == 0 && present(body, "max_sessions") {
		ps.add(fieldPath{}.attr("max_sessions"), "0 is out of range; use 1 to %d (default %d)", MaxMaxSessions, DefaultMaxSessions)
	}
	a.ApplyDefaults()
	dir, err := configDir(filename)
	if err != nil {
		return nil, err
	}
	a.resolvePaths(dir)
	a.validate(&ps)
	if err := locate(ps.err(), body); err != nil {
		return nil, err
	}
	return &a, nil
}

// ApplyDefaults sets every unset optional setting to its default. A
// wan_cache block gets its default size only when the block is present.
func (a *Agent) ApplyDefaults() {
	if a.LogLevel == "" {
		a.LogLevel = DefaultLogLevel
	}
	if a.LogFormat == "" {
		a.LogFormat = DefaultLogFormat
	}
	if a.MaxSessions == 0 {
		a.MaxSessions = DefaultMaxSessions
	}
	if a.ShutdownTimeout == "" {
		a.ShutdownTimeout = DefaultShutdownTimeout
	}
	if a.WANCache != nil && a.WANCache.Size == "" {
		a.WANCache.Size = DefaultWANCacheSize
	}
}

func (a *Agent) resolvePaths(dir string) {
	resolve(dir, &a.StateDir)
	a.TLS.resolve(dir)
	for i := range a.Repositories {
		resolve(dir, &a.Repositories[i].Path)
	}
	if a.WANCache != nil {
		resolve(dir, &a.WANCache.Path)
	}
}

// Validate checks every setting and returns all problems found, joined,
// each a *FieldError naming the setting and what it allows. It expects
// defaults to be applied (ApplyDefaults), and fills the parsed twins of
// the string settings: ShutdownTimeoutDuration, BandwidthBytesPerSec and
// WANCache.SizeBytes. It does not touch the file system.
func (a *Agent) Validate() error {
	var ps problems
	a.validate(&ps)
	return ps.err()
}

func (a *Agent) validate(ps *problems) {
	top := fieldPath{}
	if required(ps, top.attr("name"), a.Name, "the agent's name, as in its certificate") {
		if err := pki.ValidateName(a.Name); err != nil {
			ps.add(top.attr("name"), "%q is not a valid name; use 1-64 characters of letters, digits, '.', '_' and '-' (not \".\", \"..\" or \"ca\"), equal to the name in the agent's certificate", a.Name)
		}
	}
	if a.Role == "" {
		ps.add(top.attr("role"), "required; set it to %q or %q", RoleSource, RoleTarget)
	} else {
		checkOneOf(ps, top.attr("role"), a.Role, []string{RoleSource, RoleTarget})
	}
	checkListen(ps, top.attr("listen"), a.Listen, "0.0.0.0:7701")
	required(ps, top.attr("state_dir"), a.StateDir, "the directory for the agent's state, e.g. \"/var/lib/ferry/agent\"")
	checkOneOf(ps, top.attr("log_level"), a.LogLevel, LogLevels)
	checkOneOf(ps, top.attr("log_format"), a.LogFormat, LogFormats)
	if a.MaxSessions < 1 || a.MaxSessions > MaxMaxSessions {
		ps.add(top.attr("max_sessions"), "%d is out of range; use 1 to %d (default %d)", a.MaxSessions, MaxMaxSessions, DefaultMaxSessions)
	}
	if d, err := parseDuration(a.ShutdownTimeout); err != nil {
		ps.add(top.attr("shutdown_timeout"), "%v", err)
	} else if d <= 0 {
		ps.add(top.attr("shutdown_timeout"), "%q is not positive; use e.g. %q", a.ShutdownTimeout, DefaultShutdownTimeout)
	} else {
		a.ShutdownTimeoutDuration = d
	}
	a.TLS.validate(ps, top.block("tls", 0, ""))
	a.validateRepositories(ps)
	a.DurabilityIntervalBytes = 0
	if a.DurabilityInterval != "" {
		n, err := parseSize(a.DurabilityInterval)
		switch {
		case err != nil:
			ps.add(top.attr("durability_interval"), "%v", err)
		case a.Role == RoleSource:
			ps.add(top.attr("durability_interval"), "only a target agent receives sessions; remove it or set role = %q", RoleTarget)
		case n < 1<<20 || n > 1<<30:
			ps.add(top.attr("durability_interval"), "%q is out of range; use 1MiB to 1GiB (default 32MiB)", a.DurabilityInterval)
		default:
			a.DurabilityIntervalBytes = n
		}
	}
	a.BandwidthBytesPerSec = 0
	if a.Bandwidth != "" {
		if n, err := parseRate(a.Bandwidth); err != nil {
			ps.add(top.attr("bandwidth"), "%v", err)
		} else {
			a.BandwidthBytesPerSec = n
		}
	}
	if c := a.WANCache; c != nil {
		p := top.block("wan_cache", 0, "")
		if a.Role == RoleSource {
			ps.add(p, "only a target agent has a WAN cache; remove the block or set role = %q", RoleTarget)
		}
		required(ps, p.attr("path"), c.Path, "the cache's directory, e.g. \"/var/cache/ferry\"")
		if n, err := parseSize(c.Size); err != nil {
			ps.add(p.attr("size"), "%v", err)
		} else if n <= 0 {
			ps.add(p.attr("size"), "must be more than 0 bytes; use e.g. %q", DefaultWANCacheSize)
		} else {
			c.SizeBytes = n
		}
	}
	a.Telemetry.validate(ps, top.block("telemetry", 0, ""), "127.0.0.1:9101")
}

func (a *Agent) validateRepositories(ps *problems) {
	names := map[string]bool{}
	paths := map[string]string{}
	for i, r := range a.Repositories {
		p := fieldPath{}.block("repository", i, r.Name)
		switch _, dup := names[r.Name]; {
		case !repoNameRE.MatchString(r.Name):
			ps.add(p, "%q is not a valid repository name; use 1-64 characters of letters, digits, '.', '_' and '-', starting with a letter or digit", r.Name)
		case dup:
			ps.add(p, "defined more than once; repository names must be unique, so rename or remove this block")
		default:
			names[r.Name] = true
		}
		if !required(ps, p.attr("path"), r.Path, "the repository's directory, e.g. \"/srv/ferry/"+r.Name+"\"") {
			continue
		}
		if other, ok := paths[r.Path]; ok && other != r.Name {
			ps.add(p.attr("path"), "%q is also the path of repository %q; each repository needs its own directory", r.Path, other)
		} else {
			paths[r.Path] = r.Name
		}
	}
}

// Repository returns the repository called name.
func (a *Agent) Repository(name string) (*Repository, bool) {
	for i := range a.Repositories {
		if a.Repositories[i].Name == name {
			return &a.Repositories[i], true
		}
	}
	return nil, false
}
