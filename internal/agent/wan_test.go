package agent

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/klauspost/compress/zstd"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/format"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	targetv1 "github.com/ferrybackup/ferry/internal/gen/ferry/target/v1"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/linksim"
	"github.com/ferrybackup/ferry/internal/pki"
	"github.com/ferrybackup/ferry/internal/repo"
	"github.com/ferrybackup/ferry/internal/transfer"
	"github.com/ferrybackup/ferry/internal/wancache"
)

// withCache gives the target a WAN cache in a temporary directory.
func (env *targetEnv) withCache(t *testing.T) (*wancache.Cache, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "wancache")
	key, err := wancache.LoadOrCreateKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	c, err := wancache.Open(dir, 1<<30, key)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	env.svc.WANCache = c
	return c, dir
}

// planWAN is planCopy for a WAN-mode session from source agent src into
// backup name: the grant says wan, the spec carries no key (only the key
// table), and the controller's part, handing the key to the target, is
// done here.
func planWAN(t *testing.T, env *targetEnv, pk *keys.PasswordKey, src, name, point, base string, backupID, chainID, parent format.ID, seq uint32) *copyPlan {
	t.Helper()
	cp := planCopy(t, env, pk, point, base, backupID, chainID, parent, seq)
	cp.spec.Session = nil
	cp.spec.BackupName, cp.grant.Backup, cp.grant.Job = name, name, name
	cp.grant.Wan, cp.grant.SourceAgent = true, src
	cp.grant.SessionId = src + "-" + name + "-" + cp.grant.SessionId
	cp.sign(t, env.signer)
	if _, err := cp.prepare(t, env); err != nil {
		t.Fatalf("prepare wan session: %v", err)
	}
	return cp
}

// prepare does the controller's PrepareWanSession call for cp.
func (cp *copyPlan) prepare(t *testing.T, env *targetEnv) (*targetv1.PrepareWanSessionResponse, error) {
	t.Helper()
	id := cp.session.ID()
	return env.client(t, "controller", pki.RoleController).PrepareWanSession(context.Background(), &targetv1.PrepareWanSessionRequest{
		Grant: cp.grantMsg, GrantSignature: cp.grantSig, Key: &commonv1.SessionKey{KeyId: id[:], Secret: cp.session.Secret()}})
}

// sourceBackup makes an encrypted backup of dir in a new source repository.
func sourceBackup(t *testing.T, dir string) (*repo.Repo, *backup.Result) {
	t.Helper()
	r, err := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := backup.Backup(context.Background(), r, "nightly", dir, wanBackupOptions)
	if err != nil {
		t.Fatal(err)
	}
	return r, res
}

var wanBackupOptions = backup.Options{BlockSize: 256 << 10, Password: sourcePassword, KDF: keys.TestKDF,
	Compression: backup.Compression{Algorithm: format.CompressionZstd}}

func restoreSame(t *testing.T, r *repo.Repo, point format.ID, want string) {
	t.Helper()
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(context.Background(), r, "copyjob", to, backup.RestoreOptions{Point: point.String(), Keys: keyring.New(copyPassword)}); err != nil {
		t.Fatalf("restore %s: %v", point, err)
	}
	datagen.SameTree(t, want, to)
}

