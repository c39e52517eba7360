// Command controller is ferry's controller daemon and the CLI that talks to
// it, and holds the offline commands for disaster recovery.
package main

import (
	"os"

	"github.com/ferrybackup/ferry/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}
