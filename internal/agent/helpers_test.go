package agent

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"os/exec"

	"google.golang.org/grpc/status"
)

type ed25519Key = ed25519.PublicKey
type tlsConfig = tls.Config

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}

// errorsCause finds the gRPC status inside a wrapped error.
func errorsCause(err error) error {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if _, ok := status.FromError(e); ok {
			return e
		}
	}
	return err
}
