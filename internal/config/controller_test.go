package config

import (
	"strings"
	"testing"
	"time"
)

// controllerBase is a minimal valid controller; anything appended starts
// at line 8.
const controllerBase = `listen    = "0.0.0.0:7700"
state_dir = "/var/lib/ferry/controller"
tls {
  cert_file = "/etc/ferry/controller.crt"
  key_file  = "/etc/ferry/controller.key"
  ca_file   = "/etc/ferry/ca.crt"
}
`

func TestControllerDefaults(t *testing.T) {
	c, err := ParseController([]byte(controllerBase+"vault {\n  address = \"https://vault:8200\"\n  token_file = \"/etc/ferry/vault-token\"\n}\n"), "controller.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "info" || c.LogFormat != "text" {
		t.Errorf("log_level, log_format = %q, %q; want info, text", c.LogLevel, c.LogFormat)
	}
	if c.GrantTTL != "1h" || c.GrantTTLDuration != time.Hour {
		t.Errorf("grant_ttl = %q (%v); want 1h", c.GrantTTL, c.GrantTTLDuration)
	}
	if c.Vault.Mount != "transit" {
		t.Errorf("vault.mount = %q; want transit", c.Vault.Mount)
	}
	if c.Telemetry != nil || c.RecoveryPublicKeyBytes != nil {
		t.Errorf("telemetry %+v, recovery key %x; want neither", c.Telemetry, c.RecoveryPublicKeyBytes)
	}

	c, err = ParseController([]byte(controllerBase), "controller.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault != nil {
		t.Errorf("vault = %+v; want nil when the block is absent", c.Vault)
	}
}

func TestControllerAllSettings(t *testing.T) {
	src := controllerBase + `
log_level = "warn"
log_format = "json"
grant_ttl = "90m"
telemetry {
  listen = "127.0.0.1:9100"
}
vault {
  address = "https://vault.example.net:8200"
  mount = "ferry/transit"
  namespace = "ops"
  approle {
    role_id = "ferry"
    secret_id_file = "secret-id"
  }
  ca_file = "vault-ca.crt"
  client_cert_file = "/etc/ferry/vault.crt"
  client_key_file = "vault.key"
}
recovery_public_key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
`
	c, err := ParseController([]byte(src), "/etc/ferry/controller.hcl")
	if err != nil {
		t.Fatal(err)
	}
	if c.GrantTTLDuration != 90*time.Minute || c.LogLevel != "warn" || c.LogFormat != "json" {
		t.Errorf("got %v %q %q", c.GrantTTLDuration, c.LogLevel, c.LogFormat)
	}
	v := c.Vault
	if v.Mount != "ferry/transit" || v.Namespace != "ops" || v.AppRole.RoleID != "ferry" {
		t.Errorf("vault %+v", v)
	}
	for _, p := range []struct{ got, want string }{
		{v.AppRole.SecretIDFile, "/etc/ferry/secret-id"},
		{v.CAFile, "/etc/ferry/vault-ca.crt"},
		{v.ClientCertFile, "/etc/ferry/vault.crt"},
		{v.ClientKeyFile, "/etc/ferry/vault.key"},
	} {
		if p.got != p.want {
			t.Errorf("path %q; want %q", p.got, p.want)
		}
	}
	if len(c.RecoveryPublicKeyBytes) != 32 || c.RecoveryPublicKeyBytes[31] != 31 {
		t.Errorf("recovery key %x", c.RecoveryPublicKeyBytes)
	}
}

