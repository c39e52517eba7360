package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
)

// FieldError is one problem with one setting. Validate returns every
// problem it finds, joined with errors.Join; use errors.As to get at the
// first one.
type FieldError struct {
	// Field is the setting's path as written in HCL, for example
	// "log_level", "tls.cert_file" or `repository "local".path`.
	Field string
	// Problem says what is wrong and what is allowed.
	Problem string
	// Range is where the setting (or, when it is missing, its enclosing
	// block) is in the file. It is nil for a configuration that was not
	// parsed from a file, and has no line when the position is unknown.
	Range *hcl.Range

	path fieldPath
}

func (e *FieldError) Error() string {
	msg := e.Field + ": " + e.Problem
	if e.Range == nil || e.Range.Filename == "" {
		return msg
	}
	if e.Range.Start.Line == 0 {
		return e.Range.Filename + ": " + msg
	}
	return e.Range.String() + ": " + msg
}

// step is one element of a fieldPath: an attribute or a block.
type step struct {
	name  string
	block bool
	index int    // which block of this type, in file order
	label string // the block's label, for messages only
}

// fieldPath names a setting so that it can be printed for the user and
// found again in the HCL syntax tree.
type fieldPath []step

func (p fieldPath) attr(name string) fieldPath {
	return append(p[:len(p):len(p)], step{name: name})
}

func (p fieldPath) block(name string, index int, label string) fieldPath {
	return append(p[:len(p):len(p)], step{name: name, block: true, index: index, label: label})
}

func (p fieldPath) String() string {
	var b strings.Builder
	for i, s := range p {
		if i > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.name)
		if s.label != "" {
			b.WriteByte(' ')
			b.WriteString(strconv.Quote(s.label))
		}
	}
	return b.String()
}

// problems collects FieldErrors in the order they are found.
type problems []error

func (ps *problems) add(p fieldPath, format string, args ...any) {
	*ps = append(*ps, &FieldError{Field: p.String(), Problem: fmt.Sprintf(format, args...), path: p})
}

func (ps problems) err() error {
	return errors.Join(ps...)
}

// locate points each FieldError in err at its place in body.
func locate(err error, body *hclsyntax.Body) error {
	if err == nil || body == nil {
		return err
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *FieldError
		if errors.As(e, &fe) && fe.path != nil {
			r := rangeOf(body, fe.path)
			fe.Range = &r
		}
	}
	return err
}

// rangeOf finds the value of the attribute or the header of the block at
// p; when the setting is missing it falls back to the enclosing block, or
// to the file alone at the top level.
func rangeOf(body *hclsyntax.Body, p fieldPath) hcl.Range {
	encl := hcl.Range{Filename: body.SrcRange.Filename}
	cur := body
	for _, s := range p {
		if !s.block {
			if a, ok := cur.Attributes[s.name]; ok {
				return a.Expr.Range()
			}
			return encl
		}
		var found *hclsyntax.Block
		n := 0
		for _, b := range cur.Blocks {
			if b.Type != s.name {
				continue
			}
			if n == s.index {
				found = b
				break
			}
			n++
		}
		if found == nil {
			return encl
		}
		encl, cur = found.DefRange(), found.Body
	}
	return encl
}

// diagError turns HCL error diagnostics into one error per diagnostic,
// each starting with file:line,column.
func diagError(diags hcl.Diagnostics) error {
	var errs []error
	for _, d := range diags {
		if d.Severity != hcl.DiagError {
			continue
		}
		msg := d.Summary
		if d.Detail != "" {
			msg += "; " + d.Detail
		}
		if d.Subject != nil {
			msg = d.Subject.String() + ": " + msg
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(errs...)
}
