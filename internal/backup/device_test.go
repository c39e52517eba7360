package backup

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches a loop device to a new file of size bytes filled
// from the mixed stream, and detaches it when the test ends.
func loopDevice(t *testing.T, size int64, seed uint64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk.img")
	if seed == 0 {
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatal(err)
		}
	} else {
		writeMixed(t, img, seed, size)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "--detach", dev).Run() })
	return dev
}

// TestBlockDevice backs up a block device (a loop device), changes it,
// backs up an incremental, and restores each point onto another device
// and into a file, byte-identical.
func TestBlockDevice(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for loop devices; CI runs as root")
	}
	const size = 3<<20 + 256<<10 // whole 256 KiB blocks: loop devices have sector sizes
	dev := loopDevice(t, size, 21)
	r := newRepo(t)
	o := testOptions(testPassword)
	mustBackup(t, r, "dev", dev, o)
	want1 := fileHash(t, dev)

	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("day two on the device"), 2<<20+5); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	res := mustBackup(t, r, "dev", dev, o)
	if res.Records != 1 {
		t.Fatalf("the incremental of a device with one changed block stored %d records", res.Records)
	}
	want2 := fileHash(t, dev)

	// Onto another device, in place.
	target := loopDevice(t, size, 0)
	mustRestore(t, r, "dev", "", target, testPassword)
	if fileHash(t, target) != want2 {
		t.Fatal("restore onto a device is not byte-identical")
	}
	// Into a file, the full.
	ix, err := r.Index("dev")
	if err != nil {
		t.Fatal(err)
	}
	to := filepath.Join(t.TempDir(), "first.img")
	mustRestore(t, r, "dev", ix.Points()[0].FileID.String(), to, testPassword)
	if fileHash(t, to) != want1 {
		t.Fatal("restore of the device's first point into a file is not byte-identical")
	}
}
