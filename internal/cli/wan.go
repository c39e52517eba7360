package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newWANCmd(e *env) *cobra.Command {
	c := groupCmd("wan", "WAN-accelerator mode: warm a target agent's global cache")
	addConnFlags(c)
	var target, job, point, output string
	seed := &cobra.Command{
		Use:   "seed --target AGENT --job JOB [--point ID]",
		Short: "Warm a target's WAN cache from a copy job's chain that target holds",
		Long: `Puts the blocks of a restore point of copy job JOB (default: its latest) into
the WAN cache of target agent AGENT, which holds the job's files, so that WAN
copies of the same data, from any source agent or job, send only digests.
For an encrypted job the target gets the job's keys for this call only, as
for a restore (the cache is encrypted at rest under the agent's own key).
Each block is checked against its digest before it is cached.`,
		Example: `  controller wan seed --target vault-b --job web-offsite`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if target == "" || job == "" {
				return usagef("wan seed needs --target AGENT and --job JOB")
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
			resp, err := client.SeedWanCache(cmd.Context(), &controllerv1.SeedWanCacheRequest{Target: target, Job: job, PointId: id})
			if err != nil {
				return err
			}
			v := map[string]any{"point": fmt.Sprintf("%x", resp.GetPointId()), "blocks": resp.GetBlocks(), "already_cached": resp.GetAlready(),
				"added": resp.GetAdded(), "added_bytes": resp.GetAddedBytes(), "duration_seconds": time.Duration(resp.GetDurationNanos()).Seconds()}
			if output == "json" {
				return writeJSON(e.stdout, v)
			}
			fmt.Fprintf(e.stdout, "seeded the WAN cache of %s from point %x of job %s: %d blocks, %d cached already, %d added (%s), %s\n",
				target, resp.GetPointId(), job, resp.GetBlocks(), resp.GetAlready(), resp.GetAdded(), humanBytes(resp.GetAddedBytes()),
				roundDuration(time.Duration(resp.GetDurationNanos())))
			return nil
		},
	}
	seed.Flags().StringVar(&target, "target", "", "the target agent whose cache to warm")
	seed.Flags().StringVar(&job, "job", "", "the copy job whose files on that target to read")
	seed.Flags().StringVar(&point, "point", "", "the restore point (default: the latest)")
	addOutputFlag(seed, &output)
	c.AddCommand(seed)
	return c
}
