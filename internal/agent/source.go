package agent

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/backup"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transfer"
)

// SendCopy copies a point of a local backup to a target agent over a
// Transfer stream, presenting the controller's grant, and returns once the
// target has committed the file. When the link is cut it reconnects with
// backoff under the same grant and resumes after what the target holds
// durably, until the grant expires.
func SendCopy(ctx context.Context, client targetv1.TargetServiceClient, r *repo.Repo, backupName string, spec backup.CopySpec, grantMsg, grantSig []byte) (*backup.CopyResult, *targetv1.TransferCommitted, error) {
	g := &targetv1.Grant{}
	if err := proto.Unmarshal(grantMsg, g); err != nil {
		return nil, nil, fmt.Errorf("grant: %w", err)
	}
	expires := time.Unix(g.ExpiresUnix, 0)
	if spec.Created.IsZero() {
		// Every attempt must send the same header, or a resumed file would
		// not be the one the trailer describes.
		spec.Created = time.Now().UTC()
	}
	wait := 100 * time.Millisecond
	var sent int64
	for attempt := 0; ; attempt++ {
		res, committed, n, err := copyOnce(ctx, client, r, backupName, spec, grantMsg, grantSig, attempt > 0)
		sent += n
		if n > 0 {
			wait = 100 * time.Millisecond // it made progress: try again soon
		}
		if err == nil {
			res.SentBytes = sent
			return res, committed, nil
		}
		if !linkError(err) || ctx.Err() != nil {
			return nil, nil, err
		}
		if time.Now().Add(wait).After(expires) {
			return nil, nil, fmt.Errorf("the link to the target kept failing until the session's grant expired: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func copyOnce(ctx context.Context, client targetv1.TargetServiceClient, r *repo.Repo, backupName string, spec backup.CopySpec, grantMsg, grantSig []byte, resume bool) (*backup.CopyResult, *targetv1.TransferCommitted, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the stream if the copy fails part-way
	stream, err := client.Transfer(ctx)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("open transfer to target: %w", err)
	}
	sink := transfer.NewSender(stream, grantMsg, grantSig, resume)
	res, err := backup.Copy(ctx, r, backupName, spec, sink)
	if err != nil {
		return nil, nil, sink.Sent, err
	}
	return res, sink.Committed, sink.Sent, nil
}

// linkError tells a cut link (worth resuming) from a refusal.
func linkError(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable:
		return true
	}
	return false
}
