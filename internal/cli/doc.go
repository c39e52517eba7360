// Package cli implements the controller binary's commands with cobra. Main
// runs them in-process, so tests drive the CLI without building it.
//
// Exit status: 0 on success, 1 on failure, 2 on a usage error.
package cli