func TestControllerUnknownKeys(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
	}{
		{"attribute", controllerBase + "name = \"ctl\"\n", `controller.hcl:8,1-5: Unsupported argument; An argument named "name" is not expected here.`},
		{"block", controllerBase + "repository \"x\" {\n}\n", `controller.hcl:8,1-11: Unsupported block type; Blocks of type "repository" are not expected here.`},
		{"in vault", controllerBase + "vault {\n  token = \"s.123\"\n}\n", `controller.hcl:9,3-8: Unsupported argument; An argument named "token" is not expected here.`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseController([]byte(tc.src), "controller.hcl")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestControllerValidation(t *testing.T) {
	vault := func(body string) string {
		return controllerBase + "vault {\n  address = \"https://vault:8200\"\n" + body + "}\n"
	}
	for _, tc := range []struct {
		name  string
		src   string
		field string
		pos   string
		want  string
	}{
		{"missing listen", edit(t, controllerBase, "listen    = \"0.0.0.0:7700\"\n", ""), "listen", "controller.hcl: ", "required"},
		{"bad listen", edit(t, controllerBase, `"0.0.0.0:7700"`, `"0.0.0.0:http"`), "listen", "controller.hcl:1,13-27: ", `port "http"`},
		{"missing state_dir", edit(t, controllerBase, "state_dir = \"/var/lib/ferry/controller\"\n", ""), "state_dir", "controller.hcl: ", "required"},
		{"bad log level", controllerBase + `log_level = "WARN"`, "log_level", "controller.hcl:8,", `"WARN" is not allowed`},
		{"bad grant_ttl", controllerBase + `grant_ttl = "1d"`, "grant_ttl", "controller.hcl:8,13-17: ", `"1d" is not a duration`},
		{"zero grant_ttl", controllerBase + `grant_ttl = "0s"`, "grant_ttl", "controller.hcl:8,", "not positive"},
		{"tls without ca", edit(t, controllerBase, "  ca_file   = \"/etc/ferry/ca.crt\"\n", ""), "tls.ca_file", "controller.hcl:3,1-4: ", "CA certificate"},
		{"bad telemetry", controllerBase + "telemetry {\n  listen = \"9100\"\n}", "telemetry.listen", "controller.hcl:9,", "not host:port"},
		{"vault both auths", vault("  token_file = \"/t\"\n  approle {\n    role_id = \"r\"\n    secret_id_file = \"/s\"\n  }\n"), "vault.token_file", "controller.hcl:10,16-20: ", "either token_file or an approle block, not both"},
		{"vault no auth", vault(""), "vault", "controller.hcl:8,1-6: ", "set token_file"},
		{"vault without address", controllerBase + "vault {\n  token_file = \"/t\"\n}", "vault.address", "controller.hcl:8,1-6: ", "required"},
		{"vault bad address", strings.Replace(vault("  token_file = \"/t\"\n"), `"https://vault:8200"`, `"vault:8200"`, 1), "vault.address", "controller.hcl:9,13-25: ", `"vault:8200" is not an http(s) URL`},
		{"vault approle without role_id", vault("  approle {\n    secret_id_file = \"/s\"\n  }\n"), "vault.approle.role_id", "controller.hcl:10,3-10: ", "required"},
		{"vault client cert without key", vault("  token_file = \"/t\"\n  client_cert_file = \"/c\"\n"), "vault.client_key_file", "controller.hcl:8,1-6: ", "set both or neither"},
		{"vault bad mount", vault("  token_file = \"/t\"\n  mount = \"/transit/\"\n"), "vault.mount", "controller.hcl:11,", "without leading or trailing slashes"},
		{"bad recovery key", controllerBase + `recovery_public_key = "not base64!"`, "recovery_public_key", "controller.hcl:8,", "not standard base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseController([]byte(tc.src), "controller.hcl")
			wantFieldError(t, err, tc.field, tc.pos, tc.want)
			if n := len(fieldErrors(err)); n != 1 {
				t.Errorf("%d problems reported; want 1:\n%v", n, err)
			}
		})
	}
}

func TestControllerRelativePaths(t *testing.T) {
	src := strings.NewReplacer(
		`"/var/lib/ferry/controller"`, `"state/controller"`,
		`"/etc/ferry/controller.crt"`, `"pki/controller.crt"`,
	).Replace(controllerBase) + "vault {\n  address = \"http://127.0.0.1:8200\"\n  token_file = \"vault-token\"\n}\n"
	c, err := ParseController([]byte(src), "/opt/ferry/demo/controller.hcl")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []struct{ got, want string }{
		{c.StateDir, "/opt/ferry/demo/state/controller"},
		{c.TLS.CertFile, "/opt/ferry/demo/pki/controller.crt"},
		{c.TLS.KeyFile, "/etc/ferry/controller.key"},
		{c.Vault.TokenFile, "/opt/ferry/demo/vault-token"},
	} {
		if p.got != p.want {
			t.Errorf("path %q; want %q", p.got, p.want)
		}
	}
}
