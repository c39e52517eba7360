package config

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// decode parses src as HCL native syntax into v. Every attribute and block
// that v's tags do not name is an error, as are functions and variables:
// a configuration is literal values only.
func decode(src []byte, filename string, v any) (*hclsyntax.Body, error) {
	f, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, diagError(diags)
	}
	if diags := gohcl.DecodeBody(f.Body, nil, v); diags.HasErrors() {
		return nil, diagError(diags)
	}
	body, _ := f.Body.(*hclsyntax.Body)
	return body, nil
}

// present reports whether the top level of body sets attribute name; it
// tells a literal 0 apart from an absent attribute, which decode the same.
func present(body *hclsyntax.Body, name string) bool {
	if body == nil {
		return false
	}
	_, ok := body.Attributes[name]
	return ok
}

// configDir is the absolute directory of a configuration file, against
// which its relative paths are resolved.
func configDir(filename string) (string, error) {
	dir, err := filepath.Abs(filepath.Dir(filename))
	if err != nil {
		return "", fmt.Errorf("resolve directory of %s: %w", filename, err)
	}
	return dir, nil
}

// resolve makes each non-empty relative path absolute under dir.
func resolve(dir string, paths ...*string) {
	for _, p := range paths {
		if *p == "" {
			continue
		}
		if filepath.IsAbs(*p) {
			*p = filepath.Clean(*p)
		} else {
			*p = filepath.Join(dir, *p)
		}
	}
}

func readFile(kind, path string) ([]byte, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s config: %w", kind, err)
	}
	return src, nil
}