// TestWANCopyFullThenIncremental: a WAN full and a WAN incremental restore
// byte-identical with the copy job's password and verify; the incremental
// announces only the blocks that changed; stats add up.
func TestWANCopyFullThenIncremental(t *testing.T) {
	env := startTarget(t, true)
	env.withCache(t)
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, srcDir)
	srcRepo, p1 := sourceBackup(t, srcDir)
	snap1 := snapshot(t, srcDir)
	if _, err := datagen.MutateTree(srcDir, 4); err != nil {
		t.Fatal(err)
	}
	p2, err := backup.Backup(ctx, srcRepo, "nightly", srcDir, wanBackupOptions)
	if err != nil {
		t.Fatal(err)
	}
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	client := env.client(t, "source", pki.RoleSource)
	backupID, chainID := newID(t), newID(t)

	full := planWAN(t, env, pk, "source", "copyjob", p1.FileID.String(), "", backupID, chainID, format.ID{}, 1)
	r1, c1, err := SendCopyWAN(ctx, client, srcRepo, "nightly", full.spec, full.grantMsg, full.grantSig, nil)
	if err != nil {
		t.Fatalf("wan full: %v", err)
	}
	inc := planWAN(t, env, pk, "source", "copyjob", p2.FileID.String(), p1.FileID.String(), backupID, chainID, full.spec.FileID, 2)
	r2, c2, err := SendCopyWAN(ctx, client, srcRepo, "nightly", inc.spec, inc.grantMsg, inc.grantSig, nil)
	if err != nil {
		t.Fatalf("wan incremental: %v", err)
	}
	if r1.Kind != format.KindFull || r2.Kind != format.KindIncremental || c1.Size == 0 || c2.Size == 0 {
		t.Fatalf("kinds %v %v, sizes %d %d", r1.Kind, r2.Kind, c1.Size, c2.Size)
	}
	restoreSame(t, env.repo, full.spec.FileID, snap1)
	restoreSame(t, env.repo, inc.spec.FileID, srcDir)
	for _, keyless := range []bool{true, false} {
		if res, err := backup.Verify(ctx, env.repo, "copyjob", backup.VerifyOptions{Keyless: keyless, Keys: keyring.New(copyPassword)}); err != nil {
			t.Fatalf("verify (keyless %v): %v %v", keyless, err, res.Problems)
		}
	}
	s1, s2 := r1.Stats, r2.Stats
	t.Logf("full: %+v", s1)
	t.Logf("incremental: %+v", s2)
	if s1.Blocks == 0 || s1.BlocksSent+s1.CacheHitBlocks != s1.Blocks || s1.Records != s1.Blocks || s1.DigestBytesSent == 0 ||
		s1.BlockBytesSent == 0 || s1.WireBytesSent < s1.DigestBytesSent+s1.BlockBytesSent || s1.WireBytesReceived == 0 || s1.BytesRead == 0 {
		t.Errorf("full stats do not add up: %+v", s1)
	}
	if s2.Blocks == 0 || s2.Blocks*2 > s1.Blocks || s2.Records != s2.Blocks {
		t.Errorf("the incremental announced %d blocks, the full %d", s2.Blocks, s1.Blocks)
	}
	// The random parts of the tree do not compress, the rest does.
	if s1.BlockPlainBytesSent <= s1.BlockBytesSent {
		t.Errorf("blocks went uncompressed: %d plaintext bytes as %d", s1.BlockPlainBytesSent, s1.BlockBytesSent)
	}
	// The key stays only as long as the session: a second transfer under
	// the same grant finds none.
	env.svc.mu.RLock()
	left := len(env.svc.wan)
	env.svc.mu.RUnlock()
	if left != 0 {
		t.Errorf("the target still holds %d WAN session keys after they committed", left)
	}
}

