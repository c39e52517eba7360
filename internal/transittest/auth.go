package transittest

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// token is a service token: the root token, or one AppRole login issued.
type token struct {
	id          string
	accessor    string
	policies    []string
	acl         Policy // nil: may do anything
	root        bool
	displayName string
	path        string
	meta        map[string]string
	issued      time.Time
	ttl         time.Duration // TTL of the last issue or renewal; 0 never expires
	expires     time.Time
	maxExpires  time.Time
}

func (t *token) expired(now time.Time) bool {
	return !t.expires.IsZero() && !now.Before(t.expires)
}

// remaining is the TTL left in whole seconds, as Vault reports it.
func (t *token) remaining(now time.Time) int {
	if t.expires.IsZero() {
		return 0
	}
	return int(t.expires.Sub(now).Round(time.Second) / time.Second)
}

// authenticate finds the request's token, or answers as Vault does: 403
// "permission denied" without a token, and with "invalid token" added for
// one that is unknown, revoked or expired.
func (s *Server) authenticate(r *http.Request) (*token, response) {
	id := tokenOf(r)
	if id == "" {
		return nil, errorResponse(http.StatusForbidden, logical.ErrPermissionDenied.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[id]
	if ok && t.expired(time.Now()) {
		delete(s.tokens, id)
		ok = false
	}
	if !ok {
		return nil, errorResponse(http.StatusForbidden, errorList(logical.ErrPermissionDenied, logical.ErrInvalidToken))
	}
	return t, response{}
}

// allowed checks a path relative to the namespace against the token's
// policy.
func (t *token) allowed(path string, op operation) bool {
	if t.root || t.acl == nil {
		return true
	}
	caps, ok := t.acl.capabilities(path)
	if !ok {
		return false
	}
	for _, c := range caps {
		if c == "deny" {
			return false
		}
	}
	for _, c := range caps {
		if c == string(op) {
			return true
		}
	}
	return false
}

// capabilities picks the rule for path: an exact rule wins, otherwise the
// longest matching pattern. Vault's full precedence (counting "+" and
// wildcard positions) is more detailed; this agrees with it for the
// policies a Transit client has.
func (p Policy) capabilities(path string) ([]string, bool) {
	if caps, ok := p[path]; ok && !strings.ContainsAny(path, "*+") {
		return caps, true
	}
	patterns := make([]string, 0, len(p))
	for pat := range p {
		if matchPolicyPath(strings.TrimPrefix(pat, "/"), path) {
			patterns = append(patterns, pat)
		}
	}
	if len(patterns) == 0 {
		return nil, false
	}
	sort.Slice(patterns, func(i, j int) bool {
		if len(patterns[i]) != len(patterns[j]) {
			return len(patterns[i]) > len(patterns[j])
		}
		return patterns[i] < patterns[j]
	})
	return p[patterns[0]], true
}

// matchPolicyPath matches Vault's policy path syntax: "+" stands for one
// segment, a trailing "*" for any suffix.
func matchPolicyPath(pattern, path string) bool {
	prefix, glob := strings.CutSuffix(pattern, "*")
	pp := strings.Split(prefix, "/")
	sp := strings.Split(path, "/")
	if !glob {
		if len(pp) != len(sp) {
			return false
		}
		for i := range pp {
			if pp[i] != "+" && pp[i] != sp[i] {
				return false
			}
		}
		return true
	}
	if len(sp) < len(pp) {
		return false
	}
	for i := range pp {
		last := i == len(pp)-1
		switch {
		case pp[i] == "+":
		case last:
			// The last piece of a glob may end mid-segment ("transit/enc*").
			if !strings.HasPrefix(sp[i], pp[i]) {
				return false
			}
		case pp[i] != sp[i]:
			return false
		}
	}
	return true
}

// appRoleLogin is auth/approle/login: role_id and secret_id for a token.
func (s *Server) appRoleLogin(req *request) response {
	role := s.opts.AppRole
	if role.RoleID == "" {
		return errorResponse(http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", req.path))
	}
	if req.op != opUpdate {
		return unsupportedOperation()
	}
	f := fields{d: req.data}
	roleID := f.str("role_id", "")
	secretID := f.str("secret_id", "")
	if f.err != nil {
		return userError("%v", f.err)
	}
	if roleID == "" {
		return userError("missing role_id")
	}
	if secretID == "" {
		return userError("missing secret_id")
	}
	if !equal(roleID, role.RoleID) || !equal(secretID, role.SecretID) {
		return userError("invalid role or secret ID")
	}
	now := time.Now()
	policies := []string{"default"}
	t := &token{
		id:          "hvs." + randomID(24),
		accessor:    randomID(24),
		policies:    policies,
		acl:         role.Policy,
		displayName: "approle",
		path:        "auth/approle/login",
		meta:        map[string]string{"role_name": "transittest"},
		issued:      now,
		ttl:         s.opts.TokenTTL,
		expires:     now.Add(s.opts.TokenTTL),
		maxExpires:  now.Add(s.opts.TokenMaxTTL),
	}
	s.mu.Lock()
	s.tokens[t.id] = t
	s.mu.Unlock()
	env := envelope(nil, nil)
	env.Auth = &logical.HTTPAuth{
		ClientToken:   t.id,
		Accessor:      t.accessor,
		Policies:      policies,
		TokenPolicies: policies,
		Metadata:      t.meta,
		LeaseDuration: int(t.ttl / time.Second),
		Renewable:     true,
		TokenType:     "service",
		Orphan:        true,
	}
	env.MountType = "approle"
	return response{status: http.StatusOK, body: env}
}

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// lookupSelf is auth/token/lookup-self.
func (s *Server) lookupSelf(req *request) response {
	if req.op != opRead && req.op != opUpdate {
		return unsupportedOperation()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := req.tok
	now := time.Now()
	var expire any
	if !t.expires.IsZero() {
		expire = t.expires.UTC().Format(time.RFC3339Nano)
	}
	return okResponse(map[string]any{
		"accessor":         t.accessor,
		"creation_time":    t.issued.Unix(),
		"creation_ttl":     int(t.ttl / time.Second),
		"display_name":     t.displayName,
		"entity_id":        "",
		"expire_time":      expire,
		"explicit_max_ttl": 0,
		"id":               t.id,
		"issue_time":       t.issued.UTC().Format(time.RFC3339Nano),
		"meta":             t.meta,
		"num_uses":         0,
		"orphan":           true,
		"path":             t.path,
		"policies":         t.policies,
		"renewable":        !t.root,
		"ttl":              t.remaining(now),
		"type":             "service",
	})
}

// renewSelf is auth/token/renew-self: the token lives for increment more
// seconds (its TTL when no increment is given), capped at its max TTL.
func (s *Server) renewSelf(req *request) response {
	if req.op != opUpdate {
		return unsupportedOperation()
	}
	f := fields{d: req.data}
	increment := f.duration("increment")
	if f.err != nil {
		return userError("%v", f.err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := req.tok
	if t.root || t.expires.IsZero() {
		// Vault keeps no lease for a root token without a TTL.
		return userError("invalid lease ID")
	}
	now := time.Now()
	ttl := t.ttl
	if increment > 0 {
		ttl = increment
	}
	var warnings []string
	if now.Add(ttl).After(t.maxExpires) {
		capped := t.maxExpires.Sub(now).Truncate(time.Second)
		warnings = append(warnings, fmt.Sprintf("TTL of %q exceeded the effective max_ttl of %q; TTL value is capped accordingly", ttl.String(), capped.String()))
		ttl = capped
	}
	t.expires = now.Add(ttl)
	env := envelope(nil, warnings)
	env.Auth = &logical.HTTPAuth{
		ClientToken:   t.id,
		Accessor:      t.accessor,
		Policies:      t.policies,
		TokenPolicies: t.policies,
		Metadata:      t.meta,
		LeaseDuration: int(ttl / time.Second),
		Renewable:     true,
		TokenType:     "service",
		Orphan:        true,
	}
	return response{status: http.StatusOK, body: env}
}

// revokeSelf is auth/token/revoke-self.
func (s *Server) revokeSelf(req *request) response {
	if req.op != opUpdate {
		return unsupportedOperation()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tokens, req.tok.id)
	return noContent()
}
