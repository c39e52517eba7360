package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// agentBase is a minimal valid agent; the tests below count on its line
// numbers (anything appended starts at line 13).
const agentBase = `name   = "branch-a"
role   = "source"
listen = "0.0.0.0:7701"
state_dir = "/var/lib/ferry/agent"
tls {
  cert_file = "/etc/ferry/branch-a.crt"
  key_file  = "/etc/ferry/branch-a.key"
  ca_file   = "/etc/ferry/ca.crt"
}
repository "local" {
  path = "/srv/ferry/local"
}
`

func TestAgentDefaults(t *testing.T) {
	src := edit(t, agentBase, `role   = "source"`, `role   = "target"`) + "wan_cache {\n  path = \"/var/cache/ferry\"\n}\n"
	a, err := ParseAgent([]byte(src), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if a.LogLevel != "info" || a.LogFormat != "text" || a.MaxSessions != 4 {
		t.Errorf("log_level, log_format, max_sessions = %q, %q, %d; want info, text, 4", a.LogLevel, a.LogFormat, a.MaxSessions)
	}
	if a.ShutdownTimeout != "30s" || a.ShutdownTimeoutDuration != 30*time.Second {
		t.Errorf("shutdown_timeout = %q (%v); want 30s", a.ShutdownTimeout, a.ShutdownTimeoutDuration)
	}
	if a.Bandwidth != "" || a.BandwidthBytesPerSec != 0 {
		t.Errorf("bandwidth = %q (%d); want unlimited", a.Bandwidth, a.BandwidthBytesPerSec)
	}
	if a.WANCache.Size != "10GiB" || a.WANCache.SizeBytes != 10<<30 {
		t.Errorf("wan_cache.size = %q (%d); want 10GiB", a.WANCache.Size, a.WANCache.SizeBytes)
	}
	if a.Telemetry != nil {
		t.Errorf("telemetry = %+v; want nil", a.Telemetry)
	}
	r, ok := a.Repository("local")
	if !ok || r.Path != "/srv/ferry/local" || r.RequireEncryption {
		t.Errorf("Repository(local) = %+v, %v", r, ok)
	}
	if _, ok := a.Repository("other"); ok {
		t.Error("Repository(other) found")
	}
}

func TestAgentAllSettings(t *testing.T) {
	src := edit(t, agentBase, `role   = "source"`, `role   = "target"`) + `
log_level = "debug"
log_format = "json"
max_sessions = 64
shutdown_timeout = "2m30s"
bandwidth = "50Mbit"
durability_interval = "8MiB"
repository "vault-copies" {
  path = "/srv/ferry/copies"
  require_encryption = true
}
wan_cache {
  path = "/var/cache/ferry"
  size = "500GB"
}
telemetry {
  listen = "127.0.0.1:9101"
}
`
	a, err := ParseAgent([]byte(src), "agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if a.LogLevel != "debug" || a.LogFormat != "json" || a.MaxSessions != 64 || a.ShutdownTimeoutDuration != 150*time.Second {
		t.Errorf("got %q %q %d %v", a.LogLevel, a.LogFormat, a.MaxSessions, a.ShutdownTimeoutDuration)
	}
	if a.DurabilityIntervalBytes != 8<<20 {
		t.Errorf("durability_interval 8MiB = %d bytes", a.DurabilityIntervalBytes)
	}
	if a.BandwidthBytesPerSec != 6_250_000 {
		t.Errorf("bandwidth 50Mbit = %d bytes/s; want 6250000", a.BandwidthBytesPerSec)
	}
	if a.WANCache.SizeBytes != 500e9 || a.Telemetry.Listen != "127.0.0.1:9101" {
		t.Errorf("wan_cache %+v, telemetry %+v", a.WANCache, a.Telemetry)
	}
	if len(a.Repositories) != 2 {
		t.Fatalf("%d repositories; want 2", len(a.Repositories))
	}
	if r, ok := a.Repository("vault-copies"); !ok || !r.RequireEncryption {
		t.Errorf("Repository(vault-copies) = %+v, %v", r, ok)
	}
}

func TestAgentUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"attribute", agentBase + `colour = "red"` + "\n", `agent.hcl:13,1-7: Unsupported argument; An argument named "colour" is not expected here.`},
		{"block", agentBase + "cache {\n}\n", `agent.hcl:13,1-6: Unsupported block type; Blocks of type "cache" are not expected here.`},
		{"nested attribute", edit(t, agentBase, `  ca_file   = "/etc/ferry/ca.crt"`, `  ca_file   = "/etc/ferry/ca.crt"`+"\n  ca_path = \"/etc/ssl\""), `agent.hcl:9,3-10: Unsupported argument; An argument named "ca_path" is not expected here.`},
		{"misspelt", agentBase + `state_directory = "/x"` + "\n", `agent.hcl:13,1-16: Unsupported argument; An argument named "state_directory" is not expected here.`},
		{"wrong type", agentBase + `max_sessions = "many"` + "\n", `agent.hcl:13,17-21: Unsuitable value type; Unsuitable value: a number is required`},
		{"repository without label", agentBase + "repository {\n  path = \"/x\"\n}\n", `agent.hcl:13,12-13: Missing name for repository`},
		{"two tls blocks", agentBase + "tls {\n}\n", `agent.hcl:13,1-4: Duplicate tls block`},
		{"syntax", agentBase + "name = \n", `agent.hcl:13,`},
		{"variable", agentBase + "log_level = var.level\n", `agent.hcl:13,13-16: Variables not allowed`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAgent([]byte(tc.src), "agent.hcl")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestAgentValidation(t *testing.T) {
	target := func(src string) string { return strings.Replace(src, `role   = "source"`, `role   = "target"`, 1) }
	for _, tc := range []struct {
		name  string
		src   string
		field string
		pos   string // where the error points
		want  string // part of the problem
	}{
		{"missing name", edit(t, agentBase, "name   = \"branch-a\"\n", ""), "name", "agent.hcl: ", "required"},
		{"bad name", edit(t, agentBase, `"branch-a"`, `"branch a"`), "name", "agent.hcl:1,10-20: ", "letters, digits"},
		{"reserved name", edit(t, agentBase, `"branch-a"`, `"ca"`), "name", "agent.hcl:1,", `"ca" is not a valid name`},
		{"missing role", edit(t, agentBase, "role   = \"source\"\n", ""), "role", "agent.hcl: ", `"source" or "target"`},
		{"bad role", edit(t, agentBase, `"source"`, `"sink"`), "role", "agent.hcl:2,10-16: ", `"sink" is not allowed; use one of "source", "target"`},
		{"missing listen", edit(t, agentBase, "listen = \"0.0.0.0:7701\"\n", ""), "listen", "agent.hcl: ", "required"},
		{"listen without port", edit(t, agentBase, `"0.0.0.0:7701"`, `"0.0.0.0"`), "listen", "agent.hcl:3,", "missing port in address"},
		{"listen bad port", edit(t, agentBase, `"0.0.0.0:7701"`, `"0.0.0.0:77010"`), "listen", "agent.hcl:3,", "0 to 65535"},
		{"listen bad host", edit(t, agentBase, `"0.0.0.0:7701"`, `"my_host!:7701"`), "listen", "agent.hcl:3,", "neither an IP address nor a host name"},
		{"missing state_dir", edit(t, agentBase, "state_dir = \"/var/lib/ferry/agent\"\n", ""), "state_dir", "agent.hcl: ", "required"},
		{"bad log level", agentBase + `log_level = "verbose"`, "log_level", "agent.hcl:13,", `"verbose" is not allowed; use one of "trace", "debug", "info", "warn", "error"`},
		{"bad log format", agentBase + `log_format = "logfmt"`, "log_format", "agent.hcl:13,", `use one of "text", "json"`},
		{"max_sessions zero", agentBase + `max_sessions = 0`, "max_sessions", "agent.hcl:13,", "use 1 to 64"},
		{"max_sessions too big", agentBase + `max_sessions = 65`, "max_sessions", "agent.hcl:13,", "65 is out of range; use 1 to 64"},
		{"bad duration", agentBase + `shutdown_timeout = "30"`, "shutdown_timeout", "agent.hcl:13,", `"30" is not a duration; use a number with a unit`},
		{"negative duration", agentBase + `shutdown_timeout = "-1s"`, "shutdown_timeout", "agent.hcl:13,", "not positive"},
		{"bad rate", agentBase + `bandwidth = "50Mbps"`, "bandwidth", "agent.hcl:13,13-21: ", `"50Mbps" is not a rate`},
		{"missing tls", edit(t, agentBase, "tls {\n  cert_file = \"/etc/ferry/branch-a.crt\"\n  key_file  = \"/etc/ferry/branch-a.key\"\n  ca_file   = \"/etc/ferry/ca.crt\"\n}\n", ""), "tls", "agent.hcl: ", "required block is missing"},
		{"tls without cert", edit(t, agentBase, "  cert_file = \"/etc/ferry/branch-a.crt\"\n", ""), "tls.cert_file", "agent.hcl:5,1-4: ", "required"},
		{"duplicate repository", agentBase + "repository \"local\" {\n  path = \"/srv/other\"\n}", `repository "local"`, "agent.hcl:13,1-19: ", "defined more than once"},
		{"repository without path", agentBase + "repository \"b\" {\n}", `repository "b".path`, "agent.hcl:13,1-15: ", "required"},
		{"bad repository name", agentBase + "repository \"a/b\" {\n  path = \"/x\"\n}", `repository "a/b"`, "agent.hcl:13,", "not a valid repository name"},
		{"repositories sharing a path", agentBase + "repository \"b\" {\n  path = \"/srv/ferry/local/\"\n}", `repository "b".path`, "agent.hcl:14,", `also the path of repository "local"`},
		{"wan_cache without path", target(agentBase) + "wan_cache {\n  size = \"1GiB\"\n}", "wan_cache.path", "agent.hcl:13,1-10: ", "required"},
		{"bad size", target(agentBase) + "wan_cache {\n  path = \"/c\"\n  size = \"10 gigs\"\n}", "wan_cache.size", "agent.hcl:15,10-19: ", `"10 gigs" is not a size`},
		{"zero size", target(agentBase) + "wan_cache {\n  path = \"/c\"\n  size = \"0\"\n}", "wan_cache.size", "agent.hcl:15,", "more than 0"},
		{"wan_cache on a source", agentBase + "wan_cache {\n  path = \"/c\"\n}", "wan_cache", "agent.hcl:13,1-10: ", "only a target agent"},
		{"durability_interval too small", target(agentBase) + `durability_interval = "64KiB"`, "durability_interval", "agent.hcl:13,", `"64KiB" is out of range; use 1MiB to 1GiB`},
		{"durability_interval on a source", agentBase + `durability_interval = "8MiB"`, "durability_interval", "agent.hcl:13,", "only a target agent"},
		{"telemetry without listen", agentBase + "telemetry {\n}", "telemetry.listen", "agent.hcl:13,1-10: ", "required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseAgent([]byte(tc.src), "agent.hcl")
			wantFieldError(t, err, tc.field, tc.pos, tc.want)
			if n := len(fieldErrors(err)); n != 1 {
				t.Errorf("%d problems reported; want 1:\n%v", n, err)
			}
		})
	}
}

