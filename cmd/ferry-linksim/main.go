// Command ferry-linksim is a WAN link for benchmarks on one machine: a TCP
// proxy that forwards to a target with a bandwidth limit and a one-way
// latency in each direction (see internal/linksim).
//
// Usage:
//
//	ferry-linksim -target HOST:PORT [-listen 127.0.0.1:PORT] [-rate 50Mbit] [-latency 40ms]
//	              [-up-rate RATE] [-down-rate RATE] [-stats 1s]
//
// It prints "listening HOST:PORT" as its first line, then on SIGINT or
// SIGTERM (and every -stats interval) its counters as one line of
// key=value pairs: bytes read and delivered each way, connections
// accepted, open, cut, and failed to dial. Usage errors exit with status
// 2, other failures with 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ferrybackup/ferry/internal/config"
	"github.com/ferrybackup/ferry/internal/linksim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is main without the process, so that tests can call it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry-linksim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:0", "`ADDR` to listen on")
	target := fs.String("target", "", "`HOST:PORT` to forward to (required)")
	rate := fs.String("rate", "", "bandwidth each way, e.g. 50Mbit, 10MB/s, 10MiB/s; empty or 0 for unlimited")
	upRate := fs.String("up-rate", "", "bandwidth toward the target, instead of -rate")
	downRate := fs.String("down-rate", "", "bandwidth from the target, instead of -rate")
	latency := fs.Duration("latency", 0, "one-way latency each way, e.g. 40ms")
	every := fs.Duration("stats", 0, "print the counters every `INTERVAL` too; 0 for only at exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "ferry-linksim: "+format+"\n", a...)
		fs.Usage()
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected arguments %q", fs.Args())
	}
	if *target == "" {
		return usageErr("-target is required")
	}
	if *latency < 0 || *every < 0 {
		return usageErr("-latency and -stats must not be negative")
	}
	rates := map[string]int64{}
	for name, s := range map[string]string{"rate": *rate, "up-rate": *upRate, "down-rate": *downRate} {
		if s == "" {
			continue // unlimited
		}
		r, err := config.ParseRate(s) // as agent configs and --bandwidth take it
		if err != nil {
			return usageErr("-%s: %v", name, err)
		}
		rates[name] = r
	}
	up, down := linksim.Shape{Rate: rates["rate"], Latency: *latency}, linksim.Shape{Rate: rates["rate"], Latency: *latency}
	if *upRate != "" {
		up.Rate = rates["up-rate"]
	}
	if *downRate != "" {
		down.Rate = rates["down-rate"]
	}

	p, err := linksim.Start(*target, linksim.Config{Listen: *listen, Up: up, Down: down})
	if err != nil {
		fmt.Fprintf(stderr, "ferry-linksim: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "listening %s\n", p.Addr())
	var tick <-chan time.Time
	if *every > 0 {
		t := time.NewTicker(*every)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-tick:
			printStats(stdout, p.Stats())
		case <-ctx.Done():
			err := p.Close()
			printStats(stdout, p.Stats())
			if err != nil {
				fmt.Fprintf(stderr, "ferry-linksim: close: %v\n", err)
				return 1
			}
			return 0
		}
	}
}

func printStats(w io.Writer, s linksim.Stats) {
	fmt.Fprintf(w, "up_read=%d up_delivered=%d down_read=%d down_delivered=%d accepted=%d active=%d cuts=%d dial_errors=%d\n",
		s.Up.Read, s.Up.Delivered, s.Down.Read, s.Down.Delivered, s.Accepted, s.Active, s.Cuts, s.DialErrors)
}