// TestWANManyToOne: two source agents copy the same data to one target;
// the second sends (almost) no block: the target's cache has them all.
func TestWANManyToOne(t *testing.T) {
	env := startTarget(t, true)
	env.withCache(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	repoA, pa := sourceBackup(t, dir)
	repoB, pb := sourceBackup(t, dir) // another branch, same files
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")

	a := planWAN(t, env, pk, "branch-a", "copyjob", pa.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	ra, _, err := SendCopyWAN(ctx, env.client(t, "branch-a", pki.RoleSource), repoA, "nightly", a.spec, a.grantMsg, a.grantSig, nil)
	if err != nil {
		t.Fatalf("branch a: %v", err)
	}
	// Branch b copies into its own backup at the same target.
	b := planWAN(t, env, pk, "branch-b", "copyjob-b", pb.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	rb, _, err := SendCopyWAN(ctx, env.client(t, "branch-b", pki.RoleSource), repoB, "nightly", b.spec, b.grantMsg, b.grantSig, nil)
	if err != nil {
		t.Fatalf("branch b: %v", err)
	}
	sa, sb := ra.Stats, rb.Stats
	t.Logf("branch a: %d blocks, %d sent, %d block bytes, %d wire bytes", sa.Blocks, sa.BlocksSent, sa.BlockBytesSent, sa.WireBytesSent)
	t.Logf("branch b: %d blocks, %d sent, %d block bytes, %d wire bytes, %d cache hits", sb.Blocks, sb.BlocksSent, sb.BlockBytesSent, sb.WireBytesSent, sb.CacheHitBlocks)
	if sb.Blocks != sa.Blocks || sb.CacheHitBlocks != sb.Blocks || sb.BlocksSent != 0 || sb.BlockBytesSent != 0 || sb.CacheHitBytes != sb.PlainBytes {
		t.Fatalf("branch b sent blocks the target had from branch a: %+v", sb)
	}
	if sb.WireBytesSent*20 > sa.WireBytesSent {
		t.Errorf("branch b put %d bytes on the wire, branch a %d", sb.WireBytesSent, sa.WireBytesSent)
	}
	to := filepath.Join(t.TempDir(), "restored-b")
	if _, err := backup.Restore(ctx, env.repo, "copyjob-b", to, backup.RestoreOptions{Keys: keyring.New(copyPassword)}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, dir, to)
}

// TestWANDamagedCacheEntry: a flipped byte in a cache entry on disk makes
// the target ask for that block again; the copy succeeds and restores.
func TestWANDamagedCacheEntry(t *testing.T) {
	env := startTarget(t, true)
	_, cacheDir := env.withCache(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	srcRepo, p := sourceBackup(t, dir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	client := env.client(t, "source", pki.RoleSource)

	first := planWAN(t, env, pk, "source", "copyjob", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	if _, _, err := SendCopyWAN(ctx, client, srcRepo, "nightly", first.spec, first.grantMsg, first.grantSig, nil); err != nil {
		t.Fatal(err)
	}
	// Flip a byte in the middle of three entries.
	var entries []string
	filepath.Walk(cacheDir, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() && len(info.Name()) == 64 {
			entries = append(entries, p)
		}
		return nil
	})
	sort.Strings(entries)
	if len(entries) < 10 {
		t.Fatalf("only %d cache entries", len(entries))
	}
	for _, e := range entries[:3] {
		b, err := os.ReadFile(e)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x40
		if err := os.WriteFile(e, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// Another job copies the same point: everything is a cache hit but the
	// three damaged entries, which travel again.
	second := planWAN(t, env, pk, "source", "copyjob2", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	res, _, err := SendCopyWAN(ctx, client, srcRepo, "nightly", second.spec, second.grantMsg, second.grantSig, nil)
	if err != nil {
		t.Fatalf("copy with damaged cache entries: %v", err)
	}
	st := res.Stats
	t.Logf("%+v", st)
	if st.BlocksRefetched < 1 || st.BlocksSent != st.BlocksRefetched || st.CacheHitBlocks+st.BlocksSent != st.Blocks {
		t.Fatalf("want the damaged blocks refetched and the rest from the cache: %+v", st)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(ctx, env.repo, "copyjob2", to, backup.RestoreOptions{Keys: keyring.New(copyPassword)}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, dir, to)
}

// TestWANRefusals: WAN keys only for WAN grants, only from the controller;
// a WAN transfer needs its key; default mode stays keyless at the target.
func TestWANRefusals(t *testing.T) {
	env := startTarget(t, true)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	srcRepo, p := sourceBackup(t, dir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	cp := planCopy(t, env, pk, p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	id := cp.session.ID()
	key := &commonv1.SessionKey{KeyId: id[:], Secret: cp.session.Secret()}

	// A default-mode grant does not take a key.
	_, err := env.client(t, "controller", pki.RoleController).PrepareWanSession(ctx, &targetv1.PrepareWanSessionRequest{Grant: cp.grantMsg, GrantSignature: cp.grantSig, Key: key})
	if err == nil || !strings.Contains(err.Error(), "not a WAN session") {
		t.Fatalf("key for a default-mode grant: %v", err)
	}
	cp.grant.Wan = true
	cp.sign(t, env.signer)
	if _, err := cp.prepare(t, env); err != nil {
		t.Fatal(err)
	}
	// The same session cannot get another key or grant.
	other := *cp
	other.grant = proto.Clone(cp.grant).(*targetv1.Grant)
	fid := newID(t)
	other.grant.FileId = fid[:]
	other.sign(t, env.signer)
	if _, err := other.prepare(t, env); err == nil || !strings.Contains(err.Error(), "another key") {
		t.Fatalf("a second handover for the session: %v", err)
	}
	// Only the controller hands keys over.
	_, err = env.client(t, "source", pki.RoleSource).PrepareWanSession(ctx, &targetv1.PrepareWanSessionRequest{Grant: cp.grantMsg, GrantSignature: cp.grantSig, Key: key})
	if err == nil || !strings.Contains(err.Error(), "may not call") {
		t.Fatalf("key from a source agent: %v", err)
	}
	// A WAN transfer of an encrypted file without a key handed over.
	cp.grant.SessionId = "nokey"
	cp.sign(t, env.signer)
	cp.spec.Session = nil
	before := listFiles(t, env.repo.Dir)
	_, _, err = SendCopyWAN(ctx, env.client(t, "source", pki.RoleSource), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
	if err == nil || !strings.Contains(err.Error(), "no key") {
		t.Fatalf("wan transfer without a key: %v", err)
	}
	// A default-mode transfer under a WAN grant.
	cp2 := planCopy(t, env, pk, p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	cp2.grant.Wan = true
	cp2.sign(t, env.signer)
	_, _, err = SendCopy(ctx, env.client(t, "source", pki.RoleSource), srcRepo, "nightly", cp2.spec, cp2.grantMsg, cp2.grantSig)
	if err == nil || !strings.Contains(err.Error(), "WAN grant") {
		t.Fatalf("default transfer under a wan grant: %v", err)
	}
	if after := listFiles(t, env.repo.Dir); after != before {
		t.Fatalf("a refused transfer changed the repository:\nbefore %s\nafter  %s", before, after)
	}
}

// TestWANResumesAcrossCuts: a WAN copy through a link cut at random points
// completes and restores byte-identical.
func TestWANResumesAcrossCuts(t *testing.T) {
	env := startTarget(t, false)
	env.withCache(t)
	env.svc.DurabilityInterval = 2 << 20
	ctx := context.Background()
	srcDir := filepath.Join(t.TempDir(), "data")
	os.MkdirAll(srcDir, 0o755)
	const size = 32 << 20
	f, _ := os.Create(filepath.Join(srcDir, "disk.img"))
	datagen.NewMixed(9, size).WriteTo(f)
	f.Close()
	srcRepo, p := sourceBackup(t, srcDir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	cp := planWAN(t, env, pk, "source", "copyjob", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)

	rnd := rand.New(rand.NewPCG(3, 4))
	var cuts []int64
	for range 8 {
		cuts = append(cuts, 1<<20+rnd.Int64N(size/3))
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	proxy := newCutProxy(t, env.addr, cuts)
	conn, err := grpc.NewClient(proxy.ln.Addr().String(), append(DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res, _, err := SendCopyWAN(ctx, targetv1.NewTargetServiceClient(conn), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
	if err != nil {
		t.Fatalf("wan copy across cuts: %v", err)
	}
	if proxy.cutDone != len(cuts) {
		t.Fatalf("only %d of %d cuts happened", proxy.cutDone, len(cuts))
	}
	t.Logf("%+v; resumed after %v entries", res.Stats, res.Resumed)
	resumedMidStream := false
	for _, n := range res.Resumed {
		resumedMidStream = resumedMidStream || n > 0
	}
	if len(res.Resumed) != len(cuts) || !resumedMidStream {
		t.Errorf("want %d resumed attempts, some after durable records: %v", len(cuts), res.Resumed)
	}
	restoreSame(t, env.repo, cp.spec.FileID, srcDir)
}

// TestWANWireBytes measures the bytes on the wire toward the target
// (TLS included) for copies of a 64 MiB mixed file and of its "day 2"
// (datagen.Day2: 5% of the 1 MiB blocks rewritten, 1% appended), in
// default and WAN mode: the day-2 incremental, and a second full of day 2
// (a new chain, or another job) with day 1 already at the target.
func TestWANWireBytes(t *testing.T) {
	ctx := context.Background()
	srcRepo, dataDir, day1, day2 := day1Day2(t, 64<<20)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")

	type result struct{ full1, inc, full2 int64 }
	measure := func(wan, incremental bool) result {
		env := startTarget(t, true)
		if wan {
			env.withCache(t)
		}
		proxy := newCutProxy(t, env.addr, nil)
		conn, err := grpc.NewClient(proxy.ln.Addr().String(), append(DialOptions(),
			grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))))...)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		client := targetv1.NewTargetServiceClient(conn)
		copyOne := func(name, point, base string, backupID, chainID, parent format.ID, seq uint32) (format.ID, int64) {
			before := proxy.sent.Load()
			var cp *copyPlan
			if wan {
				cp = planWAN(t, env, pk, "source", name, point, base, backupID, chainID, parent, seq)
				_, _, err = SendCopyWAN(ctx, client, srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
			} else {
				cp = planCopy(t, env, pk, point, base, backupID, chainID, parent, seq)
				cp.spec.BackupName, cp.grant.Backup, cp.grant.Job = name, name, name
				cp.sign(t, env.signer)
				_, _, err = SendCopy(ctx, client, srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig)
			}
			if err != nil {
				t.Fatalf("wan %v, %s: %v", wan, name, err)
			}
			return cp.spec.FileID, proxy.sent.Load() - before
		}
		var r result
		b1, c1 := newID(t), newID(t)
		f1, n := copyOne("copyjob", day1.FileID.String(), "", b1, c1, format.ID{}, 1)
		r.full1 = n
		if incremental {
			f2, n := copyOne("copyjob", day2.FileID.String(), day1.FileID.String(), b1, c1, f1, 2)
			r.inc = n
			restoreSame(t, env.repo, f2, dataDir)
		} else {
			// Another job (or a new chain) copies day 2 as a full.
			_, r.full2 = copyOne("copyjob2", day2.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
		}
		return r
	}
	def, wan := measure(false, true), measure(true, true)
	def2, wan2 := measure(false, false), measure(true, false)
	def.full2, wan.full2 = def2.full2, wan2.full2
	t.Logf("bytes toward the target   default     wan         wan/default")
	t.Logf("full of day 1             %-11d %-11d %.3f", def.full1, wan.full1, float64(wan.full1)/float64(def.full1))
	t.Logf("incremental day 1 -> 2    %-11d %-11d %.3f", def.inc, wan.inc, float64(wan.inc)/float64(def.inc))
	t.Logf("second full (day 2)       %-11d %-11d %.3f", def.full2, wan.full2, float64(wan.full2)/float64(def.full2))
	// Day 2 rewrote 5% of the blocks and appended 1%: a WAN full of it
	// with day 1 in the cache sends those and little else.
	if wan.full2*8 > def.full2 {
		t.Errorf("a WAN full of mostly unchanged data put %d bytes on the wire, default mode %d", wan.full2, def.full2)
	}
	if wan.inc > def.inc*11/10 {
		t.Errorf("a WAN incremental put %d bytes on the wire, default mode %d", wan.inc, def.inc)
	}
}

// holdProxy forwards TCP to a target; cut ends every connection and
// refuses new ones until release points it at a (new) target.
type holdProxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string
	held   bool
	conns  []net.Conn
	sent   atomic.Int64
	cutAt  int64 // cut once this many bytes went toward the target
	cutNow chan struct{}
}

func newHoldProxy(t *testing.T, target string, cutAt int64) *holdProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &holdProxy{ln: ln, target: target, cutAt: cutAt, cutNow: make(chan struct{})}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			held, target := p.held, p.target
			p.mu.Unlock()
			if held {
				c.Close()
				continue
			}
			u, err := net.Dial("tcp", target)
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
	}()
	return p
}

func (p *holdProxy) forward(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
			if total := p.sent.Add(int64(n)); total >= p.cutAt && p.cutAt > 0 {
				p.mu.Lock()
				if !p.held && p.cutAt > 0 {
					p.held, p.cutAt = true, 0
					for _, c := range p.conns {
						c.Close()
					}
					p.conns = nil
					close(p.cutNow)
				}
				p.mu.Unlock()
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}

func (p *holdProxy) release(target string) {
	p.mu.Lock()
	p.held, p.target = false, target
	p.mu.Unlock()
}

// serveTarget serves a new Target service (a restarted target agent) for
// env's repository and grant key.
func serveTarget(t *testing.T, env *targetEnv) (*Target, string) {
	t.Helper()
	svc := NewTarget("target", []*Repository{{Name: "local", Repo: env.repo}}, []ed25519Key{env.signer.Public()}, hclog.NewNullLogger())
	s := grpc.NewServer(append(ServerOptions(), grpc.Creds(credentials.NewTLS(env.pki.ServerTLS("target", pki.RoleTarget, pki.RoleSource, pki.RoleController))))...)
	targetv1.RegisterTargetServiceServer(s, svc)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return svc, ln.Addr().String()
}

// TestWANCutAcrossTargetRestart: a WAN session whose target restarts
// mid-stream (and so forgets the session key, which it never stores)
// fails with a clear error and leaves nothing behind; the next session
// succeeds.
func TestWANCutAcrossTargetRestart(t *testing.T) {
	env := startTarget(t, true)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	srcRepo, p := sourceBackup(t, dir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	cp := planWAN(t, env, pk, "source", "copyjob", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)

	proxy := newHoldProxy(t, env.addr, 4<<20)
	conn, err := grpc.NewClient(proxy.ln.Addr().String(), append(DialOptions(),
		grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	old := env.svc
	restarted, addr := serveTarget(t, env)
	go func() {
		<-proxy.cutNow
		old.Close() // the process ends: its parked transfer and partial file go
		proxy.release(addr)
	}()
	_, _, err = SendCopyWAN(ctx, targetv1.NewTargetServiceClient(conn), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
	env.svc, env.addr = restarted, addr
	if err == nil || !strings.Contains(err.Error(), "no key for this session") {
		t.Fatalf("a WAN session across a target restart: %v", err)
	}
	if files := listFiles(t, env.repo.Dir); files != "" {
		t.Fatalf("the failed session left %s", files)
	}
	next := planWAN(t, env, pk, "source", "copyjob", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	if _, _, err := SendCopyWAN(ctx, env.client(t, "source", pki.RoleSource), srcRepo, "nightly", next.spec, next.grantMsg, next.grantSig, nil); err != nil {
		t.Fatalf("the next session: %v", err)
	}
	restoreSame(t, env.repo, next.spec.FileID, dir)
}

// tamperedBlocks is a WAN source that sends a wrong block at one index.
type tamperedBlocks struct {
	*backup.WANCopy
	bad int
}

func (s tamperedBlocks) ReadBlock(i int, rec []byte) ([]byte, bool, error) {
	data, c, err := s.WANCopy.ReadBlock(i, rec)
	if i == s.bad && err == nil {
		if c { // re-compress a changed plaintext, so only the digest is wrong
			plain, _ := zstd.NewReader(nil)
			p, _ := plain.DecodeAll(data, nil)
			p[len(p)/2] ^= 1
			enc, _ := zstd.NewWriter(nil)
			return enc.EncodeAll(p, nil), true, nil
		}
		data = bytes.Clone(data)
		data[len(data)/2] ^= 1
	}
	return data, c, err
}

// TestWANHostileSources: a source that sends a block that does not match
// its digest, or a catalog whose digests are not the ones it announced,
// gets an error and no committed file.
func TestWANHostileSources(t *testing.T) {
	env := startTarget(t, true)
	env.withCache(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	srcRepo, p := sourceBackup(t, dir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	client := env.client(t, "source", pki.RoleSource)
	for _, tc := range []struct {
		name string
		make func(wc *backup.WANCopy) *transfer.WANSession
		says string
	}{
		{"a block that does not match its digest", func(wc *backup.WANCopy) *transfer.WANSession {
			return transfer.NewWANSession(tamperedBlocks{wc, wc.Len() / 2}, wc.HeaderBytes, wc.KeyTableBytes, wc.Catalog)
		}, "does not match its digest"},
		{"a catalog with other digests", func(wc *backup.WANCopy) *transfer.WANSession {
			cat, err := format.ParseCatalog(wc.Catalog, wc.Header.BlockSize)
			if err != nil {
				t.Fatal(err)
			}
			for i := range cat.Objects {
				if len(cat.Objects[i].Digests) > 0 {
					cat.Objects[i].Digests[0][0] ^= 1
					break
				}
			}
			plain, err := cat.Encode(wc.Header.BlockSize)
			if err != nil {
				t.Fatal(err)
			}
			return transfer.NewWANSession(wc, wc.HeaderBytes, wc.KeyTableBytes, plain)
		}, "WAN trailer hash does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cp := planWAN(t, env, pk, "source", "copyjob", p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
			wc, err := backup.OpenWAN(srcRepo, "nightly", cp.spec)
			if err != nil {
				t.Fatal(err)
			}
			defer wc.Close()
			stream, err := client.Transfer(ctx)
			if err != nil {
				t.Fatal(err)
			}
			err = tc.make(wc).Send(ctx, stream, cp.grantMsg, cp.grantSig, false)
			if status.Code(errorsCause(err)) != codes.InvalidArgument || !strings.Contains(fmt.Sprint(err), tc.says) {
				t.Fatalf("want InvalidArgument saying %q, got %v", tc.says, err)
			}
			if files := listFiles(t, env.repo.Dir); files != "" {
				t.Fatalf("a refused transfer left %s", files)
			}
		})
	}
}

// TestWANUnencrypted: a WAN copy with the copy job's encryption off needs
// no key at the target and restores without one.
func TestWANUnencrypted(t *testing.T) {
	env := startTarget(t, false)
	env.withCache(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "site")
	sourceTree(t, dir)
	srcRepo, p := sourceBackup(t, dir)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	cp := planCopy(t, env, pk, p.FileID.String(), "", newID(t), newID(t), format.ID{}, 1)
	cp.spec.Session, cp.spec.KeyTable = nil, format.KeyTable{}
	cp.grant.Wan = true
	cp.sign(t, env.signer)
	res, _, err := SendCopyWAN(ctx, env.client(t, "source", pki.RoleSource), srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Blocks == 0 || res.Stats.BlocksSent == 0 {
		t.Fatalf("%+v", res.Stats)
	}
	to := filepath.Join(t.TempDir(), "restored")
	if _, err := backup.Restore(ctx, env.repo, "copyjob", to, backup.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	datagen.SameTree(t, dir, to)
}

// TestWANOverSimulatedLink copies "day 2" of a 64 MiB mixed file (5% of
// its 1 MiB blocks rewritten, 1% appended) as a full, to a target that
// holds day 1 already, over a simulated 200 Mbit/s link with 40 ms of
// one-way latency, in default and in WAN mode. It logs the time and the
// bytes each way (a measurement, not asserted) and checks that WAN mode
// moved only a small part of the bytes.
func TestWANOverSimulatedLink(t *testing.T) {
	ctx := context.Background()
	const size = 64 << 20
	srcRepo, _, day1, day2 := day1Day2(t, size)
	pk, _ := keys.NewPasswordKey(copyPassword, keys.TestKDF, "")
	up := map[bool]int64{}
	for _, wan := range []bool{false, true} {
		env := startTarget(t, true)
		if wan {
			env.withCache(t)
		}
		copyOver := func(addr, name, point string) {
			conn, err := grpc.NewClient(addr, append(DialOptions(),
				grpc.WithTransportCredentials(credentials.NewTLS(env.pki.ClientTLS("source", pki.RoleSource, pki.RoleTarget))))...)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			client := targetv1.NewTargetServiceClient(conn)
			if wan {
				cp := planWAN(t, env, pk, "source", name, point, "", newID(t), newID(t), format.ID{}, 1)
				_, _, err = SendCopyWAN(ctx, client, srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig, nil)
			} else {
				cp := planCopy(t, env, pk, point, "", newID(t), newID(t), format.ID{}, 1)
				cp.spec.BackupName, cp.grant.Backup, cp.grant.Job = name, name, name
				cp.sign(t, env.signer)
				_, _, err = SendCopy(ctx, client, srcRepo, "nightly", cp.spec, cp.grantMsg, cp.grantSig)
			}
			if err != nil {
				t.Fatalf("wan %v, %s: %v", wan, name, err)
			}
		}
		copyOver(env.addr, "day1", day1.FileID.String()) // over loopback
		link, err := linksim.Start(env.addr, linksim.Config{
			Up:   linksim.Shape{Rate: 25e6, Latency: 40 * time.Millisecond},
			Down: linksim.Shape{Rate: 25e6, Latency: 40 * time.Millisecond},
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		copyOver(link.Addr(), "day2", day2.FileID.String())
		d := time.Since(start)
		st := link.Stats()
		link.Close()
		up[wan] = st.Up.Delivered
		t.Logf("wan %-5v day-2 full over 200 Mbit/s, 80 ms RTT: %6.2f s, %9d bytes up, %7d bytes down, effective %6.1f MB/s",
			wan, d.Seconds(), st.Up.Delivered, st.Down.Delivered, float64(size)/1e6/d.Seconds())
	}
	if up[true]*8 > up[false] {
		t.Errorf("WAN mode sent %d bytes toward the target, default mode %d", up[true], up[false])
	}
}

// day1Day2 backs up a mixed file of size (1 MiB blocks) and then its
// "day 2" (datagen.Day2: 5% of the blocks rewritten, 1% appended) into a
// new source repository.
func day1Day2(t *testing.T, size int64) (srcRepo *repo.Repo, dataDir string, day1, day2 *backup.Result) {
	t.Helper()
	ctx := context.Background()
	dataDir = filepath.Join(t.TempDir(), "data")
	os.MkdirAll(dataDir, 0o755)
	img := filepath.Join(dataDir, "disk.img")
	if err := datagen.WriteFile(img, 11, size); err != nil {
		t.Fatal(err)
	}
	srcRepo, err := repo.Create(filepath.Join(t.TempDir(), "source-repo"))
	if err != nil {
		t.Fatal(err)
	}
	bo := wanBackupOptions
	bo.BlockSize = 1 << 20
	if day1, err = backup.Backup(ctx, srcRepo, "nightly", dataDir, bo); err != nil {
		t.Fatal(err)
	}
	if err := datagen.Day2(img, 12); err != nil {
		t.Fatal(err)
	}
	if day2, err = backup.Backup(ctx, srcRepo, "nightly", dataDir, bo); err != nil {
		t.Fatal(err)
	}
	return srcRepo, dataDir, day1, day2
}
