package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The example configurations in deploy/ are documentation that users copy,
// so every one of them must parse and validate.
func TestExamples(t *testing.T) {
	var files []string
	for _, pattern := range []string{"../../deploy/*.hcl", "../../deploy/demo/*.hcl"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	seen := map[string]bool{}
	for _, f := range files {
		rel := strings.TrimPrefix(filepath.ToSlash(f), "../../")
		seen[rel] = true
		t.Run(rel, func(t *testing.T) {
			switch base := filepath.Base(f); {
			case strings.HasPrefix(base, "controller"):
				if _, err := LoadController(f); err != nil {
					t.Fatal(err)
				}
			case strings.HasPrefix(base, "agent"):
				a, err := LoadAgent(f)
				if err != nil {
					t.Fatal(err)
				}
				if want := strings.TrimSuffix(strings.TrimPrefix(base, "agent-"), ".hcl"); a.Role != want {
					t.Errorf("role %q in %s", a.Role, base)
				}
			default:
				t.Fatalf("%s: name an example controller*.hcl or agent*.hcl so that this test knows how to check it", rel)
			}
		})
	}
	for _, want := range []string{
		"deploy/controller.hcl", "deploy/agent-source.hcl", "deploy/agent-target.hcl",
		"deploy/demo/controller.hcl", "deploy/demo/agent-source.hcl", "deploy/demo/agent-target.hcl",
	} {
		if !seen[want] {
			t.Errorf("example %s is missing", want)
		}
	}
}

// The commented-out vault block of deploy/controller.hcl must be valid once
// a user uncomments it.
func TestExampleVaultBlock(t *testing.T) {
	const path = "../../deploy/controller.hcl"
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Uncomment from "# vault {" to the "# }" that closes it, one level of
	// "# " only, so comments nested in the block stay comments.
	var out []string
	in := false
	for _, line := range strings.Split(string(src), "\n") {
		switch {
		case line == "# vault {":
			in = true
		case in && line == "# }":
			in = false
			line = "}"
		}
		if in {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ")
		}
		out = append(out, line)
	}
	c, err := ParseController([]byte(strings.Join(out, "\n")), path)
	if err != nil {
		t.Fatal(err)
	}
	if c.Vault == nil || c.Vault.TokenFile == "" || c.Vault.Mount != "transit" {
		t.Fatalf("vault block not found or not as documented: %+v", c.Vault)
	}
}

// The local demo runs on loopback with paths under deploy/demo/.
func TestDemoExamples(t *testing.T) {
	dir, err := filepath.Abs("../../deploy/demo")
	if err != nil {
		t.Fatal(err)
	}
	c, err := LoadController(filepath.Join(dir, "controller.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:17700" {
		t.Errorf("controller listen %q", c.Listen)
	}
	checkUnder(t, dir, c.StateDir, c.TLS.CertFile, c.TLS.KeyFile, c.TLS.CAFile)

	for _, tc := range []struct {
		file, name, listen, repoPath string
		requireEncryption            bool
	}{
		{"agent-source.hcl", "source", "127.0.0.1:17701", "repos/source-local", false},
		{"agent-target.hcl", "target", "127.0.0.1:17702", "repos/target-local", true},
	} {
		a, err := LoadAgent(filepath.Join(dir, tc.file))
		if err != nil {
			t.Fatal(err)
		}
		if a.Name != tc.name || a.Role != tc.name || a.Listen != tc.listen {
			t.Errorf("%s: name %q role %q listen %q", tc.file, a.Name, a.Role, a.Listen)
		}
		r, ok := a.Repository("local")
		if !ok {
			t.Fatalf("%s: no repository \"local\"", tc.file)
		}
		if r.Path != filepath.Join(dir, tc.repoPath) || r.RequireEncryption != tc.requireEncryption {
			t.Errorf("%s: repository %+v", tc.file, r)
		}
		if a.TLS.CAFile != c.TLS.CAFile {
			t.Errorf("%s: ca_file %q, controller's %q", tc.file, a.TLS.CAFile, c.TLS.CAFile)
		}
		checkUnder(t, dir, a.StateDir, a.TLS.CertFile, a.TLS.KeyFile)
	}
}

// The real-setup examples use absolute paths, so they work wherever the
// file is copied.
func TestDeployExamplesAbsolute(t *testing.T) {
	re := regexp.MustCompile(`(?m)^\s*[a-z_]*(path|dir|file)\s*=\s*"([^"]*)"`)
	files, _ := filepath.Glob("../../deploy/*.hcl")
	n := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllStringSubmatch(string(src), -1) {
			n++
			if !filepath.IsAbs(m[2]) {
				t.Errorf("%s: %s is relative", f, strings.TrimSpace(m[0]))
			}
		}
	}
	if n < 10 {
		t.Errorf("found only %d paths in the examples; is the pattern stale?", n)
	}
}

func checkUnder(t *testing.T, dir string, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Errorf("path %q is not under %s", p, dir)
		}
	}
}
