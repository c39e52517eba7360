package transittest

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// maxRequestSize is Vault's default max_request_size.
const maxRequestSize = 32 << 20

// operation is a Vault ACL capability, which is also how Vault names what
// a request does.
type operation string

const (
	opCreate operation = "create"
	opRead   operation = "read"
	opUpdate operation = "update"
	opDelete operation = "delete"
	opList   operation = "list"
)

// request is one API call after the HTTP layer has parsed it.
type request struct {
	r    *http.Request
	op   operation
	path string // without "/v1/" and without a trailing slash
	ns   string // namespace path, "" for root
	data map[string]any
	tok  *token // nil on unauthenticated paths
}

// response is what a handler answers: a status and a JSON body, or no body
// when body is nil.
type response struct {
	status int
	body   any
}

// errorBody is Vault's error envelope.
type errorBody struct {
	Errors []string `json:"errors"`
}

// Handler serves Vault's HTTP API under /v1/.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	path, ok := strings.CutPrefix(r.URL.Path, "/v1/")
	path = strings.TrimSuffix(path, "/")
	var resp response
	if ok {
		s.count(path)
		resp = s.handle(r, path)
	} else {
		resp = errorResponse(http.StatusNotFound)
	}
	s.logger.Debug("request", "method", r.Method, "path", r.URL.Path, "status", resp.status, "duration", time.Since(start))

	w.Header().Set("Cache-Control", "no-store")
	if resp.body == nil {
		w.WriteHeader(resp.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(resp.status)
	if r.Method != http.MethodHead {
		_ = json.NewEncoder(w).Encode(resp.body)
	}
}

func (s *Server) count(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[path]++
	s.total++
}

func (s *Server) handle(r *http.Request, path string) response {
	op, ok := operationOf(r)
	if !ok {
		return errorResponse(http.StatusMethodNotAllowed)
	}
	// Vault answers these whether sealed or not, without a token.
	switch path {
	case "sys/health":
		return s.health(r)
	case "sys/seal-status":
		return s.sealStatus()
	case "sys/unseal":
		return s.unseal(op)
	}
	if s.Sealed() {
		return errorResponse(http.StatusServiceUnavailable, consts.ErrSealed.Error())
	}
	data, err := decodeBody(r)
	if err != nil {
		return errorResponse(http.StatusBadRequest, err.Error())
	}
	req := &request{r: r, op: op, path: path, ns: namespaceOf(r), data: data}
	if path == "auth/approle/login" {
		return s.appRoleLogin(req)
	}
	tok, resp := s.authenticate(r)
	if tok == nil {
		return resp
	}
	req.tok = tok

	mount := s.opts.Mount
	switch {
	case path == "auth/token/lookup-self":
		return withMountType(s.lookupSelf(req), "token")
	case path == "auth/token/renew-self":
		return withMountType(s.renewSelf(req), "token")
	case path == "auth/token/revoke-self":
		return s.revokeSelf(req)
	case path == "sys/seal":
		return s.seal(req)
	case path == mount || strings.HasPrefix(path, mount+"/"):
		return withMountType(s.transit(req, strings.TrimPrefix(strings.TrimPrefix(path, mount), "/")), "transit")
	}
	return errorResponse(http.StatusNotFound, fmt.Sprintf("no handler for route %q. route entry not found.", path))
}

// operationOf maps the HTTP method to Vault's operation; the api client
// writes with PUT and lists with the LIST method (or GET ?list=true).
func operationOf(r *http.Request) (operation, bool) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if list := r.URL.Query().Get("list"); list == "true" || list == "1" {
			return opList, true
		}
		return opRead, true
	case "LIST":
		return opList, true
	case http.MethodPost, http.MethodPut:
		return opUpdate, true
	case http.MethodDelete:
		return opDelete, true
	}
	return "", false
}

