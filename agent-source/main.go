// Command agent-source is ferry's source agent daemon: agent-source -config FILE.
package main

import (
	"os"

	"github.com/ferrybackup/ferry/internal/daemon"
)

func main() {
	os.Exit(daemon.AgentMain("source", os.Args[1:], os.Stderr))
}
