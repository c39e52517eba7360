//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package wancache

import "os"

// lockDir opens the lock file without locking it: these platforms are not
// targets for the agent, and the cache works for one process per directory.
func lockDir(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
}
