package wancache

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

const crashDirEnv = "WANCACHE_CRASH_DIR"

// crashBlock is the i-th block the crash helper puts: sizes vary, and odd
// blocks are stored compressed.
func crashBlock(i int) []byte { return textBlock(uint64(i), 50_000+i*997%200_000) }

// TestCrashHelper is the process TestKillDuringPuts kills: it puts blocks
// until it is killed, printing each index once its Put has returned.
func TestCrashHelper(t *testing.T) {
	dir := os.Getenv(crashDirEnv)
	if dir == "" {
		t.Skip("run by TestKillDuringPuts")
	}
	c, err := Open(dir, 8<<20, testKey(1)) // small, so eviction runs too
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(1)
	}
	for i := 0; ; i++ {
		plain := crashBlock(i)
		stored, compressed := plain, false
		if i%2 == 1 {
			stored, compressed = compress(plain), true
		}
		if err := c.Put(sha256.Sum256(plain), stored, compressed, len(plain)); err != nil {
			fmt.Println("put:", err)
			os.Exit(1)
		}
		fmt.Println(i)
	}
}

// TestKillDuringPuts kills a process writing the cache with SIGKILL at
// arbitrary moments: every reopen must succeed, leave no temporary file,
// keep every Put that returned and is still within the bound, and never
// return wrong data.
func TestKillDuringPuts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(1, 2))
	next := 0
	for round := range 5 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Puts restart from block 0 each round; wait for some that are new.
		target := next + 20 + r.IntN(20)
		last := -1
		sc := bufio.NewScanner(out)
		for last < target && sc.Scan() {
			i, err := strconv.Atoi(sc.Text())
			if err != nil {
				t.Fatalf("round %d: helper said %q", round, sc.Text())
			}
			last = i
		}
		time.Sleep(time.Duration(r.IntN(3000)) * time.Microsecond)
		cmd.Process.Kill()
		cmd.Wait()
		if last < target {
			t.Fatalf("round %d: helper stopped at %d: %s", round, last, stderr.String())
		}
		next = last + 1

		c, err := Open(dir, 8<<20, testKey(1))
		if err != nil {
			t.Fatalf("round %d: Open after kill: %v", round, err)
		}
		if left, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(left) != 0 {
			t.Fatalf("round %d: %d temporary files left", round, len(left))
		}
		// The newest blocks that returned, as far back as 4 MiB of them
		// (half the bound), must all be there.
		var recent int64
		for i := last; i >= 0 && recent < 4<<20; i-- {
			plain := crashBlock(i)
			recent += entrySize(len(plain))
			got, err := c.GetPlain(sha256.Sum256(plain))
			if err != nil {
				t.Fatalf("round %d: block %d of %d lost: %v", round, i, last, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("round %d: block %d: wrong data", round, i)
			}
		}
		if s := c.Stats(); s.Corrupt != 0 || s.Bytes > 8<<20 {
			t.Fatalf("round %d: stats %+v", round, s)
		}
		c.Close()
	}
}
