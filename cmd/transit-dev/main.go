// Command transit-dev runs the Vault Transit test server of package
// transittest in the foreground, as `vault server -dev` runs Vault, so the
// controller can be tried against Transit by hand. Keys live in memory and
// go when it stops.
//
// Usage:
//
//	transit-dev
//
// It listens on 127.0.0.1:8200 with root token "root" and prints the
// export lines for VAULT_ADDR and VAULT_TOKEN, then serves until SIGINT or
// SIGTERM. The environment changes it:
//
//	TRANSIT_LISTEN       address to listen on (127.0.0.1:8200)
//	TRANSIT_ROOT_TOKEN   the root token (root)
//	TRANSIT_ROLE_ID      with TRANSIT_SECRET_ID, enables auth/approle/login
//	TRANSIT_SECRET_ID
//	TRANSIT_LOG_LEVEL    info, or debug for a line per request
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/ferrybackup/ferry/internal/transittest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Getenv, os.Stdout, os.Stderr))
}

// run is main without the process: it serves until ctx ends, so tests can
// drive it.
func run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) int {
	addr := getenv("TRANSIT_LISTEN")
	if addr == "" {
		addr = "127.0.0.1:8200"
	}
	token := getenv("TRANSIT_ROOT_TOKEN")
	if token == "" {
		token = "root"
	}
	level := getenv("TRANSIT_LOG_LEVEL")
	if level == "" {
		level = "info"
	}
	logger := hclog.New(&hclog.LoggerOptions{Name: "transit-dev", Level: hclog.LevelFromString(level), Output: stderr})

	opts := transittest.Options{RootToken: token, Logger: logger}
	roleID, secretID := getenv("TRANSIT_ROLE_ID"), getenv("TRANSIT_SECRET_ID")
	if (roleID == "") != (secretID == "") {
		logger.Error("TRANSIT_ROLE_ID and TRANSIT_SECRET_ID go together")
		return 2
	}
	opts.AppRole = transittest.AppRole{RoleID: roleID, SecretID: secretID}

	srv := transittest.New(opts)
	url, err := srv.Start(addr)
	if err != nil {
		logger.Error("start transit test server", "error", err)
		return 1
	}
	fmt.Fprintf(stdout, "==> Vault Transit test server (%s) listening on %s\n", transittest.Version, url)
	fmt.Fprintf(stdout, "Transit is mounted at %s/; keys are kept in memory only.\n\n", srv.Mount())
	fmt.Fprintf(stdout, "You may need to set the following environment variables:\n\n")
	fmt.Fprintf(stdout, "export VAULT_ADDR=%s\n", url)
	fmt.Fprintf(stdout, "export VAULT_TOKEN=%s\n", token)
	if roleID != "" {
		fmt.Fprintf(stdout, "\nAppRole login is enabled at auth/approle/login.\n")
	}
	fmt.Fprintln(stdout)

	<-ctx.Done()
	logger.Info("shutting down")
	if err := srv.Close(); err != nil {
		logger.Error("shut down", "error", err)
		return 1
	}
	return 0
}
