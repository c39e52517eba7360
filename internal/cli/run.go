package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newJobRunCmd(e *env) *cobra.Command {
	var wait, full, health, healthFull bool
	c := &cobra.Command{
		Use:   "run NAME [--wait] [--full | --health-check | --health-check-full]",
		Short: "Start a session of a job; with --wait, follow it to the end",
		Long: `Starts a session of job NAME and prints its id on stdout.

With --wait, follows the session to its end: a progress bar on stderr when
it is a terminal, otherwise a progress line on stderr at most once a second.
The result goes to stdout; the exit status is 1 when the session failed.
Ctrl-C stops waiting ('controller session show ID' reports on it later).

--full makes the session write a full backup file instead of an
incremental. --health-check (--health-check-full) runs a health check of
a copy job's latest point at the target instead, recorded as a session.`,
		Example: `  controller job run web-offsite --wait
  SESSION=$(controller job run web)`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			// Following a session takes as long as the session: no
			// timeout then, only Ctrl-C.
			var ctx context.Context
			var cancel context.CancelFunc
			if wait {
				ctx, cancel = context.WithCancel(cmd.Context())
			} else {
				ctx, cancel = callContext(cmd)
			}
			defer cancel()
			if full && (health || healthFull) {
				return usagef("--full writes a backup file; --health-check only checks one")
			}
			stream, err := client.RunJob(ctx, &controllerv1.RunJobRequest{Name: args[0], Wait: wait, Full: full, HealthCheck: health, HealthCheckFull: healthFull})
			if err != nil {
				return err
			}
			first, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("run job %s: the controller started no session", args[0])
			}
			if err != nil {
				return err
			}
			if !wait {
				fmt.Fprintln(e.stdout, first.GetSession().GetId())
				return nil
			}
			return followSession(cmd, e, client, stream, first, newProgressView(e.stderr, first.GetSession().GetId()))
		},
	}
	c.Flags().BoolVar(&wait, "wait", false, "follow the session until it ends and report its result")
	c.Flags().BoolVar(&full, "full", false, "write a full backup file instead of an incremental")
	c.Flags().BoolVar(&health, "health-check", false, "copy jobs: check the latest point at the target now without any key, as a session")
	c.Flags().BoolVar(&healthFull, "health-check-full", false, "copy jobs: check the latest point at the target now with a full verify (the target gets the keys for this run only)")
	return c
}

// runStream is the receiving side of RunJob.
type runStream interface {
	Recv() (*controllerv1.RunJobResponse, error)
}

func sessionFinished(s *controllerv1.Session) bool {
	r := s.GetResult()
	return r == controllerv1.SessionResult_SESSION_RESULT_SUCCESS || r == controllerv1.SessionResult_SESSION_RESULT_FAILED
}

// followSession shows the progress of RunJob messages until one reports
// the session finished, then prints the result. A stream that ends without
// a verdict is answered by asking for the session once.
func followSession(cmd *cobra.Command, e *env, client controllerv1.ControllerServiceClient, stream runStream, msg *controllerv1.RunJobResponse, view progressView) error {
	id := msg.GetSession().GetId()
	s := msg.GetSession()
	for !sessionFinished(s) {
		view.update(s, msg.GetTotalBytes())
		next, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			view.done()
			ctx, cancel := callContext(cmd)
			resp, err := client.GetSession(ctx, &controllerv1.GetSessionRequest{Id: id})
			cancel()
			if err != nil {
				return fmt.Errorf("session %s: the controller stopped reporting progress: %w", id, err)
			}
			s = resp.GetSession()
			if !sessionFinished(s) {
				return fmt.Errorf("session %s: the controller stopped reporting progress while it is %s; see 'controller session show %s'",
					id, orDash(resultWord(s.GetResult())), id)
			}
			break
		}
		if err != nil {
			view.done()
			if cmd.Context().Err() != nil {
				return fmt.Errorf("stopped waiting for session %s (interrupted); see 'controller session show %s'", id, id)
			}
			return fmt.Errorf("session %s: %w", id, err)
		}
		if next.GetSession() != nil {
			msg, s = next, next.GetSession()
		}
	}
	view.done()
	printSessionResult(e.stdout, s)
	if s.GetResult() == controllerv1.SessionResult_SESSION_RESULT_FAILED {
		return fmt.Errorf("session %s failed: %s", id, orDash(s.GetError()))
	}
	return nil
}

