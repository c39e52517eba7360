package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Exit statuses.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// usageError marks errors in how a command was called.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// env is what commands read and write.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// Main runs the controller command line and returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	var code exitCode
	if errors.As(err, &code) {
		return int(code) // the daemon said why already
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", commandPath(root, args))
		return ExitUsage
	}
	return ExitFailure
}

// isCobraUsage recognises the errors cobra makes itself for unknown
// commands, which do not pass through the flag error function.
func isCobraUsage(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "required flag(s)")
}

func commandPath(root *cobra.Command, args []string) string {
	c, _, err := root.Find(args)
	if err != nil || c == nil {
		return root.CommandPath()
	}
	return c.CommandPath()
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:           "controller",
		Short:         "ferry controller: encrypted backup copy jobs between sites",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Without a subcommand, print help and fail as a usage error.
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			cmd.Help()
			return usagef("a command is required")
		},
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newOfflineCmd(e), newServeCmd(e), newDevCmd(e), newRecoveryCmd(e), newKeyCmd(e))
	root.AddCommand(newPKICmd(e))
	root.AddCommand(newAgentCmd(e))
	root.AddCommand(newJobCmd(e))
	root.AddCommand(newSessionCmd(e))
	root.AddCommand(newPointCmd(e))
	root.AddCommand(newRestoreCmd(e))
	root.AddCommand(newVerifyCmd(e))
	root.AddCommand(newStatusCmd(e))
	root.AddCommand(newWANCmd(e))
	return root
}

// noArgs and exactArgs return usage errors, unlike cobra's own validators.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func groupCmd(use, short string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cmd.Help()
			return usagef("%s needs a subcommand", cmd.CommandPath())
		},
	}
}
