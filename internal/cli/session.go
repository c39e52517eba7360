package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newSessionCmd(e *env) *cobra.Command {
	c := groupCmd("session", "List the sessions of jobs and show how one went")
	addConnFlags(c)
	c.AddCommand(newSessionListCmd(e), newSessionShowCmd(e), newSessionWatchCmd(e))
	return c
}

func newSessionListCmd(e *env) *cobra.Command {
	var job, output string
	c := &cobra.Command{
		Use:     "list [--job NAME]",
		Short:   "List sessions, of every job or of one",
		Example: `  controller session list --job web-offsite`,
		Args:    noArgs,
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
			resp, err := client.ListSessions(ctx, &controllerv1.ListSessionsRequest{Job: job})
			if err != nil {
				return err
			}
			sessions := []sessionView{}
			for _, s := range resp.GetSessions() {
				sessions = append(sessions, newSessionView(s))
			}
			if output == "json" {
				return writeJSON(e.stdout, map[string]any{"sessions": sessions})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tJOB\tKIND\tRESULT\tSTARTED\tDURATION\tREAD\tWRITTEN\tMB/S")
			for _, v := range sessions {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\n", v.ID, v.Job, orDash(v.Kind), orDash(v.Result),
					tableTime(v.Started), roundDuration(seconds(v.DurationSeconds)), humanBytes(v.BytesRead), humanBytes(v.BytesWritten), v.MBPerSecond)
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&job, "job", "", "list only the sessions of this job")
	addOutputFlag(c, &output)
	return c
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func newSessionShowCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "show ID",
		Short:   "Show a session: mode, bytes read, sent and written, speed, duration, result, error and what recovery did",
		Example: `  controller session show 01J9ZK6W3V1Q`,
		Args:    exactArgs("ID"),
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
			resp, err := client.GetSession(ctx, &controllerv1.GetSessionRequest{Id: args[0]})
			if err != nil {
				return err
			}
			v := newSessionView(resp.GetSession())
			if output == "json" {
				return writeJSON(e.stdout, v)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			row := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, a...)...) }
			row("session", "%s", v.ID)
			row("job", "%s", v.Job)
			row("kind", "%s", orDash(v.Kind))
			row("mode", "%s", orDash(v.Mode))
			row("result", "%s", orDash(v.Result))
			row("started", "%s", tableTime(v.Started))
			row("ended", "%s", tableTime(v.Ended))
			row("duration", "%s", roundDuration(seconds(v.DurationSeconds)))
			row("bytes read", "%s (%d)", humanBytes(v.BytesRead), v.BytesRead)
			row("bytes sent", "%s (%d)", humanBytes(v.BytesSent), v.BytesSent)
			row("bytes written", "%s (%d)", humanBytes(v.BytesWritten), v.BytesWritten)
			row("records", "%d", v.Records)
			row("speed", "%s", formatRate(v.MBPerSecond))
			if w := v.WAN; w != nil {
				row("wan blocks", "%d (%s of plaintext)", w.Blocks, humanBytes(w.PlainBytes))
				row("wan cache hits", "%d blocks, %s", w.CacheHitBlocks, humanBytes(w.CacheHitBytes))
				if w.BlocksSent > 0 {
					row("wan blocks sent", "%d blocks, %s of plaintext as %s (compression %.2fx)", w.BlocksSent, humanBytes(w.BlockPlainBytesSent), humanBytes(w.BlockBytesSent), w.CompressionRatio)
				} else {
					row("wan blocks sent", "none")
				}
				if w.BlocksRefetched > 0 {
					row("wan refetched", "%d blocks (cache entries gone or damaged)", w.BlocksRefetched)
				}
				row("wan wire sent", "%s (%d; digests %s, blocks %s)", humanBytes(w.WireBytesSent), w.WireBytesSent, humanBytes(w.DigestBytesSent), humanBytes(w.BlockBytesSent))
				row("wan wire received", "%s (%d)", humanBytes(w.WireBytesReceived), w.WireBytesReceived)
				row("effective speed", "%s of plaintext", formatRate(w.EffectiveMBPerSecond))
			}
			if p := v.Point; p != nil {
				row("point", "%s (%s, sequence %d of chain %s)", p.ID, orDash(p.Kind), p.Sequence, shortID(p.Chain))
				row("encryption", "%s", pointEncryption(p.lsPoint))
			}
			if v.Error != "" {
				row("error", "%s", v.Error)
			}
			for i, n := range v.Notes {
				k := ""
				if i == 0 {
					k = "notes"
				}
				fmt.Fprintf(tw, "%s\t%s\n", k+map[bool]string{true: ":", false: ""}[k != ""], n)
			}
			return tw.Flush()
		},
	}
	addOutputFlag(c, &output)
	return c
}

func newPointCmd(e *env) *cobra.Command {
	c := groupCmd("point", "List the restore points of a job")
	addConnFlags(c)
	c.AddCommand(newPointListCmd(e))
	return c
}

func newPointListCmd(e *env) *cobra.Command {
	var job, output string
	c := &cobra.Command{
		Use:   "list --job NAME",
		Short: "List a job's restore points by chain: sequence, kind, time, size, encryption and key reference",
		Long: `Lists the restore points of job NAME, chain by chain. The encryption column
shows how each file's session secrets are wrapped (password, kms:..., recovery).
-o json has the shape of 'offline ls -o json'.`,
		Example: `  controller point list --job web-offsite`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if job == "" {
				return usagef("--job must name a job")
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: job})
			if err != nil {
				return err
			}
			backups := groupPoints(resp.GetPoints())
			if output == "json" {
				return writeJSON(e.stdout, map[string]any{"backups": backups})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "CHAIN\tSEQ\tKIND\tPOINT\tTIME\tSIZE\tENCRYPTION")
			for _, b := range backups {
				for _, ch := range b.Chains {
					for _, p := range ch.Points {
						t := "-"
						if !p.Time.IsZero() {
							t = tableTime(&p.Time)
						}
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", shortID(ch.ID), p.Sequence, orDash(p.Kind), p.ID,
							t, humanBytes(p.Size), pointEncryption(p))
					}
				}
			}
			return tw.Flush()
		},
	}
	c.Flags().StringVar(&job, "job", "", "the job whose points to list")
	c.MarkFlagRequired("job")
	addOutputFlag(c, &output)
	return c
}
