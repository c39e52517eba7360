package config

import (
	"os"
	"path/filepath"
	"testing"
)

// addExamples seeds a fuzz target with the example configurations.
func addExamples(f *testing.F, glob string) {
	paths, _ := filepath.Glob(glob)
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("listen = \"127.0.0.1:1\"\nrole = \"target\"\nname = \"a\"\nrepository \"r\" { path = \"/x\" }\nwan_cache { size = \"1e99GiB\" }\n"))
	f.Add([]byte("repository \"\" {\n  path = \"\"\n}\nbandwidth = \"-1\"\nmax_sessions = 99999999999999999999\n"))
	f.Add([]byte("tls { cert_file = \"${env.HOME}\" }\n"))
}

// FuzzParseAgent: any bytes as an agent configuration are read or refused
// with an error, never a panic; what is accepted validates again.
func FuzzParseAgent(f *testing.F) {
	addExamples(f, "../../deploy/agent-*.hcl")
	addExamples(f, "../../deploy/demo/agent-*.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		a, err := ParseAgent(src, "agent.hcl")
		if err != nil {
			return
		}
		if err := a.Validate(); err != nil {
			t.Fatalf("an accepted configuration does not validate again: %v", err)
		}
	})
}

// FuzzParseController: the same for the controller's configuration.
func FuzzParseController(f *testing.F) {
	addExamples(f, "../../deploy/controller*.hcl")
	addExamples(f, "../../deploy/demo/controller*.hcl")
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := ParseController(src, "controller.hcl")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("an accepted configuration does not validate again: %v", err)
		}
	})
}
