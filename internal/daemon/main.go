package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/ferrybackup/ferry/internal/config"
	"github.com/ferrybackup/ferry/internal/keys"
)

// Exit statuses, as the controller CLI uses them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// AgentMain runs agent-source or agent-target: `-config FILE`, until
// SIGTERM or SIGINT, then a graceful stop within the configured bound.
func AgentMain(role string, args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("agent-"+role, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "HCL configuration file (required)")
	logFormat := fs.String("log-format", "", "text or json (overrides the config)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintf(stderr, "usage: agent-%s -config FILE [-log-format text|json]\n", role)
		return exitUsage
	}
	cfg, err := config.LoadAgent(*path)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	if cfg.Role != role {
		fmt.Fprintf(stderr, "Error: %s configures a %s agent; run agent-%s with it\n", *path, cfg.Role, cfg.Role)
		return exitFailure
	}
	if *logFormat != "" {
		cfg.LogFormat = *logFormat
	}
	s, err := StartAgent(cfg, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	return runUntilSignal(stderr, s.Wait, s.Stop)
}

// ServeMain runs `controller serve -config FILE`.
func ServeMain(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("controller serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "HCL configuration file (required)")
	logFormat := fs.String("log-format", "", "text or json (overrides the config)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: controller serve -config FILE [-log-format text|json]")
		return exitUsage
	}
	cfg, err := config.LoadController(*path)
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	if *logFormat != "" {
		cfg.LogFormat = *logFormat
	}
	s, c, err := StartController(cfg, stderr, keys.KDFParams{})
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	// Match the catalog with what the agents hold, in the background: a
	// point committed while the controller was down is adopted.
	go c.Reconcile(context.Background())
	return runUntilSignal(stderr, s.Wait, s.Stop)
}

// DevMain runs `controller dev [-dir D]`.
func DevMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("controller dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "keep the PKI, state and repositories here (default: a new temporary directory)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: controller dev [-dir D]")
		return exitUsage
	}
	env, err := StartDev(context.Background(), *dir, stderr, keys.KDFParams{})
	if err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	fmt.Fprintf(stdout, "ferry dev: controller %s, source agent %s, target agent %s; state in %s\n", env.Controller.Addr, env.Source.Addr, env.Target.Addr, env.Dir)
	fmt.Fprintf(stdout, "metrics (mTLS, with the client certificate below): controller https://%s/metrics, source agent https://%s/metrics, target agent https://%s/metrics\n",
		env.Controller.MetricsAddr, env.Source.MetricsAddr, env.Target.MetricsAddr)
	fmt.Fprintf(stdout, "Paste these lines to use it, then try `controller agent list`:\n\n%s\n", env.Exports())
	wait := func() error {
		select {} // until a signal
	}
	return runUntilSignal(stderr, wait, env.Stop)
}

func runUntilSignal(stderr io.Writer, wait func() error, stop func()) int {
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- wait() }()
	select {
	case <-ctx.Done():
		stop()
		return exitOK
	case err := <-errc:
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "Error: %v\n", err)
			return exitFailure
		}
		return exitOK
	}
}
