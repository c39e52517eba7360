package agent

import (
	"context"
	"fmt"

	"github.com/ferrybackup/ferry/internal/backup"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transfer"
)

// SendCopy copies a point of a local backup to a target agent over one
// Transfer stream, presenting the controller's grant, and returns once
// the target has committed the file.
func SendCopy(ctx context.Context, client targetv1.TargetServiceClient, r *repo.Repo, backupName string, spec backup.CopySpec, grantMsg, grantSig []byte) (*backup.CopyResult, *targetv1.TransferCommitted, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if the copy fails part-way
	stream, err := client.Transfer(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("open transfer to target: %w", err)
	}
	sink := transfer.NewSender(stream, grantMsg, grantSig)
	res, err := backup.Copy(ctx, r, backupName, spec, sink)
	if err != nil {
		return nil, nil, err
	}
	return res, sink.Committed, nil
}
