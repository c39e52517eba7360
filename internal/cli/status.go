package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

// statusView is `controller status -o json`.
type statusView struct {
	Agents  []agentStatusView `json:"agents"`
	Jobs    []jobStatusView   `json:"jobs"`
	Running []runningView     `json:"running"`
}

type agentStatusView struct {
	Name      string     `json:"name"`
	Role      string     `json:"role"`
	Address   string     `json:"address"`
	Reachable bool       `json:"reachable"`
	Version   string     `json:"version,omitempty"`
	LastSeen  *time.Time `json:"last_seen,omitempty"`
	Error     string     `json:"error,omitempty"`
}

type jobStatusView struct {
	Name            string       `json:"name"`
	Kind            string       `json:"kind"`
	Schedule        string       `json:"schedule,omitempty"`
	NextRun         *time.Time   `json:"next_run,omitempty"`
	Points          int64        `json:"points"`
	SizeBytes       int64        `json:"size_bytes"`
	LastSession     *sessionView `json:"last_session,omitempty"`
	LastHealthCheck *sessionView `json:"last_health_check,omitempty"`
}

type runningView struct {
	sessionView
	TotalBytes int64 `json:"total_bytes,omitempty"`
}

func newStatusView(r *controllerv1.GetStatusResponse) statusView {
	v := statusView{Agents: []agentStatusView{}, Jobs: []jobStatusView{}, Running: []runningView{}}
	for _, a := range r.GetAgents() {
		v.Agents = append(v.Agents, agentStatusView{
			Name: a.GetAgent().GetName(), Role: roleWord(a.GetAgent().GetRole()), Address: a.GetAgent().GetAddress(),
			Reachable: a.GetReachable(), Version: a.GetVersion(), LastSeen: unixTime(a.GetLastSeenUnixNano()), Error: a.GetError(),
		})
	}
	for _, j := range r.GetJobs() {
		jv := jobStatusView{Name: j.GetName(), Kind: kindWord(j.GetKind()), Schedule: j.GetSchedule(),
			NextRun: unixTime(j.GetNextRunUnixNano()), Points: j.GetPoints(), SizeBytes: j.GetSizeBytes()}
		if s := j.GetLastSession(); s != nil {
			sv := newSessionView(s)
			jv.LastSession = &sv
		}
		if s := j.GetLastHealthCheck(); s != nil {
			sv := newSessionView(s)
			jv.LastHealthCheck = &sv
		}
		v.Jobs = append(v.Jobs, jv)
	}
	for _, s := range r.GetRunning() {
		v.Running = append(v.Running, runningView{sessionView: newSessionView(s.GetSession()), TotalBytes: s.GetTotalBytes()})
	}
	return v
}

func newStatusCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:   "status",
		Short: "Show agents, jobs and running sessions at a glance",
		Long: `Shows every agent (asked now: reachable or not, its version, when the
controller last heard from it), every job (its last session and result, its
next scheduled run, its restore points and their size, its last health
check) and the sessions running now with their progress.`,
		Example: `  controller status
  controller status -o json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.GetStatus(ctx, &controllerv1.GetStatusRequest{})
			if err != nil {
				return err
			}
			v := newStatusView(resp)
			if output == "json" {
				return writeJSON(e.stdout, v)
			}
			return writeStatus(e.stdout, v)
		},
	}
	addConnFlags(c)
	addOutputFlag(c, &output)
	return c
}

func writeStatus(w io.Writer, v statusView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tROLE\tADDRESS\tSTATE\tVERSION\tLAST SEEN")
	for _, a := range v.Agents {
		state := "reachable"
		if !a.Reachable {
			state = "UNREACHABLE"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.Name, orDash(a.Role), a.Address, state, orDash(a.Version), tableTime(a.LastSeen))
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "JOB\tKIND\tLAST SESSION\tRESULT\tNEXT RUN\tPOINTS\tSIZE\tHEALTH")
	for _, j := range v.Jobs {
		last, result := "-", "-"
		if s := j.LastSession; s != nil {
			last, result = tableTime(s.Started), s.Result
		}
		health := "-"
		if s := j.LastHealthCheck; s != nil {
			health = s.Result + " " + tableTime(s.Started)
		}
		next := "-"
		if j.NextRun != nil {
			next = tableTime(j.NextRun)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", j.Name, orDash(j.Kind), last, result, next, j.Points, humanBytes(j.SizeBytes), health)
	}
	fmt.Fprintln(tw)
	if len(v.Running) == 0 {
		fmt.Fprintln(tw, "no session is running")
	} else {
		fmt.Fprintln(tw, "RUNNING\tJOB\tSTARTED\tREAD\tOF\tMB/S")
		for _, r := range v.Running {
			of := "-"
			if r.TotalBytes > 0 {
				of = humanBytes(r.TotalBytes)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%.0f\n", r.ID, r.Job, tableTime(r.Started), humanBytes(r.BytesRead), of, r.MBPerSecond)
		}
	}
	for _, a := range v.Agents {
		if a.Error != "" {
			fmt.Fprintf(tw, "agent %s: %s\n", a.Name, a.Error)
		}
	}
	for _, j := range v.Jobs {
		if s := j.LastSession; s != nil && s.Error != "" {
			fmt.Fprintf(tw, "job %s: last session %s failed: %s\n", j.Name, s.ID, s.Error)
		}
		if s := j.LastHealthCheck; s != nil && s.Error != "" {
			fmt.Fprintf(tw, "job %s: health check %s failed: %s\n", j.Name, s.ID, s.Error)
		}
	}
	return tw.Flush()
}

func newSessionWatchCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a running session to its end",
		Long: `Follows session ID (or a unique prefix of it) as it runs: a progress bar on
a terminal, otherwise a line at most once a second on stderr, then its
result on stdout. Exit status 1 when the session failed. A finished session
is reported at once.`,
		Example: `  controller session watch 01J9ZK6W3V1Q`,
		Args:    exactArgs("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := context.WithCancel(cmd.Context())
			defer cancel()
			stream, err := client.WatchSession(ctx, &controllerv1.WatchSessionRequest{Id: args[0]})
			if err != nil {
				return err
			}
			first, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("session %s: the controller sent nothing", args[0])
			}
			if err != nil {
				return err
			}
			return followSession(cmd, e, client, watchStream{stream}, &controllerv1.RunJobResponse{Session: first.GetSession(), TotalBytes: first.GetTotalBytes()},
				newProgressView(e.stderr, first.GetSession().GetId()))
		},
	}
	return c
}

// watchStream makes a WatchSession stream look like RunJob's.
type watchStream struct {
	s controllerv1.ControllerService_WatchSessionClient
}

func (w watchStream) Recv() (*controllerv1.RunJobResponse, error) {
	m, err := w.s.Recv()
	if err != nil {
		return nil, err
	}
	return &controllerv1.RunJobResponse{Session: m.GetSession(), TotalBytes: m.GetTotalBytes()}, nil
}
