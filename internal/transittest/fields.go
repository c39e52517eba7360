package transittest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The field readers convert request data loosely, as Vault's framework
// does: a number may arrive as a JSON number or a string, a bool as a
// string, a duration as seconds or as "1h".

func stringField(d map[string]any, key string) (string, bool, error) {
	v, ok := d[key]
	if !ok || v == nil {
		return "", false, nil
	}
	switch v := v.(type) {
	case string:
		return v, true, nil
	case json.Number:
		return v.String(), true, nil
	case bool:
		return strconv.FormatBool(v), true, nil
	}
	return "", true, fieldError(key, v)
}

func intField(d map[string]any, key string) (int, bool, error) {
	v, ok := d[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	switch v := v.(type) {
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return 0, true, fieldError(key, v)
		}
		return int(n), true, nil
	case float64:
		return int(v), true, nil
	case int:
		return v, true, nil
	case string:
		if v == "" {
			return 0, true, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, true, fieldError(key, v)
		}
		return n, true, nil
	}
	return 0, true, fieldError(key, v)
}

func boolField(d map[string]any, key string) (bool, bool, error) {
	v, ok := d[key]
	if !ok || v == nil {
		return false, false, nil
	}
	switch v := v.(type) {
	case bool:
		return v, true, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, true, fieldError(key, v)
		}
		return b, true, nil
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return false, true, fieldError(key, v)
		}
		return n != 0, true, nil
	}
	return false, true, fieldError(key, v)
}

func durationField(d map[string]any, key string) (time.Duration, bool, error) {
	v, ok := d[key]
	if !ok || v == nil {
		return 0, false, nil
	}
	var dur time.Duration
	var err error
	switch v := v.(type) {
	case json.Number:
		var n int64
		n, err = v.Int64()
		dur = time.Duration(n) * time.Second
	case float64:
		dur = time.Duration(v) * time.Second
	case string:
		dur, err = parseDuration(v)
	default:
		err = fieldError(key, v)
	}
	if err != nil {
		return 0, true, fieldError(key, v)
	}
	return dur, true, nil
}

// parseDuration reads Vault's duration strings: bare seconds ("3600"), Go
// durations ("1h30m") or days ("7d").
func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

func fieldError(key string, v any) error {
	return fmt.Errorf("error converting input %v for field %q", v, key)
}

// fields reads several fields and keeps the first conversion error, so a
// handler checks once.
type fields struct {
	d   map[string]any
	err error
}

func (f *fields) str(key, def string) string {
	v, ok, err := stringField(f.d, key)
	f.keep(err)
	if !ok {
		return def
	}
	return v
}

func (f *fields) has(key string) bool {
	v, ok := f.d[key]
	return ok && v != nil
}

func (f *fields) integer(key string, def int) int {
	v, ok, err := intField(f.d, key)
	f.keep(err)
	if !ok {
		return def
	}
	return v
}

func (f *fields) boolean(key string) bool {
	v, _, err := boolField(f.d, key)
	f.keep(err)
	return v
}

func (f *fields) duration(key string) time.Duration {
	v, _, err := durationField(f.d, key)
	f.keep(err)
	return v
}

func (f *fields) keep(err error) {
	if f.err == nil {
		f.err = err
	}
}
