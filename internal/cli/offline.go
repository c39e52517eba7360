package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/format"
	"github.com/ferrybackup/ferry/internal/keyring"
	"github.com/ferrybackup/ferry/internal/kms"
	"github.com/ferrybackup/ferry/internal/repo"
)

func newOfflineCmd(e *env) *cobra.Command {
	c := groupCmd("offline", "Work on a repository directory directly: no daemon, no catalog (disaster recovery)")
	c.Long = `The offline commands need nothing but a repository directory and, for
encrypted backups, the password. They are what you use when the controller
and its catalog are gone.`
	c.AddCommand(newOfflineBackupCmd(e), newOfflineRestoreCmd(e), newOfflineVerifyCmd(e), newOfflineLsCmd(e))
	return c
}

// readPassword reads a password file: its contents without the final
// newline. An empty password is refused.
func readPassword(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) == 0 {
		return nil, fmt.Errorf("password file %s is empty", path)
	}
	return b, nil
}

func keyringFrom(files []string, recoveryFile string) (*keyring.Keyring, error) {
	var pws [][]byte
	for _, f := range files {
		pw, err := readPassword(f)
		if err != nil {
			return nil, err
		}
		pws = append(pws, pw)
	}
	kr := keyring.New(pws...)
	if recoveryFile != "" {
		rk, err := readRecoveryKey(recoveryFile)
		if err != nil {
			return nil, err
		}
		kr.WithRecovery(rk)
	}
	// Points wrapped by Vault Transit open through the Vault of the
	// standard environment, when it is set.
	if os.Getenv("VAULT_ADDR") != "" && os.Getenv("VAULT_TOKEN") != "" {
		t, err := kms.New(context.Background(), kms.Config{})
		if err != nil {
			return nil, err
		}
		kr.WithTransit(t)
	}
	return kr, nil
}

func cliLogger(e *env, verbose bool) hclog.Logger {
	lvl := hclog.Warn
	if verbose {
		lvl = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{Name: "ferry", Output: e.stderr, Level: lvl})
}

func newOfflineBackupCmd(e *env) *cobra.Command {
	var (
		repoDir, name, path, pwFile, hint, blockSize, compression string
		level                                                     int
		fullScan, newChain, noEncryption, verbose                 bool
	)
	c := &cobra.Command{
		Use:   "backup --repo DIR --backup NAME --path P",
		Short: "Back up a file, block device or directory tree into a repository directory",
		Long: `Makes a restore point of --path in backup --backup of the repository --repo,
creating both when missing. The first point of a chain is a full; later
points are incrementals holding only the blocks that changed. Encryption is
on when --password-file is given.`,
		Example: `  controller offline backup --repo /srv/ferry --backup web --path /var/www --password-file ~/.ferry-pw`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o := backup.Options{Hint: hint, FullScan: fullScan, NewChain: newChain, AllowUnencrypted: noEncryption, Logger: cliLogger(e, verbose)}
			bs, err := parseSize(blockSize)
			if err != nil {
				return usageError{err}
			}
			o.BlockSize = uint32(bs)
			if bs > 1<<32-1 || !validBlock(o.BlockSize) {
				return usagef("--block-size %s: choose 256KiB, 512KiB, 1MiB or 4MiB", blockSize)
			}
			switch compression {
			case "zstd":
				o.Compression.Algorithm = format.CompressionZstd
			case "none":
				o.Compression.Algorithm = format.CompressionNone
			default:
				return usagef("--compression %q: choose zstd or none", compression)
			}
			if level < 1 || level > 4 {
				return usagef("--compression-level %d: choose 1 (fastest) to 4 (best)", level)
			}
			o.Compression.Level = level
			if pwFile != "" && noEncryption {
				return usagef("--password-file and --no-encryption contradict each other")
			}
			if hint != "" && pwFile == "" {
				return usagef("--password-hint needs --password-file")
			}
			if pwFile != "" {
				if o.Password, err = readPassword(pwFile); err != nil {
					return err
				}
			}
			r, err := repo.Create(repoDir)
			if err != nil {
				return err
			}
			res, err := backup.Backup(cmd.Context(), r, name, path, o)
			if err != nil {
				return err
			}
			for _, w := range res.Warnings {
				fmt.Fprintf(e.stderr, "warning: %s\n", w)
			}
			enc := "none"
			if res.Encrypted {
				enc = "aes-256-gcm"
			}
			secs := res.Duration.Seconds()
			fmt.Fprintf(e.stdout, "point %s: %s, sequence %d of chain %s, encryption %s\n", res.FileID, res.Kind, res.Sequence, res.ChainID, enc)
			fmt.Fprintf(e.stdout, "%d objects, %s of data, %s read, %d blocks stored, file %s, %.1fs (%.0f MB/s)\n",
				res.Objects, humanBytes(res.SourceSize), humanBytes(res.ReadBytes), res.Records, humanBytes(res.StoredSize), secs, float64(res.ReadBytes)/1e6/max(secs, 1e-9))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&repoDir, "repo", "", "repository directory (created when missing)")
	f.StringVar(&name, "backup", "", "backup name (created when missing)")
	f.StringVar(&path, "path", "", "file, block device or directory to back up")
	f.StringVar(&pwFile, "password-file", "", "file holding the password; turns encryption on")
	f.StringVar(&hint, "password-hint", "", "hint stored in plaintext with the files, shown when a password is wrong")
	f.StringVar(&blockSize, "block-size", "1MiB", "block size of a new chain: 256KiB, 512KiB, 1MiB or 4MiB")
	f.StringVar(&compression, "compression", "zstd", "zstd or none")
	f.IntVar(&level, "compression-level", 1, "zstd level: 1 (fastest) to 4 (best)")
	f.BoolVar(&fullScan, "full-scan", false, "read every file, even those whose size and mtime did not change")
	f.BoolVar(&newChain, "new-chain", false, "start a new chain with a full backup")
	f.BoolVar(&noEncryption, "no-encryption", false, "allow starting a new unencrypted chain after an encrypted one")
	f.BoolVarP(&verbose, "verbose", "v", false, "log what happens")
	for _, n := range []string{"repo", "backup", "path"} {
		c.MarkFlagRequired(n)
	}
	return c
}