// decodeBody reads a JSON object as Vault does (numbers kept as
// json.Number); GET query parameters become data too.
func decodeBody(r *http.Request) (map[string]any, error) {
	data := map[string]any{}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		for k, v := range r.URL.Query() {
			if k != "list" && len(v) > 0 {
				data[k] = v[0]
			}
		}
		return data, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxRequestSize+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read request body: %w", err)
	}
	if len(body) > maxRequestSize {
		return nil, fmt.Errorf("http: request body too large")
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return data, nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return nil, fmt.Errorf("failed to parse JSON input: %w", err)
	}
	return data, nil
}

// namespaceOf is the X-Vault-Namespace header without surrounding slashes.
func namespaceOf(r *http.Request) string {
	return strings.Trim(r.Header.Get("X-Vault-Namespace"), "/")
}

// tokenOf reads the client token the way Vault does: X-Vault-Token, else
// an Authorization bearer token.
func tokenOf(r *http.Request) string {
	if t := r.Header.Get("X-Vault-Token"); t != "" {
		return t
	}
	if v, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return strings.TrimSpace(v)
	}
	return ""
}

// okResponse is a 200 with Vault's logical response envelope.
func okResponse(data map[string]any, warnings ...string) response {
	return response{status: http.StatusOK, body: envelope(data, warnings)}
}

func envelope(data map[string]any, warnings []string) *logical.HTTPResponse {
	if len(warnings) == 0 {
		warnings = nil
	}
	return &logical.HTTPResponse{RequestID: requestID(), Data: data, Warnings: warnings}
}

func withMountType(resp response, mountType string) response {
	if env, ok := resp.body.(*logical.HTTPResponse); ok {
		env.MountType = mountType
	}
	return resp
}

// errorResponse is Vault's {"errors":[...]}; no messages gives the empty
// list Vault sends with a bare 404.
func errorResponse(status int, msgs ...string) response {
	if msgs == nil {
		msgs = []string{}
	}
	return response{status: status, body: errorBody{Errors: msgs}}
}

// userError is a 400, the status Vault gives logical.ErrorResponse.
func userError(format string, args ...any) response {
	return errorResponse(http.StatusBadRequest, fmt.Sprintf(format, args...))
}

// internalError is a 500 in Vault's multierror wording.
func internalError(err error) response {
	return errorResponse(http.StatusInternalServerError, errorList(err))
}

func noContent() response { return response{status: http.StatusNoContent} }

// permissionDenied is what Vault says to a valid token its policy does not
// allow.
func permissionDenied() response {
	return errorResponse(http.StatusForbidden, errorList(logical.ErrPermissionDenied))
}

func unsupportedOperation() response {
	return errorResponse(http.StatusMethodNotAllowed, logical.ErrUnsupportedOperation.Error())
}

func unsupportedPath() response {
	return errorResponse(http.StatusNotFound, logical.ErrUnsupportedPath.Error())
}

// errorList words errors as Vault's core does, through go-multierror's
// default format: "1 error occurred:\n\t* permission denied\n\n".
func errorList(errs ...error) string {
	if len(errs) == 1 {
		return fmt.Sprintf("1 error occurred:\n\t* %s\n\n", errs[0])
	}
	points := make([]string, len(errs))
	for i, err := range errs {
		points[i] = fmt.Sprintf("* %s", err)
	}
	return fmt.Sprintf("%d errors occurred:\n\t%s\n\n", len(errs), strings.Join(points, "\n\t"))
}

// requestID is a random UUID, as Vault gives each request.
func requestID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

// randomID is n random base62 characters, the shape of Vault's token IDs.
func randomID(n int) string {
	b := make([]byte, n)
	max := big.NewInt(int64(len(idAlphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b[i] = idAlphabet[v.Int64()]
	}
	return string(b)
}

// queryInt reads an integer query parameter, falling back to def.
func queryInt(q url.Values, key string, def int) int {
	v := q.Get(key)
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscanf(v, "%d", &n); err != nil {
		return def
	}
	return n
}
