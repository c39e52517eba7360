package agent

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
)

// cutProxy forwards TCP to a target and cuts every connection when the
// bytes sent toward the target pass each of its cut points.
type cutProxy struct {
	ln      net.Listener
	target  string
	mu      sync.Mutex
	cuts    []int64 // ascending, in bytes toward the target
	sent    atomic.Int64
	conns   []net.Conn
	cutDone int
}

func newCutProxy(t *testing.T, target string, cuts []int64) *cutProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cuts: cuts}
	t.Cleanup(func() { ln.Close() })
	go p.serve()
	return p
}

func (p *cutProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go io.Copy(c, u)
		go p.forward(u, c)
	}
}

// forward copies toward the target, counting, and cuts at the cut points.
func (p *cutProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			total := p.sent.Add(int64(n))
			p.mu.Lock()
			cut := p.cutDone < len(p.cuts) && total >= p.cuts[p.cutDone]
			if cut {
				p.cutDone++
				for _, c := range p.conns {
					c.Close()
				}
				p.conns = nil
			}
			p.mu.Unlock()
			if cut {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

// TestCopyResumesAcrossCuts: a copy through a link that is cut at 20
// random points completes, restores byte-identical, and resends no more
// than about one durability interval per cut.
func TestCopyResumesAcrossCuts(t *testing.T) {
	env := startTarget(t, false)
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(srcDir, 0o755)
	const size = 48 << 20
	f, _ := os.Create(filepath.Join(srcDir, "disk.img"))
	datagen.NewRandom(5, size).WriteTo(f)
	f.Close()
	srcRepo, _ := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	p1, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, backup.Options{KDF: keys.TestKDF, Compression: backup.Compression{Algorithm: format.CompressionNone}})
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	cp := planCopy(t, env, pk, p1.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)

	const interval = 2 << 20
	env.svc.DurabilityInterval = interval
	rnd := rand.New(rand.NewPCG(7, 8))
	var cuts []int64
	for range 20 {
		cuts = append(cuts, 1<<20+rnd.Int64N(size))
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	proxy := newCutProxy(t, env.addr, cuts)
	conn, err := grpc.NewClient(proxy.ln.Addr().String(), append(DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, committed, err := SendCopy(ctx, targetv1.NewTargetServiceClient(conn), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig)
	if err != nil {
		t.Fatalf("copy across cuts: %v", err)
	}
	if proxy.cutDone != len(cuts) {
		t.Fatalf("only %d of %d cuts happened", proxy.cutDone, len(cuts))
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(ctx, env.repo, "copyjob", to, backup.RestoreOptions{Keys: keyring.New(copyPassword)}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, srcDir, to)
	onWire := proxy.sent.Load()
	extra := onWire - committed.Size
	perCut := float64(extra) / float64(len(cuts))
	t.Logf("file %d bytes, %d bytes toward the target (%d sent by the copy), %.0f extra bytes per cut (interval %d)", committed.Size, onWire, res.SentBytes, perCut, interval)
	if perCut > interval+1<<20 {
		t.Fatalf("resent %.0f bytes per cut, more than one durability interval (%d) and one record", perCut, interval)
	}
}