// printSessionResult prints the outcome of a finished session.
func printSessionResult(w io.Writer, s *controllerv1.Session) {
	v := newSessionView(s)
	verdict := "succeeded"
	if s.GetResult() == controllerv1.SessionResult_SESSION_RESULT_FAILED {
		verdict = "failed"
	}
	fmt.Fprintf(w, "session %s of job %s %s", v.ID, v.Job, verdict)
	if p := v.Point; p != nil {
		fmt.Fprintf(w, ": point %s, %s, sequence %d of chain %s, encryption %s", p.ID, orDash(p.Kind), p.Sequence, shortID(p.Chain), pointEncryption(p.lsPoint))
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%s read, %s sent, %s written, %d records, %s (%.0f MB/s)\n",
		humanBytes(v.BytesRead), humanBytes(v.BytesSent), humanBytes(v.BytesWritten), v.Records,
		roundDuration(time.Duration(v.DurationSeconds*float64(time.Second))), v.MBPerSecond)
}

// progressView shows a running session. Progress is the bytes the session
// has read of total_bytes, the size of what it reads.
type progressView interface {
	update(s *controllerv1.Session, total int64)
	// done ends the display; it may be called more than once.
	done()
}

// newProgressView draws a bar on a terminal and writes plain lines
// elsewhere (a log file, a pipe, a test's buffer).
func newProgressView(w io.Writer, id string) progressView {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return newBarView(f, id)
	}
	return &lineView{w: w, id: id, now: time.Now}
}

// lineView writes "session S: 123.4 MiB of 1.0 GiB, 250 MB/s" at most once a
// second.
type lineView struct {
	w     io.Writer
	id    string
	now   func() time.Time
	start time.Time
	base  int64 // bytes read when following began
	last  time.Time
}

func (v *lineView) update(s *controllerv1.Session, total int64) {
	n := s.GetStats().GetBytesRead()
	now := v.now()
	if v.start.IsZero() {
		v.start, v.last, v.base = now, now, n
		return
	}
	if now.Sub(v.last) < time.Second {
		return
	}
	v.last = now
	rate := mbPerSecond(n-v.base, now.Sub(v.start))
	if total > 0 {
		fmt.Fprintf(v.w, "session %s: %s of %s, %s\n", v.id, humanBytes(n), humanBytes(total), formatRate(rate))
	} else {
		fmt.Fprintf(v.w, "session %s: %s, %s\n", v.id, humanBytes(n), formatRate(rate))
	}
}

func (v *lineView) done() {}

func formatRate(mbps float64) string {
	if mbps < 10 {
		return fmt.Sprintf("%.1f MB/s", mbps)
	}
	return fmt.Sprintf("%.0f MB/s", mbps)
}

// barView is a progress bar with bytes, MB/s and ETA.
type barView struct {
	bar      *progressbar.ProgressBar
	total    int64
	finished bool
}

func newBarView(w io.Writer, id string) *barView {
	bar := progressbar.NewOptions64(-1,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("session "+shortID(id)),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowTotalBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionClearOnFinish(),
	)
	return &barView{bar: bar}
}

func (v *barView) update(s *controllerv1.Session, total int64) {
	if v.finished {
		return
	}
	if total > 0 && total != v.total {
		v.total = total
		v.bar.ChangeMax64(total)
	}
	v.bar.Set64(s.GetStats().GetBytesRead())
}

func (v *barView) done() {
	if !v.finished {
		v.finished = true
		v.bar.Finish()
	}
}
