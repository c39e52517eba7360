package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferrybackup/ferry/internal/datagen"
	"github.com/ferrybackup/ferry/internal/pki"
)

// sealedStream returns the length and SHA-256 of data sealed as send seals
// it, computed independently of send.
func sealedStream(t *testing.T, data, key []byte, chunk int) (int, [sha256.Size]byte) {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n := 0
	var nonce [12]byte
	for seq := uint64(0); len(data) > 0; seq++ {
		p := data[:min(chunk, len(data))]
		data = data[len(p):]
		binary.BigEndian.PutUint64(nonce[4:], seq)
		s := aead.Seal(nil, nonce[:], p, nil)
		h.Write(s)
		n += len(s)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return n, sum
}

func TestCopy(t *testing.T) {
	for _, tc := range []struct {
		name     string
		codec    string
		size     int
		chunk    int
		workers  int
		skipHash bool
		direct   bool
	}{
		{"raw 8MiB", codecRaw, 8 << 20, 1 << 20, 2, false, false},
		{"raw 8MiB direct", codecRaw, 8 << 20, 1 << 20, 2, false, true},
		{"proto 8MiB odd tail", codecProto, 8<<20 + 1000, 100 << 10, 3, false, false},
		{"proto odd tail direct", codecProto, 5<<20 + 1000, 100 << 10, 3, false, true},
		{"raw small chunks", codecRaw, 1<<20 + 7, 4000, 2, false, false},
		{"raw no hash", codecRaw, 2 << 20, 1 << 20, 1, true, false},
		{"empty", codecRaw, 0, 1 << 20, 2, false, false},
		{"empty direct", codecRaw, 0, 1 << 20, 2, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := filepath.Join(dir, "in")
			out := filepath.Join(dir, "out")
			if err := datagen.WriteFile(in, 42, int64(tc.size)); err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			key := bytes.Repeat([]byte{7}, 32)
			wantLen, wantSum := sealedStream(t, data, key, tc.chunk)
			if wantLen != tc.size+(tc.size+tc.chunk-1)/tc.chunk*sealOverhead {
				t.Fatalf("sealed length %d does not add up", wantLen)
			}

			p := pki.NewTestPKI(t, "")
			r, err := listen("127.0.0.1:0", recvConfig{
				Out: out, TLS: p.ServerTLS("target", pki.RoleTarget, pki.RoleSource), ReadBuf: -1,
				Direct: tc.direct, Writeback: 1 << 20,
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			type outcome struct {
				res recvResult
				err error
			}
			done := make(chan outcome, 1)
			go func() {
				res, err := r.serve(ctx)
				done <- outcome{res, err}
			}()

			sres, err := send(ctx, sendConfig{
				Addr: r.addr().String(), In: in,
				TLS:   p.ClientTLS("source", pki.RoleSource, pki.RoleTarget),
				Codec: tc.codec, Chunk: tc.chunk, Workers: tc.workers, Key: key,
				WriteBuf: -1, SkipHash: tc.skipHash,
			})
			if err != nil {
				t.Fatalf("send: %v", err)
			}
			o := <-done
			if o.err != nil {
				t.Fatalf("receive: %v", o.err)
			}

			want := summary{bytes: uint64(wantLen), sha256: wantSum}
			if tc.skipHash {
				want.sha256 = [sha256.Size]byte{}
			}
			if sres.sum != want || sres.plain != int64(tc.size) {
				t.Errorf("send result %v of %d bytes, want %v of %d", sres.sum, sres.plain, want, tc.size)
			}
			if o.res.sum != want {
				t.Errorf("receiver result %v, want %v", o.res.sum, want)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != wantLen || sha256.Sum256(got) != wantSum {
				t.Errorf("output: %d bytes, sha256 %x; want %d bytes, sha256 %x", len(got), sha256.Sum256(got), wantLen, wantSum)
			}
		})
	}
}

// TestCommands runs both commands as the benchmark script does, with the
// receiver's address read from its first line.
func TestCommands(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	out := filepath.Join(dir, "out")
	pkiDir := filepath.Join(dir, "pki")
	const size = 3<<20 + 5
	if err := datagen.WriteFile(in, 1, size); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	pr, pw := io.Pipe()
	var recvErr bytes.Buffer
	recvDone := make(chan int, 1)
	go func() {
		code := run(ctx, []string{"recv", "-listen", "127.0.0.1:0", "-out", out, "-pki", pkiDir}, pw, &recvErr)
		pw.Close()
		recvDone <- code
	}()
	lines := bufio.NewScanner(pr)
	if !lines.Scan() {
		t.Fatalf("recv printed no line; stderr: %s", recvErr.String())
	}
	addr, ok := strings.CutPrefix(lines.Text(), "listening ")
	if !ok {
		t.Fatalf("first line %q, want listening ADDR", lines.Text())
	}
	var rest bytes.Buffer
	go io.Copy(&rest, pr)

	var sendOut, sendErr bytes.Buffer
	if code := run(ctx, []string{"send", "-addr", addr, "-in", in, "-pki", pkiDir, "-chunk", "1MiB"}, &sendOut, &sendErr); code != 0 {
		t.Fatalf("send: exit %d: %s", code, sendErr.String())
	}
	if code := <-recvDone; code != 0 {
		t.Fatalf("recv: exit %d: %s", code, recvErr.String())
	}
	if !strings.Contains(sendOut.String(), " MB/s") {
		t.Errorf("send printed %q, want a MB/s figure", sendOut.String())
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(size + 4*sealOverhead); fi.Size() != want {
		t.Errorf("output is %d bytes, want %d", fi.Size(), want)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"nope"},
		{"recv", "-pki", "x"},
		{"send", "-addr", "127.0.0.1:1", "-in", "x"},
		{"send", "-addr", "127.0.0.1:1", "-in", "x", "-pki", "y", "-chunk", "65MiB"},
		{"recv", "-out", "x", "-pki", "y", "extra"},
	} {
		var out bytes.Buffer
		if code := run(context.Background(), args, &out, &out); code != 2 {
			t.Errorf("run %q: exit %d, want 2; output %s", args, code, out.String())
		}
	}
}

// TestReceiverError checks that a failing receiver's error reaches the
// sender through the stream's status, not as a bare io.EOF.
func TestReceiverError(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "in")
	if err := datagen.WriteFile(in, 1, 4<<20); err != nil {
		t.Fatal(err)
	}
	p := pki.NewTestPKI(t, "")
	// The output is a directory, so the receiver cannot create it.
	r, err := listen("127.0.0.1:0", recvConfig{Out: dir, TLS: p.ServerTLS("target", pki.RoleTarget, pki.RoleSource), ReadBuf: -1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := r.serve(ctx)
		done <- err
	}()
	_, err = send(ctx, sendConfig{
		Addr: r.addr().String(), In: in, TLS: p.ClientTLS("source", pki.RoleSource, pki.RoleTarget),
		Codec: codecRaw, Chunk: 1 << 20, Workers: 2, WriteBuf: -1,
	})
	if err == nil || !strings.Contains(err.Error(), "create output") {
		t.Errorf("send: got error %v, want the receiver's create output error", err)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "create output") {
		t.Errorf("receive: got error %v, want create output", err)
	}
}

// TestOutputs writes awkwardly split data through both outputs, across
// the direct output's buffer and block boundaries.
func TestOutputs(t *testing.T) {
	for _, size := range []int{0, 1, directAlign, directBufSize, directBufSize + 1, directBufs*directBufSize + directAlign - 1, 3*directBufs*directBufSize + 12345} {
		data := make([]byte, size)
		if _, err := io.ReadFull(datagen.NewMixed(3, int64(size)), data); err != nil {
			t.Fatal(err)
		}
		for _, direct := range []bool{false, true} {
			path := filepath.Join(t.TempDir(), "out")
			out, err := createOutput(path, direct, 64<<10)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := out.(*directOutput); ok != direct {
				t.Logf("size %d: direct %v: got %T", size, direct, out)
			}
			// Pieces of growing sizes, several to a write.
			rest := data
			for piece := 1; len(rest) > 0; piece = piece*3 + 1 {
				var bufs [][]byte
				for range 3 {
					p := rest[:min(piece, len(rest))]
					rest = rest[len(p):]
					bufs = append(bufs, p)
				}
				if err := out.write(bufs); err != nil {
					t.Fatalf("size %d, direct %v: %v", size, direct, err)
				}
			}
			if err := out.finish(); err != nil {
				t.Fatalf("size %d, direct %v: %v", size, direct, err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("size %d, direct %v: file of %d bytes differs from what was written", size, direct, len(got))
			}
		}
	}
}
