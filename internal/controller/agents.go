package controller

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/catalog"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	sourcev1 "github.com/ferrybackup/ferry/internal/gen/ferry/source/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/pki"
)

func joinPath(dir, name string) string { return filepath.Join(dir, name) }

func roleName(r controllerv1.AgentRole) (string, error) {
	switch r {
	case controllerv1.AgentRole_AGENT_ROLE_SOURCE:
		return "source", nil
	case controllerv1.AgentRole_AGENT_ROLE_TARGET:
		return "target", nil
	}
	return "", invalidf("an agent's role is source or target")
}

func agentProto(a catalog.Agent) *controllerv1.Agent {
	r := controllerv1.AgentRole_AGENT_ROLE_SOURCE
	if a.Role == "target" {
		r = controllerv1.AgentRole_AGENT_ROLE_TARGET
	}
	return &controllerv1.Agent{Name: a.Name, Address: a.Address, Role: r}
}

// agentErr names the agent in an error from a call to it, and tells an
// unreachable agent from one that refused.
func agentErr(a catalog.Agent, what string, err error) error {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s agent %s at %s is unreachable (%s): check that it runs and that the address is right",
			errUnreachable, a.Role, a.Name, a.Address, st.Message())
	case codes.NotFound:
		return fmt.Errorf("%w: %s agent %s: %s: %s", errNotFound, a.Role, a.Name, what, st.Message())
	case codes.InvalidArgument, codes.FailedPrecondition, codes.PermissionDenied:
		return fmt.Errorf("%w: %s agent %s: %s: %s", errInvalid, a.Role, a.Name, what, st.Message())
	}
	return fmt.Errorf("%s agent %s: %s: %s", a.Role, a.Name, what, st.Message())
}

func (s *Server) sourceClient(a catalog.Agent) (sourcev1.SourceServiceClient, error) {
	c, err := s.conn(a.Address, pki.RoleSource)
	if err != nil {
		return nil, err
	}
	return sourcev1.NewSourceServiceClient(c), nil
}

func (s *Server) targetClient(a catalog.Agent) (targetv1.TargetServiceClient, error) {
	c, err := s.conn(a.Address, pki.RoleTarget)
	if err != nil {
		return nil, err
	}
	return targetv1.NewTargetServiceClient(c), nil
}

// repoClient returns the RepositoryService of an agent, on the same
// connection as its own service (checked to have the agent's role).
func (s *Server) repoClient(a catalog.Agent) (repositoryv1.RepositoryServiceClient, error) {
	c, err := s.conn(a.Address, pki.Role(a.Role))
	if err != nil {
		return nil, err
	}
	return repositoryv1.NewRepositoryServiceClient(c), nil
}

// agentRepos asks an agent which repositories it serves, and which of
// them require encryption.
func (s *Server) agentRepos(ctx context.Context, a catalog.Agent) (map[string]bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.AgentTimeout)
	defer cancel()
	// An agent that just restarted answers as soon as the connection is
	// back; one that is down is reported after a short wait.
	d, err := s.describe(ctx, a, 2*time.Second)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, r := range d.Repositories {
		out[r.Name] = r.RequireEncryption
	}
	return out, nil
}

// describe asks an agent to describe itself, retrying for up to retry
// while it is unavailable, and checks that it is the agent the catalog
// names. An answer counts as the agent being seen.
func (s *Server) describe(ctx context.Context, a catalog.Agent, retry time.Duration) (*repositoryv1.DescribeResponse, error) {
	c, err := s.repoClient(a)
	if err != nil {
		return nil, err
	}
	var d *repositoryv1.DescribeResponse
	for wait := time.Now().Add(retry); ; time.Sleep(100 * time.Millisecond) {
		d, err = c.Describe(ctx, &repositoryv1.DescribeRequest{})
		if err == nil || status.Code(err) != codes.Unavailable || time.Now().After(wait) {
			break
		}
	}
	if err != nil {
		return nil, agentErr(a, "describe", err)
	}
	if d.Name != a.Name || d.Role != a.Role {
		return nil, invalidf("the agent at %s is the %s agent %q, not the %s agent %q", a.Address, d.Role, d.Name, a.Role, a.Name)
	}
	s.seen.mark(a.Name)
	return d, nil
}

func (s *Server) agent(name, role string) (catalog.Agent, error) {
	a, err := s.store.GetAgent(name)
	if err != nil {
		return a, fmt.Errorf("%w: no agent named %q (add it with `controller agent add`)", errNotFound, name)
	}
	if role != "" && a.Role != role {
		return a, invalidf("agent %s is a %s agent, a %s agent is needed here", name, a.Role, role)
	}
	return a, nil
}

// AddAgent records an agent after checking that it answers, with a valid
// certificate of the right role and name.
func (s *Server) AddAgent(ctx context.Context, req *controllerv1.AddAgentRequest) (*controllerv1.AddAgentResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	a := req.GetAgent()
	if a == nil {
		return nil, toStatus(invalidf("no agent given"))
	}
	if err := pki.ValidateName(a.Name); err != nil {
		return nil, toStatus(invalidf("%v", err))
	}
	if a.Address == "" {
		return nil, toStatus(invalidf("agent %s needs an address (host:port)", a.Name))
	}
	role, err := roleName(a.Role)
	if err != nil {
		return nil, toStatus(err)
	}
	if _, err := s.store.GetAgent(a.Name); err == nil {
		return nil, toStatus(fmt.Errorf("%w: agent %s is already added", errExists, a.Name))
	}
	rec := catalog.Agent{Name: a.Name, Address: a.Address, Role: role, AddedAt: time.Now().UTC()}
	if _, err := s.agentRepos(ctx, rec); err != nil {
		return nil, toStatus(err)
	}
	if err := s.store.PutAgent(rec); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("agent added", "agent", rec.Name, "role", rec.Role, "address", rec.Address)
	return &controllerv1.AddAgentResponse{Agent: agentProto(rec)}, nil
}

// ListAgents lists the agents.
func (s *Server) ListAgents(ctx context.Context, _ *controllerv1.ListAgentsRequest) (*controllerv1.ListAgentsResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	as, err := s.store.ListAgents()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controllerv1.ListAgentsResponse{}
	for _, a := range as {
		resp.Agents = append(resp.Agents, agentProto(a))
	}
	slices.SortFunc(resp.Agents, func(x, y *controllerv1.Agent) int {
		if x.Name < y.Name {
			return -1
		}
		return 1
	})
	return resp, nil
}

// EnsureAgent records an agent, or updates its address, after checking
// that it answers with the right name and role. `controller dev` uses it
// to add its own agents.
func (s *Server) EnsureAgent(ctx context.Context, name, address, role string) error {
	rec := catalog.Agent{Name: name, Address: address, Role: role, AddedAt: time.Now().UTC()}
	if old, err := s.store.GetAgent(name); err == nil {
		rec.AddedAt = old.AddedAt
	}
	if _, err := s.agentRepos(ctx, rec); err != nil {
		return err
	}
	return s.store.PutAgent(rec)
}
