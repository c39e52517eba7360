package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newKeyCmd(e *env) *cobra.Command {
	c := groupCmd("key", "Rotate a job's key and rewrap its files' session secrets without rewriting data")
	var job string
	rotate := &cobra.Command{
		Use:   "rotate --job NAME",
		Short: "Add a new version to a KMS job's Vault Transit key",
		Long: `Rotates the Vault Transit key of a KMS job. New sessions wrap their secrets
with the new version; existing points keep opening with their older versions
until 'controller key rewrap' moves them.`,
		Example: `  controller key rotate --job offsite`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if job == "" {
				return usagef("--job NAME is required")
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.RotateKey(ctx, &controllerv1.RotateKeyRequest{Job: job})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "rotated transit key %s of job %s; run `controller key rewrap --job %s` to move its points to the new version\n", resp.Key, job, job)
			return nil
		},
	}
	rotate.Flags().StringVar(&job, "job", "", "the job")
	var rjob string
	rewrap := &cobra.Command{
		Use:   "rewrap --job NAME",
		Short: "Rewrap every file's session secret under the job's current key, rewriting only key tables",
		Long: `Rewraps the session secret of every file of a job under the job's current key:
the latest version of its Vault Transit key (Vault's rewrap, which never returns
the plaintext), or its current password after 'job update --password-file' (so
old points stop needing the old password). Only each file's key table is
rewritten, in place and atomically; no data record is read or written.`,
		Example: `  controller key rewrap --job offsite`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if rjob == "" {
				return usagef("--job NAME is required")
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := client.RewrapKeys(cmd.Context(), &controllerv1.RewrapKeysRequest{Job: rjob})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "rewrapped the session secrets of %d files of job %s\n", resp.Files, rjob)
			return nil
		},
	}
	rewrap.Flags().StringVar(&rjob, "job", "", "the job")
	c.AddCommand(rotate, rewrap)
	return c
}