func validBlock(b uint32) bool {
	for _, s := range backup.BlockSizes {
		if s == b {
			return true
		}
	}
	return false
}

func newOfflineRestoreCmd(e *env) *cobra.Command {
	var (
		repoDir, name, point, to, recoveryFile string
		pwFiles                                []string
	)
	c := &cobra.Command{
		Use:   "restore --repo DIR --backup NAME --to PATH",
		Short: "Restore a restore point into a directory, a file or onto a block device",
		Long: `Restores --point (a point id or a unique prefix of one; the latest point when
omitted) to --to. A point of a directory is restored into a new or empty
directory; a point of a file or device into a new file, an existing
directory, or onto an existing block device. Every block is checked against
the catalog's digest before it is written; files get their names only when
complete. Give --password-file once per password the chain needs.`,
		Example: `  controller offline restore --repo /srv/ferry --backup web --to /tmp/web-restored --password-file ~/.ferry-pw`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kr, err := keyringFrom(pwFiles, recoveryFile)
			if err != nil {
				return err
			}
			r, err := repo.Open(repoDir)
			if err != nil {
				return err
			}
			res, err := backup.Restore(cmd.Context(), r, name, to, backup.RestoreOptions{Point: point, Keys: kr})
			if err != nil {
				return err
			}
			secs := res.Duration.Seconds()
			fmt.Fprintf(e.stdout, "restored point %s (%s, sequence %d) to %s: %d objects, %s, %.1fs (%.0f MB/s)\n",
				res.Point.FileID, res.Point.Kind, res.Point.Sequence, to, res.Objects, humanBytes(res.Bytes), secs, float64(res.Bytes)/1e6/max(secs, 1e-9))
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&repoDir, "repo", "", "repository directory")
	f.StringVar(&name, "backup", "", "backup name")
	f.StringVar(&point, "point", "", "point id or unique prefix (default: the latest point)")
	f.StringVar(&to, "to", "", "where to restore")
	f.StringArrayVar(&pwFiles, "password-file", nil, "file holding a password (repeat for chains with several)")
	f.StringVar(&recoveryFile, "recovery-key", "", "the recovery private key (controller recovery init): opens points without password or Vault")
	for _, n := range []string{"repo", "backup", "to"} {
		c.MarkFlagRequired(n)
	}
	return c
}

