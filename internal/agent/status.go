package agent

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/grant"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transfer"
)

// toStatus maps a domain error to a gRPC status, keeping its message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, grant.ErrInvalid), errors.Is(err, errWrongPeer):
		code = codes.PermissionDenied
	case errors.Is(err, transfer.ErrRefused), errors.Is(err, errBadRequest):
		code = codes.InvalidArgument
	case errors.Is(err, repo.ErrNoBackup), errors.Is(err, repo.ErrNoPoint), errors.Is(err, errNoRepository):
		code = codes.NotFound
	case errors.Is(err, repo.ErrLocked):
		code = codes.Aborted
	case errors.Is(err, repo.ErrCannotMerge), errors.Is(err, repo.ErrNotTail):
		code = codes.FailedPrecondition
	case errors.Is(err, keyring.ErrWrongPassword), errors.Is(err, keyring.ErrNeedKey):
		code = codes.FailedPrecondition
	case errors.Is(err, backup.ErrVerify), errors.Is(err, format.ErrCorrupt):
		code = codes.DataLoss
	}
	return status.Error(code, err.Error())
}

var (
	errWrongPeer    = errors.New("caller not allowed")
	errBadRequest   = errors.New("bad request")
	errNoRepository = errors.New("no such repository")
)
