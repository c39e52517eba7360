package controller

import (
	"context"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/catalog"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

// statusProbeTimeout bounds how long `controller status` waits for an
// agent to answer.
const statusProbeTimeout = 3 * time.Second

// seen remembers when each agent last answered the controller.
type seen struct {
	mu sync.Mutex
	at map[string]time.Time
}

func (s *seen) mark(agent string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = map[string]time.Time{}
	}
	s.at[agent] = time.Now()
}

func (s *seen) get(agent string) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.at[agent]
}

// GetStatus reports the agents (each asked now, in parallel), the jobs
// with their last result, next run, points and size, and the running
// sessions with their progress.
func (s *Server) GetStatus(ctx context.Context, _ *controllerv1.GetStatusRequest) (*controllerv1.GetStatusResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	agents, err := s.store.ListAgents()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controllerv1.GetStatusResponse{Agents: make([]*controllerv1.AgentStatus, len(agents))}
	var wg sync.WaitGroup
	for i, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp.Agents[i] = s.probe(ctx, a)
		}()
	}

	jobs, err := s.store.ListJobs()
	if err != nil {
		return nil, toStatus(err)
	}
	sessions, err := s.store.ListSessions("")
	if err != nil {
		return nil, toStatus(err)
	}
	byJob := map[string][]catalog.Session{}
	for _, sess := range sessions {
		byJob[sess.JobUID] = append(byJob[sess.JobUID], sess)
	}
	for _, j := range jobs {
		js := &controllerv1.JobStatus{Name: j.Name, Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Schedule: j.Schedule}
		if j.Kind == kindCopy {
			js.Kind = controllerv1.JobKind_JOB_KIND_COPY
		}
		if next := s.nextRun(j); !next.IsZero() {
			js.NextRunUnixNano = next.UnixNano()
		}
		var last, health *catalog.Session
		for i, sess := range byJob[j.UID] {
			if sess.Result == resultRunning {
				continue
			}
			if isHealthCheck(sess) {
				if health == nil || sess.StartedAt.After(health.StartedAt) {
					health = &byJob[j.UID][i]
				}
				continue
			}
			if last == nil || sess.StartedAt.After(last.StartedAt) {
				last = &byJob[j.UID][i]
			}
		}
		if last != nil {
			js.LastSession = sessionProto(*last, nil)
		}
		if health != nil {
			js.LastHealthCheck = sessionProto(*health, nil)
		}
		pts, err := s.store.ListPoints(j.UID)
		if err != nil {
			return nil, toStatus(err)
		}
		js.Points = int64(len(pts))
		for _, p := range pts {
			js.SizeBytes += p.Size
		}
		resp.Jobs = append(resp.Jobs, js)
	}
	sort.Slice(resp.Jobs, func(a, b int) bool { return resp.Jobs[a].Name < resp.Jobs[b].Name })

	s.mu.Lock()
	live := make([]*liveSession, 0, len(s.sessions))
	for _, ls := range s.sessions {
		live = append(live, ls)
	}
	s.mu.Unlock()
	for _, ls := range live {
		sess, total, pt := ls.snapshot()
		resp.Running = append(resp.Running, &controllerv1.RunningSession{Session: sessionProto(sess, pt), TotalBytes: total})
	}
	sort.Slice(resp.Running, func(a, b int) bool {
		return resp.Running[a].Session.StartedUnixNano < resp.Running[b].Session.StartedUnixNano
	})
	wg.Wait()
	return resp, nil
}

// probe asks an agent to describe itself.
func (s *Server) probe(ctx context.Context, a catalog.Agent) *controllerv1.AgentStatus {
	out := &controllerv1.AgentStatus{Agent: agentProto(a)}
	defer func() {
		if t := s.seen.get(a.Name); !t.IsZero() {
			out.LastSeenUnixNano = t.UnixNano()
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, statusProbeTimeout)
	defer cancel()
	d, err := s.describe(ctx, a, 0)
	if err != nil {
		out.Error = status.Convert(err).Message()
		return out
	}
	out.Reachable, out.Version = true, d.Version
	return out
}

// WatchSession streams a session's state about twice a second until it
// ends; a finished session is sent once.
func (s *Server) WatchSession(req *controllerv1.WatchSessionRequest, stream controllerv1.ControllerService_WatchSessionServer) error {
	if err := requireClient(stream.Context()); err != nil {
		return err
	}
	sess, err := s.findSession(req.Id)
	if err != nil {
		return toStatus(err)
	}
	for {
		s.mu.Lock()
		ls := s.sessions[sess.ID]
		s.mu.Unlock()
		if ls == nil {
			// Not running (any more): its final record.
			final, err := s.findSession(sess.ID)
			if err != nil {
				return toStatus(err)
			}
			return stream.Send(&controllerv1.WatchSessionResponse{Session: s.liveView(final)})
		}
		cur, total, pt := ls.snapshot()
		if err := stream.Send(&controllerv1.WatchSessionResponse{Session: sessionProto(cur, pt), TotalBytes: total}); err != nil {
			return err
		}
		select {
		case <-ls.done:
		case <-time.After(500 * time.Millisecond):
		case <-stream.Context().Done():
			return nil
		}
	}
}
