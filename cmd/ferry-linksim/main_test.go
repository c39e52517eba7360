package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"testing"
)

// TestRun starts the command in-process before an echo server, passes
// bytes through it, and checks the counters it prints when stopped.
func TestRun(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out, outW := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-target", ln.Addr().String(), "-rate", "100Mbit", "-latency", "5ms"}, outW, &stderr)
		outW.Close()
	}()
	lines := bufio.NewScanner(out)
	if !lines.Scan() {
		t.Fatalf("no output; stderr: %s", stderr.String())
	}
	addr, ok := strings.CutPrefix(lines.Text(), "listening ")
	if !ok {
		t.Fatalf("first line %q, want listening ADDR", lines.Text())
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	msg := []byte("through the simulated link")
	c.Write(msg)
	if _, err := io.ReadFull(c, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	c.Close()

	cancel()
	if !lines.Scan() {
		t.Fatal("no counters at exit")
	}
	stats := lines.Text()
	for _, want := range []string{"up_delivered=26 ", "down_delivered=26 ", "accepted=1 "} {
		if !strings.Contains(stats, want) {
			t.Errorf("counters %q lack %q", stats, want)
		}
	}
	if code := <-done; code != 0 {
		t.Fatalf("exit status %d; stderr: %s", code, stderr.String())
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"-target", "127.0.0.1:1", "-rate", "50Mb"},
		{"-target", "127.0.0.1:1", "-latency", "-1s"},
		{"-target", "127.0.0.1:1", "extra"},
		{"-nosuchflag"},
	} {
		var stderr bytes.Buffer
		if code := run(context.Background(), args, io.Discard, &stderr); code != 2 {
			t.Errorf("run %q: exit status %d, want 2", args, code)
		}
		if stderr.Len() == 0 {
			t.Errorf("run %q: nothing on stderr", args)
		}
	}
}
