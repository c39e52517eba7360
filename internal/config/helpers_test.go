package config

import (
	"errors"
	"strings"
	"testing"
)

// fieldErrors lists the FieldErrors in a joined error.
func fieldErrors(err error) []*FieldError {
	var out []*FieldError
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, fe)
		}
	}
	return out
}

// wantFieldError checks that err reports field at pos ("" for no line,
// else a prefix such as "agent.hcl:13,") with a problem containing want.
func wantFieldError(t *testing.T, err error, field, pos, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error; want one about %s", field)
	}
	for _, fe := range fieldErrors(err) {
		if fe.Field != field {
			continue
		}
		msg := fe.Error()
		if !strings.Contains(fe.Problem, want) {
			t.Errorf("%s: problem %q does not contain %q", field, fe.Problem, want)
		}
		if !strings.HasPrefix(msg, pos) || !strings.Contains(msg, field+": ") {
			t.Errorf("error %q: want it to start with %q and name %q", msg, pos, field)
		}
		if !strings.Contains(err.Error(), msg) {
			t.Errorf("joined error %q lacks %q", err, msg)
		}
		return
	}
	t.Fatalf("no error about %s in:\n%v", field, err)
}

// edit returns src with old replaced by new, failing if old is absent.
func edit(t *testing.T, src, old, new string) string {
	t.Helper()
	if !strings.Contains(src, old) {
		t.Fatalf("test bug: %q not in source", old)
	}
	return strings.Replace(src, old, new, 1)
}
