// Package datagen makes the deterministic data that ferry's tests and
// benchmarks run on, and checks that two copies of it are the same.
//
// Backup throughput depends heavily on what is being backed up: random bytes
// defeat compression, text compresses several times over. A benchmark on
// /dev/zero or on pure random data would therefore say little about real
// use, and a benchmark on "some file lying around" cannot be repeated on
// another machine. datagen produces a "mixed" stream instead: alternating
// 4 MiB regions of incompressible random bytes and of text-like bytes
// (log lines, prose, CSV records built from a fixed vocabulary) that zstd
// level 1 shrinks about 4x. Every byte is a pure function of (seed, offset),
// so any two machines, and any two runs, see exactly the same data, and a
// test can read any offset without generating what comes before it.
//
// The pieces:
//
//   - [Mixed], [NewMixed], [WriteFile]: the mixed stream, as a reader, an
//     io.ReaderAt, or a file. [NewRandom] and [NewCompressible] give one
//     kind alone.
//   - [Day2]: the "next day" change used by incremental and WAN benchmarks:
//     5% of the 1 MiB blocks rewritten, 1% of the size appended.
//   - [Tree]: a deterministic directory tree with awkward file sizes,
//     modes, mtimes and relative symlinks, for backup/restore round trips.
//   - [SameTree], [SameFile]: test assertions that a restored tree or file
//     matches its original in content and metadata.
//
// The generator's output is part of its contract: benchmark numbers taken
// months apart are only comparable if the data is the same, so a golden
// hash test pins it. It uses only the ChaCha8 stream of math/rand/v2, whose
// output is specified, and never the higher-level math/rand methods, whose
// algorithms may change between Go releases.
//
// The command ferry-datagen (cmd/ferry-datagen) exposes WriteFile, Day2 and
// Tree to shell scripts such as the peer benchmarks in bench/.
package datagen
