package agent

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
)

// capture is a FileSink that keeps what a copy would send.
type capture struct {
	hb, kb  []byte
	records [][2][]byte
	catalog []byte
}

func (c *capture) Open(hb, kb []byte) error { c.hb, c.kb = hb, kb; return nil }
func (c *capture) Record(h, p []byte, _ format.Checksum) error {
	c.records = append(c.records, [2][]byte{bytes.Clone(h), bytes.Clone(p)})
	return nil
}
func (c *capture) Finish(cat []byte) error { c.catalog = cat; return nil }

// TestHostileTransfers: a source that sends a duplicated record, drops
// one, alters one, sends a malformed or oversized message, a wrong
// trailer, or ends the stream early gets an error, never a committed file.
func TestHostileTransfers(t *testing.T) {
	env := startTarget(t, false)
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, srcDir)
	srcRepo, _ := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	p1, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, backup.Options{BlockSize: 256 << 10, KDF: keys.TestKDF, Password: sourcePassword})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	backupID, chainID := newID(t), newID(t)
	honest := func() (*copyPlan, *capture) {
		cp := planCopy(t, env, pk, p1.FileID.String(), "", backupID, chainID, format.ID{}, 1)
		c := &capture{}
		if _, err := backup.Copy(ctx, srcRepo, "nightly", cp.spec, c); err != nil {
			t.Fatal(err)
		}
		if len(c.records) < 3 {
			t.Fatalf("only %d records", len(c.records))
		}
		return cp, c
	}
	// A client that lets through messages larger than the target accepts.
	bigConn, err := grpc.NewClient(env.addr, grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(4*MaxMessageSize)))
	if err != nil {
		t.Fatal(err)
	}
	defer bigConn.Close()
	bigClient := targetv1.NewTargetServiceClient(bigConn)
	// send replays a (tampered) capture on a raw stream and returns the
	// error the target ends it with.
	send := func(client targetv1.TargetServiceClient, cp *copyPlan, c *capture, trailer []byte) error {
		stream, err := client.Transfer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Open{Open: &targetv1.TransferOpen{
			Grant: cp.grantMsg, GrantSignature: cp.grantSig, Header: c.hb, KeyTable: c.kb}}})
		if _, err := stream.Recv(); err != nil {
			return err
		}
		for _, r := range c.records {
			if err := stream.Send(&targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Records{Records: &targetv1.RecordChunk{
				Records: []*targetv1.Record{{Header: r[0], Payload: r[1]}}}}}); err != nil {
				break
			}
		}
		if c.catalog != nil {
			if trailer == nil {
				trailer = make([]byte, 32)
			}
			stream.Send(&targetv1.TransferRequest{Msg: &targetv1.TransferRequest_Finish{Finish: &targetv1.TransferFinish{Catalog: c.catalog, TrailerHash: trailer}}})
		}
		stream.CloseSend()
		_, err = stream.Recv()
		return err
	}
	for _, tc := range []struct {
		name   string
		tamper func(c *capture)
		says   string
	}{
		{"duplicated record", func(c *capture) { c.records = append(c.records, c.records[1]) }, "already stored"},
		{"missing record", func(c *capture) { c.records = append(c.records[:1], c.records[2:]...) }, "trailer hash"},
		{"altered payload", func(c *capture) { c.records[1][1][10] ^= 1 }, "trailer hash"},
		{"malformed record header", func(c *capture) { c.records[0][0] = c.records[0][0][:40] }, "record header"},
		{"record header from another backup's lengths", func(c *capture) { c.records[0][0][24] ^= 0xff }, ""},
		{"oversized message", func(c *capture) { c.records[0][1] = make([]byte, MaxMessageSize+1) }, "larger than max"},
		{"stream ends before finish", func(c *capture) { c.catalog = nil }, "ended before"},
		{"altered catalog", func(c *capture) { c.catalog[len(c.catalog)-1] ^= 1 }, "trailer hash"},
		// The trailer hash covers the record checksums in the order the
		// source read them: a reordered stream does not match it.
		{"records out of order", func(c *capture) { c.records[0], c.records[1] = c.records[1], c.records[0] }, "trailer hash"},
		// A record sealed for another backup (here: the same data copied
		// under another session) is sealed with a key its AAD and this
		// file's header do not share: refused without any key.
		{"record of another backup", func(c *capture) {
			_, other := honest()
			c.records[1] = other.records[1]
		}, "which the file does not list"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp, c := honest()
			tc.tamper(c)
			before := listFiles(t, env.repo.Dir)
			err := send(bigClient, cp, c, nil)
			if err == nil {
				t.Fatal("the target committed a tampered transfer")
			}
			if st, ok := status.FromError(err); !ok || st.Code() == codes.OK {
				t.Fatalf("not a status error: %v", err)
			}
			if tc.says != "" && !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %q does not say %q", err, tc.says)
			}
			// Nothing is committed; the partial file goes once the target
			// has finished with the stream.
			deadline := time.Now().Add(5 * time.Second)
			for listFiles(t, env.repo.Dir) != before && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if after := listFiles(t, env.repo.Dir); after != before {
				t.Fatalf("files changed: %s -> %s", before, after)
			}
		})
	}
}
