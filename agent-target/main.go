// Command agent-target is ferry's target agent daemon: agent-target -config FILE.
package main

import (
	"os"

	"github.com/ferrybackup/ferry/internal/daemon"
)

func main() {
	os.Exit(daemon.AgentMain("target", os.Args[1:], os.Stderr))
}
