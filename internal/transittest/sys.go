package transittest

import (
	"net/http"
	"time"
)

const (
	clusterName = "vault-cluster-transittest"
	clusterID   = "5f0c6a0e-7d2b-4a51-9f6e-transittest"
	buildDate   = "2025-01-01T00:00:00Z"
)

// health is sys/health. Like Vault it needs no token and answers while
// sealed, with the status codes the caller may override (the api client
// asks for 299 in every non-active state).
func (s *Server) health(r *http.Request) response {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return unsupportedOperation()
	}
	sealed := s.Sealed()
	q := r.URL.Query()
	code := queryInt(q, "activecode", http.StatusOK)
	if sealed {
		code = queryInt(q, "sealedcode", http.StatusServiceUnavailable)
	}
	body := map[string]any{
		"initialized":                  true,
		"sealed":                       sealed,
		"standby":                      false,
		"performance_standby":          false,
		"replication_performance_mode": "disabled",
		"replication_dr_mode":          "disabled",
		"server_time_utc":              time.Now().Unix(),
		"version":                      Version,
		"enterprise":                   false,
		"echo_duration_ms":             0,
		"clock_skew_ms":                0,
	}
	if !sealed {
		body["cluster_name"] = clusterName
		body["cluster_id"] = clusterID
	}
	return response{status: code, body: body}
}

// sealStatus is sys/seal-status: one unseal key, never in progress.
func (s *Server) sealStatus() response {
	sealed := s.Sealed()
	body := map[string]any{
		"type":          "shamir",
		"initialized":   true,
		"sealed":        sealed,
		"t":             1,
		"n":             1,
		"progress":      0,
		"nonce":         "",
		"version":       Version,
		"build_date":    buildDate,
		"migration":     false,
		"recovery_seal": false,
		"storage_type":  "inmem",
	}
	if !sealed {
		body["cluster_name"] = clusterName
		body["cluster_id"] = clusterID
	}
	return response{status: http.StatusOK, body: body}
}

// seal is sys/seal, which Vault allows the root token (it needs sudo).
func (s *Server) seal(req *request) response {
	if req.op != opUpdate {
		return unsupportedOperation()
	}
	if !req.tok.root {
		return permissionDenied()
	}
	s.Seal()
	return noContent()
}

// unseal is sys/unseal. The test server has no real unseal key: any key
// unseals it, so `vault operator unseal` works against transit-dev.
func (s *Server) unseal(op operation) response {
	if op != opUpdate {
		return unsupportedOperation()
	}
	s.Unseal()
	return s.sealStatus()
}
