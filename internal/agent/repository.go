package agent

import (
	"context"
	"github.com/hashicorp/go-hclog"

	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/telemetry"
)

// Repositories is the RepositoryService every agent serves for the
// repositories it holds: listing, verifying and restoring points, and
// rewriting key tables. Only the controller may call it.
type Repositories struct {
	repositoryv1.UnimplementedRepositoryServiceServer
	name  string
	role  string
	repos map[string]*Repository
	// Log receives what the service does on its own account (merges).
	Log hclog.Logger
	// Metrics counts restores, verifies and merges (nil: none).
	Metrics *telemetry.Metrics
}

// NewRepositories makes the service of agent name ("source" or "target" role).
func NewRepositories(name, role string, repos []*Repository) *Repositories {
	s := &Repositories{name: name, role: role, repos: map[string]*Repository{}, Log: hclog.NewNullLogger()}
	for _, r := range repos {
		s.repos[r.Name] = r
	}
	return s
}

func (s *Repositories) repo(name string) (*Repository, error) {
	return lookupRepo(s.repos, s.name, name)
}

// Describe reports the agent's name, role and repositories.
func (s *Repositories) Describe(ctx context.Context, _ *repositoryv1.DescribeRequest) (*repositoryv1.DescribeResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	resp := &repositoryv1.DescribeResponse{Name: s.name, Role: s.role, Version: Version}
	for _, r := range s.repos {
		resp.Repositories = append(resp.Repositories, &repositoryv1.Repository{Name: r.Name, RequireEncryption: r.RequireEncryption})
	}
	return resp, nil
}

// ListPoints lists the points of a backup.
func (s *Repositories) ListPoints(ctx context.Context, req *repositoryv1.ListPointsRequest) (*repositoryv1.ListPointsResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	pts, err := listPoints(s.repo, req.Repository, req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &repositoryv1.ListPointsResponse{Points: pts}
	if req.TakeRecoveryNotes {
		r, _ := s.repo(req.Repository) // listPoints found it
		resp.RecoveryNotes = r.TakeNotes(req.Backup)
	}
	return resp, nil
}

// Verify checks a chain of a backup, keyless or with the keys handed over.
func (s *Repositories) Verify(ctx context.Context, req *repositoryv1.VerifyRequest) (*repositoryv1.VerifyResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	done := s.Metrics.TrackSession(telemetry.KindVerify)
	res, err := verifyIn(ctx, s.repo, req.Repository, req.Backup, req.PointId, req.Keyless, req.Keys)
	done(err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &repositoryv1.VerifyResponse{Files: int64(res.Files), Records: int64(res.Records), Bytes: res.Bytes, Problems: res.Problems}, nil
}

// Restore restores a point on this host with the keys handed over.
func (s *Repositories) Restore(ctx context.Context, req *repositoryv1.RestoreRequest) (*repositoryv1.RestoreResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	done := s.Metrics.TrackSession(telemetry.KindRestore)
	res, err := restoreIn(ctx, s.repo, req.Repository, req.Backup, req.PointId, req.To, req.Keys)
	done(err)
	if err != nil {
		return nil, toStatus(err)
	}
	return &repositoryv1.RestoreResponse{Objects: int64(res.Objects), Bytes: res.Bytes}, nil
}

// GetKeyTables returns the key tables of a backup's files.
func (s *Repositories) GetKeyTables(ctx context.Context, req *repositoryv1.GetKeyTablesRequest) (*repositoryv1.GetKeyTablesResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	ts, err := getKeyTables(s.repo, req.Repository, req.Backup)
	if err != nil {
		return nil, toStatus(err)
	}
	return &repositoryv1.GetKeyTablesResponse{Tables: ts}, nil
}

// RewriteKeyTables replaces key tables of a backup's files.
func (s *Repositories) RewriteKeyTables(ctx context.Context, req *repositoryv1.RewriteKeyTablesRequest) (*repositoryv1.RewriteKeyTablesResponse, error) {
	if _, err := requireRole(ctx, pki.RoleController); err != nil {
		return nil, toStatus(err)
	}
	n, err := rewriteKeyTables(s.repo, req.Repository, req.Backup, req.Tables)
	if err != nil {
		return nil, toStatus(err)
	}
	return &repositoryv1.RewriteKeyTablesResponse{Files: int64(n)}, nil
}
