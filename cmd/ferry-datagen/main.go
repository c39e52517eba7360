// Command ferry-datagen writes the deterministic test data of package
// datagen for shell scripts, such as the peer benchmarks in bench/.
//
// Usage:
//
//	ferry-datagen mixed -seed N -size SIZE -out FILE
//	ferry-datagen day2 -seed N FILE
//	ferry-datagen tree -seed N [-size SIZE] -out DIR
//	ferry-datagen mutate -seed N -dir DIR
//
// SIZE is a number of bytes, optionally with a suffix KiB, MiB, GiB or TiB
// (2GiB). Usage errors exit with status 2, other failures with 1.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"github.com/ferrybackup/ferry/internal/datagen"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage:
  ferry-datagen mixed -seed N -size SIZE -out FILE   write the mixed stream
  ferry-datagen day2 -seed N FILE                    change FILE to its next day
  ferry-datagen tree -seed N [-size SIZE] -out DIR   write a test tree
  ferry-datagen mutate -seed N -dir DIR              change a tree for an incremental

SIZE is bytes, optionally with a suffix KiB, MiB, GiB or TiB, as in 2GiB.
Run "ferry-datagen COMMAND -h" for a command's flags.
`

// usageError is a mistake in the command line, for exit status 2. An
// empty one has been reported by the flag package already.
type usageError string

func (e usageError) Error() string { return string(e) }

// run is main without the process, so that tests can call it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "mixed":
		err = mixed(rest, stderr)
	case "day2":
		err = day2(rest, stderr)
	case "tree":
		err = tree(rest, stderr)
	case "mutate":
		err = mutate(rest, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "ferry-datagen: unknown command %q\n%s", cmd, usage)
		return 2
	}
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ue):
		if ue != "" {
			fmt.Fprintf(stderr, "ferry-datagen: %v\n", ue)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "ferry-datagen: %v\n", err)
		return 1
	}
}

// sizeFlag is a flag.Value taking sizes such as 2GiB.
type sizeFlag struct {
	n   int64
	set bool
}

func (s *sizeFlag) String() string {
	if s == nil || !s.set {
		return "" // no default shown
	}
	return strconv.FormatInt(s.n, 10)
}

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	s.n, s.set = n, true
	return nil
}

// newFlags makes the flag set of a command, whose usage line is synopsis.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *uint64) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ferry-datagen %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	seed := fs.Uint64("seed", 1, "seed `N` of the generated data")
	return fs, seed
}

// parse parses args and wants exactly nargs positional arguments.
func parse(fs *flag.FlagSet, args []string, nargs int, what string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		// The flag package has printed the error and the flags already.
		return usageError("")
	}
	if fs.NArg() != nargs {
		fs.Usage()
		if nargs == 0 {
			return usageError(fmt.Sprintf("%s: unexpected arguments %q", fs.Name(), fs.Args()))
		}
		return usageError(fmt.Sprintf("%s: want %s, got %d arguments", fs.Name(), what, fs.NArg()))
	}
	return nil
}

func mixed(args []string, stderr io.Writer) error {
	fs, seed := newFlags("mixed", "-seed N -size SIZE -out FILE", stderr)
	var size sizeFlag
	fs.Var(&size, "size", "`SIZE` to write, e.g. 2GiB (required)")
	out := fs.String("out", "", "`FILE` to create or truncate (required)")
	if err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if !size.set || *out == "" {
		fs.Usage()
		return usageError("mixed: -size and -out are required")
	}
	return datagen.WriteFile(*out, *seed, size.n)
}

func day2(args []string, stderr io.Writer) error {
	fs, seed := newFlags("day2", "-seed N FILE", stderr)
	if err := parse(fs, args, 1, "one FILE"); err != nil {
		return err
	}
	return datagen.Day2(fs.Arg(0), *seed)
}

func tree(args []string, stderr io.Writer) error {
	fs, seed := newFlags("tree", "-seed N [-size SIZE] -out DIR", stderr)
	var size sizeFlag
	fs.Var(&size, "size", fmt.Sprintf("approximate `SIZE` of all files (default %dMiB)", datagen.DefaultTreeSize>>20))
	out := fs.String("out", "", "`DIR` to create; must be empty or not exist (required)")
	if err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *out == "" {
		fs.Usage()
		return usageError("tree: -out is required")
	}
	return datagen.Tree(*out, *seed, datagen.TreeOptions{Size: size.n})
}

func mutate(args []string, stdout, stderr io.Writer) error {
	fs, seed := newFlags("mutate", "-seed N -dir DIR", stderr)
	dir := fs.String("dir", "", "`DIR` of a tree made by the tree command (required)")
	if err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	if *dir == "" {
		fs.Usage()
		return usageError("mutate: -dir is required")
	}
	m, err := datagen.MutateTree(*dir, *seed)
	if err != nil {
		return err
	}
	// One "change path" line each, for scripts to read.
	line := func(what string, paths ...string) {
		for _, p := range paths {
			fmt.Fprintf(stdout, "%s %s\n", what, p)
		}
	}
	line("rewritten", m.Rewritten)
	line("appended", m.Appended)
	line("truncated", m.Truncated)
	line("deleted", m.Deleted...)
	line("deleted-dir", m.DeletedDir)
	line("mode", m.ModeChanged)
	line("mtime", m.MtimeChanged)
	line("added", m.Added...)
	return nil
}

var sizeSuffixes = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10},
	{"MiB", 1 << 20},
	{"GiB", 1 << 30},
	{"TiB", 1 << 40},
	{"B", 1},
}

// parseSize parses a byte count with an optional binary suffix.
func parseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, sf := range sizeSuffixes {
		if len(s) > len(sf.suffix) && strings.EqualFold(s[len(s)-len(sf.suffix):], sf.suffix) {
			num, mult = s[:len(s)-len(sf.suffix)], sf.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want bytes, optionally with KiB, MiB, GiB or TiB", s)
	}
	if n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n * mult, nil
}
