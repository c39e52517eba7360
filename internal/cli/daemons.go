package cli

import (
	"github.com/spf13/cobra"

	"github.com/ferrybackup/ferry/internal/daemon"
)

// exitCode carries a daemon's exit status through cobra.
type exitCode int

func (e exitCode) Error() string { return "" }

func newServeCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "serve -config FILE",
		Short: "Run the controller daemon",
		Long: `Runs the controller: the catalog, the keys and the API the CLI talks to.
It stops gracefully on SIGTERM or Ctrl-C.`,
		Example:            `  controller serve -config /etc/ferry/controller.hcl`,
		DisableFlagParsing: true, // Go-style -config, as the agents take it
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := daemon.ServeMain(args, e.stderr); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
}

func newDevCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "dev [-dir D]",
		Short: "Run a controller, a source agent and a target agent in one process, for trying ferry",
		Long: `Starts a controller, a source agent named "source" and a target agent named
"target" (each with a repository "local") on loopback, with a throw-away PKI,
keeping everything under -dir (a temporary directory when omitted). It prints
the export lines to paste, and runs until interrupted.`,
		Example:            `  controller dev -dir /tmp/ferry-dev`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if code := daemon.DevMain(args, e.stdout, e.stderr); code != 0 {
				return exitCode(code)
			}
			return nil
		},
	}
}