func TestAgentReportsEveryProblem(t *testing.T) {
	_, err := ParseAgent([]byte("log_level = \"loud\"\nmax_sessions = 100\n"), "agent.hcl")
	var fields []string
	for _, fe := range fieldErrors(err) {
		fields = append(fields, fe.Field)
	}
	want := "name role listen state_dir log_level max_sessions tls"
	if got := strings.Join(fields, " "); got != want {
		t.Errorf("fields %q; want %q\n%v", got, want, err)
	}
}

func TestAgentRelativePaths(t *testing.T) {
	src := `name = "target"
role = "target"
listen = "127.0.0.1:0"
state_dir = "state/target"
tls {
  cert_file = "pki/target.crt"
  key_file  = "./pki/target.key"
  ca_file   = "/etc/ferry/ca.crt"
}
repository "local" {
  path = "../repos/target-local"
}
wan_cache {
  path = "cache"
}
`
	a, err := ParseAgent([]byte(src), "/etc/ferry/demo/agent.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ got, want string }{
		{a.StateDir, "/etc/ferry/demo/state/target"},
		{a.TLS.CertFile, "/etc/ferry/demo/pki/target.crt"},
		{a.TLS.KeyFile, "/etc/ferry/demo/pki/target.key"},
		{a.TLS.CAFile, "/etc/ferry/ca.crt"},
		{a.Repositories[0].Path, "/etc/ferry/repos/target-local"},
		{a.WANCache.Path, "/etc/ferry/demo/cache"},
	} {
		if c.got != c.want {
			t.Errorf("path %q; want %q", c.got, c.want)
		}
	}

	// A relative file name is made absolute from the working directory.
	a, err = ParseAgent([]byte(src), filepath.Join("conf", "agent.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(wd, "conf", "state", "target"); a.StateDir != want {
		t.Errorf("state_dir %q; want %q", a.StateDir, want)
	}
}

func TestLoadAgent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.hcl")
	src := edit(t, agentBase, `"/var/lib/ferry/agent"`, `"state"`)
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := LoadAgent(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "state"); a.StateDir != want {
		t.Errorf("state_dir %q; want %q", a.StateDir, want)
	}

	if err := os.WriteFile(path, []byte(src+"log_level = \"loud\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAgent(path)
	wantFieldError(t, err, "log_level", path+":13,13-19: ", `"loud" is not allowed`)

	_, err = LoadAgent(filepath.Join(dir, "missing.hcl"))
	if err == nil || !strings.Contains(err.Error(), "read agent config") || !strings.Contains(err.Error(), "missing.hcl") {
		t.Errorf("missing file: error %v", err)
	}
}

// Validate works on configurations built in code, without positions.
func TestAgentValidateInCode(t *testing.T) {
	a := &Agent{
		Name: "source", Role: RoleSource, Listen: "127.0.0.1:0", StateDir: "/tmp/s",
		TLS:       &TLS{CertFile: "c", KeyFile: "k", CAFile: "ca"},
		Bandwidth: "1MiB/s",
	}
	a.ApplyDefaults()
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if a.BandwidthBytesPerSec != 1<<20 || a.ShutdownTimeoutDuration != 30*time.Second {
		t.Errorf("parsed twins not filled: %d, %v", a.BandwidthBytesPerSec, a.ShutdownTimeoutDuration)
	}
	a.Role = "both"
	err := a.Validate()
	wantFieldError(t, err, "role", "role: ", `"both" is not allowed`)
}