func newOfflineVerifyCmd(e *env) *cobra.Command {
	var (
		repoDir, name, point, recoveryFile string
		keyless                            bool
		pwFiles                            []string
	)
	c := &cobra.Command{
		Use:   "verify --repo DIR --backup NAME",
		Short: "Check backup files: structure and checksums (--keyless), or every block against its digest",
		Long: `Verifies the chain of --point from its full up to it, or every chain of the
backup when --point is omitted. --keyless needs no password: it checks the
structure, every record's checksum and each file's footer hash. Without it,
every record and catalog is decrypted and every block's digest checked.
Exit status 1 when anything is wrong; each problem names the file and offset.`,
		Example: `  controller offline verify --repo /srv/ferry --backup web --keyless`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			kr, err := keyringFrom(pwFiles, recoveryFile)
			if err != nil {
				return err
			}
			r, err := repo.Open(repoDir)
			if err != nil {
				return err
			}
			res, err := backup.Verify(cmd.Context(), r, name, backup.VerifyOptions{Point: point, Keyless: keyless, Keys: kr})
			if res != nil {
				for _, p := range res.Problems {
					fmt.Fprintf(e.stdout, "PROBLEM: %s\n", p)
				}
				mode := "full"
				if keyless {
					mode = "keyless"
				}
				verdict := "ok"
				if len(res.Problems) > 0 {
					verdict = "FAILED"
				}
				fmt.Fprintf(e.stdout, "%s verify %s: %d files, %d records, %s checked, %d problems, %.1fs\n",
					mode, verdict, res.Files, res.Records, humanBytes(res.Bytes), len(res.Problems), res.Duration.Seconds())
			}
			return err
		},
	}
	f := c.Flags()
	f.StringVar(&repoDir, "repo", "", "repository directory")
	f.StringVar(&name, "backup", "", "backup name")
	f.StringVar(&point, "point", "", "verify the chain up to this point (default: every chain)")
	f.BoolVar(&keyless, "keyless", false, "check structure and checksums only; needs no password")
	f.StringArrayVar(&pwFiles, "password-file", nil, "file holding a password (repeat for chains with several)")
	f.StringVar(&recoveryFile, "recovery-key", "", "the recovery private key (controller recovery init): opens points without password or Vault")
	for _, n := range []string{"repo", "backup"} {
		c.MarkFlagRequired(n)
	}
	return c
}

// lsPoint is one line of `offline ls`.
type lsPoint struct {
	ID         string    `json:"id"`
	Sequence   uint32    `json:"sequence"`
	Kind       string    `json:"kind"`
	Time       time.Time `json:"time"`
	Size       int64     `json:"size"`
	DataBytes  uint64    `json:"data_bytes"`
	Encryption string    `json:"encryption"`
	KeyRefs    []string  `json:"key_refs,omitempty"`
	Hint       string    `json:"password_hint,omitempty"`
	Damaged    string    `json:"damaged,omitempty"`
}

type lsChain struct {
	ID     string    `json:"id"`
	Points []lsPoint `json:"points"`
}

type lsBackup struct {
	Name   string    `json:"name"`
	Chains []lsChain `json:"chains"`
}

func newOfflineLsCmd(e *env) *cobra.Command {
	var repoDir, name, output string
	c := &cobra.Command{
		Use:     "ls --repo DIR [--backup NAME]",
		Short:   "List the backups, chains and restore points of a repository directory",
		Example: `  controller offline ls --repo /srv/ferry --backup web -o json`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return usagef("-o %q: choose text or json", output)
			}
			r, err := repo.Open(repoDir)
			if err != nil {
				return err
			}
			names := []string{name}
			if name == "" {
				if names, err = r.Backups(); err != nil {
					return err
				}
			}
			var out []lsBackup
			for _, n := range names {
				ix, err := r.Index(n)
				if err != nil {
					return err
				}
				b := lsBackup{Name: n, Chains: []lsChain{}}
				for _, ch := range ix.Chains {
					lc := lsChain{ID: ch.ID.String(), Points: []lsPoint{}}
					for _, p := range ch.Points {
						lc.Points = append(lc.Points, lsPoint{
							ID: p.FileID.String(), Sequence: p.Sequence, Kind: p.Kind.String(), Time: p.Created,
							Size: p.Size, DataBytes: p.PlainBytes, Encryption: p.Encryption.String(),
							KeyRefs: p.KeyRefs, Hint: p.Hint, Damaged: p.Damaged,
						})
					}
					b.Chains = append(b.Chains, lc)
				}
				out = append(out, b)
			}
			if output == "json" {
				enc := json.NewEncoder(e.stdout)
				enc.SetIndent("", "  ")
				if out == nil {
					out = []lsBackup{}
				}
				return enc.Encode(map[string]any{"backups": out})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "BACKUP\tCHAIN\tSEQ\tKIND\tPOINT\tTIME\tSIZE\tENCRYPTION")
			for _, b := range out {
				for _, ch := range b.Chains {
					for _, p := range ch.Points {
						fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", b.Name, ch.ID[:12], p.Sequence, p.Kind, p.ID,
							p.Time.Local().Format("2006-01-02 15:04:05"), humanBytes(p.Size), pointEncryption(p))
					}
				}
			}
			return tw.Flush()
		},
	}
	f := c.Flags()
	f.StringVar(&repoDir, "repo", "", "repository directory")
	f.StringVar(&name, "backup", "", "list only this backup")
	f.StringVarP(&output, "output", "o", "text", "text or json")
	c.MarkFlagRequired("repo")
	return c
}

var _ = errors.New
