package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// output is where the receiver writes the stream.
type output interface {
	// write writes bufs, in order.
	write(bufs [][]byte) error
	// finish makes everything written durable (fsync) and closes the file.
	finish() error
	// abort closes the file after a failure.
	abort()
}

// createOutput creates path for writing. With direct it bypasses the page
// cache (O_DIRECT), unless the file system refuses, as tmpfs does.
func createOutput(path string, direct bool, writeback int64) (output, error) {
	const flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if direct {
		f, err := os.OpenFile(path, flags|syscall.O_DIRECT, 0o600)
		if err == nil {
			return newDirectOutput(f)
		}
		if !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("create output: %w", err)
		}
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create output: %w", err)
	}
	raw, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("output %s: %w", path, err)
	}
	return &cachedOutput{f: f, raw: raw, writeback: writeback}, nil
}

// cachedOutput writes through the page cache with writev and, every
// writeback bytes, starts the kernel writing them to disk, so that the
// final fsync has little left to do.
type cachedOutput struct {
	f         *os.File
	raw       syscall.RawConn
	writeback int64
	n         int64 // bytes written
	flushed   int64 // bytes handed to writeback
}

func (o *cachedOutput) write(bufs [][]byte) error {
	var werr error
	err := o.raw.Write(func(fd uintptr) bool {
		for _, b := range bufs {
			o.n += int64(len(b))
		}
		if werr = writev(int(fd), bufs); werr != nil {
			return true
		}
		if o.writeback > 0 && o.n-o.flushed >= o.writeback {
			// Asynchronous: queues the range for writing and returns.
			werr = unix.SyncFileRange(int(fd), o.flushed, o.n-o.flushed, unix.SYNC_FILE_RANGE_WRITE)
			o.flushed = o.n
		}
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", o.f.Name(), err)
	}
	return nil
}

func (o *cachedOutput) finish() error {
	if err := o.f.Sync(); err != nil {
		o.f.Close()
		return fmt.Errorf("fsync %s: %w", o.f.Name(), err)
	}
	if err := o.f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", o.f.Name(), err)
	}
	return nil
}

func (o *cachedOutput) abort() { o.f.Close() }

// iovMax is Linux's limit on the buffers of one writev.
const iovMax = 1024

// writev writes bufs to fd in as few system calls as it can. A received
// chunk arrives as one buffer per 16 KiB HTTP/2 frame, so writing them one
// by one would cost 64 system calls per MiB; writev costs one and copies
// nothing in user space.
func writev(fd int, bufs [][]byte) error {
	for {
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return nil
		}
		n, err := unix.Writev(fd, bufs[:min(len(bufs), iovMax)])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		for n > 0 {
			if n < len(bufs[0]) {
				bufs[0] = bufs[0][n:]
				break
			}
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
	}
}

// Direct I/O geometry: buffers, offsets and lengths are multiples of
// directAlign; directBufs buffers of directBufSize let the receiver fill one
// while the disk writes the others.
const (
	directAlign   = 4096
	directBufSize = 2 << 20
	directBufs    = 4
)

// directOutput writes with O_DIRECT, skipping the page cache. Writing a new
// file through the cache costs a page allocation per 4 KiB, and on a VM
// whose host reclaims the guest's free memory each of those pages is a
// fault on the host too; O_DIRECT costs one copy into an aligned buffer
// instead. A writer goroutine keeps the disk busy while the next buffer
// fills.
type directOutput struct {
	f     *os.File
	mem   []byte      // mapped, so page aligned; holds all buffers
	free  chan []byte // empty buffers
	full  chan []byte // buffers for the writer, lengths aligned
	done  chan error  // the writer's first error, when full closes
	cur   []byte      // the buffer being filled
	total int64
}

func newDirectOutput(f *os.File) (*directOutput, error) {
	mem, err := unix.Mmap(-1, 0, directBufs*directBufSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("output %s: map buffers: %w", f.Name(), err)
	}
	o := &directOutput{
		f: f, mem: mem,
		free: make(chan []byte, directBufs),
		full: make(chan []byte, directBufs),
		done: make(chan error, 1),
	}
	for i := range directBufs {
		o.free <- mem[i*directBufSize : i*directBufSize : (i+1)*directBufSize]
	}
	o.cur = <-o.free
	go o.writer()
	return o, nil
}

func (o *directOutput) writer() {
	var err error
	for b := range o.full {
		if err == nil {
			_, err = o.f.Write(b)
		}
		o.free <- b[:0]
	}
	o.done <- err
}

func (o *directOutput) write(bufs [][]byte) error {
	for _, b := range bufs {
		o.total += int64(len(b))
		for len(b) > 0 {
			n := copy(o.cur[len(o.cur):cap(o.cur)], b)
			o.cur = o.cur[:len(o.cur)+n]
			b = b[n:]
			if len(o.cur) == cap(o.cur) {
				o.full <- o.cur
				o.cur = <-o.free
			}
		}
	}
	return nil
}

func (o *directOutput) finish() error {
	// The last block is written whole, zero padded, and cut back after.
	n := len(o.cur)
	padded := (n + directAlign - 1) &^ (directAlign - 1)
	clear(o.cur[n:padded])
	if padded > 0 {
		o.full <- o.cur[:padded]
	}
	close(o.full)
	err := <-o.done
	if err == nil && padded != n {
		err = o.f.Truncate(o.total)
	}
	if err == nil {
		err = o.f.Sync()
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	unix.Munmap(o.mem)
	if err != nil {
		return fmt.Errorf("write %s: %w", o.f.Name(), err)
	}
	return nil
}

func (o *directOutput) abort() {
	close(o.full)
	<-o.done
	o.f.Close()
	unix.Munmap(o.mem)
}
