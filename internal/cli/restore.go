package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newRestoreCmd(e *env) *cobra.Command {
	var job, point, to string
	c := &cobra.Command{
		Use:   "restore --job NAME [--point ID] --to AGENT:PATH",
		Short: "Restore a restore point of a job onto an agent",
		Long: `Restores --point of job NAME (a point id or an unambiguous prefix of one, an
even number of hex digits; the latest point when omitted) to PATH on AGENT.
The controller hands the agent the keys the point needs; every block is
checked against its digest before it is written. Runs until the restore is
done (no --timeout); Ctrl-C stops waiting.`,
		Example: `  controller restore --job web-offsite --to site-a:/srv/restore/web
  controller restore --job web-offsite --point 3f9a0c17 --to vault-b:/tmp/web`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if job == "" {
				return usagef("--job must name a job")
			}
			id, err := parsePointID(point)
			if err != nil {
				return err
			}
			agent, path, err := parseAgentRef("to", "PATH", "site-a:/srv/restore/web", to)
			if err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			start := time.Now()
			resp, err := client.Restore(cmd.Context(), &controllerv1.RestoreRequest{Job: job, PointId: id, Agent: agent, Path: path})
			if err != nil {
				return err
			}
			d := time.Since(start)
			what := "the latest point"
			if point != "" {
				what = "point " + point
			}
			fmt.Fprintf(e.stdout, "restored %s of job %s to %s: %d objects, %s, %s (%s)\n",
				what, job, to, resp.GetObjects(), humanBytes(resp.GetBytes()), roundDuration(d), formatRate(mbPerSecond(resp.GetBytes(), d)))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&job, "job", "", "the job whose point to restore")
	f.StringVar(&point, "point", "", "point id or unique prefix (default: the latest point)")
	f.StringVar(&to, "to", "", "where to restore: AGENT:PATH")
	c.MarkFlagRequired("job")
	c.MarkFlagRequired("to")
	addConnFlags(c)
	return c
}

func newVerifyCmd(e *env) *cobra.Command {
	var job, point string
	var keyless bool
	c := &cobra.Command{
		Use:   "verify --job NAME [--point ID] [--keyless]",
		Short: "Check the backup files of a job: structure and checksums (--keyless), or every block",
		Long: `Verifies the chain of --point from its full up to it, or every chain of job
NAME when --point is omitted. --keyless checks structure, every record's
checksum and each file's footer hash without any key, on the agent holding
the files. Without it, every record and catalog is decrypted and every block
checked against its digest. Exit status 1 when anything is wrong; each
problem is printed. Runs until done (no --timeout); Ctrl-C stops waiting.`,
		Example: `  controller verify --job web-offsite --keyless
  controller verify --job web-offsite --point 3f9a0c17`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if job == "" {
				return usagef("--job must name a job")
			}
			id, err := parsePointID(point)
			if err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			start := time.Now()
			resp, err := client.Verify(cmd.Context(), &controllerv1.VerifyRequest{Job: job, PointId: id, Keyless: keyless})
			if err != nil {
				return err
			}
			for _, p := range resp.GetProblems() {
				fmt.Fprintf(e.stdout, "PROBLEM: %s\n", p)
			}
			mode := "full"
			if keyless {
				mode = "keyless"
			}
			verdict := "ok"
			if len(resp.GetProblems()) > 0 {
				verdict = "FAILED"
			}
			fmt.Fprintf(e.stdout, "%s verify %s: %d files, %d records, %s checked, %d problems, %s\n",
				mode, verdict, resp.GetFiles(), resp.GetRecords(), humanBytes(resp.GetBytes()), len(resp.GetProblems()), roundDuration(time.Since(start)))
			if n := len(resp.GetProblems()); n > 0 {
				return fmt.Errorf("verify of job %s found %d problems", job, n)
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&job, "job", "", "the job whose files to verify")
	f.StringVar(&point, "point", "", "verify the chain up to this point (default: every chain)")
	f.BoolVar(&keyless, "keyless", false, "check structure and checksums only; uses no key")
	c.MarkFlagRequired("job")
	addConnFlags(c)
	return c
}
