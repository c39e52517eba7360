package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/ferrybackup/ferry/internal/keys"
)

func newRecoveryCmd(e *env) *cobra.Command {
	c := groupCmd("recovery", "Password-loss protection: a recovery key that opens every point")
	var out string
	initCmd := &cobra.Command{
		Use:   "init --out FILE",
		Short: "Make a recovery key pair: the private half into FILE, the public half for the controller's config",
		Long: `Makes an X25519 recovery key pair. The private half is written once to FILE
(0600; an existing file is never replaced): store it offline. Put the printed
recovery_public_key line into the controller's config and restart it; every new
session secret is then also sealed to it (HPKE), and
'controller offline restore --recovery-key FILE' restores any such point
without its password and without Vault.`,
		Example: `  controller recovery init --out /media/usb/ferry-recovery.key`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("--out FILE is required")
			}
			k, err := keys.NewRecoveryKey()
			if err != nil {
				return err
			}
			f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("%s exists already; a recovery key is never overwritten", out)
			}
			if err != nil {
				return fmt.Errorf("write recovery key: %w", err)
			}
			if _, err := f.WriteString(k.Marshal()); err != nil {
				f.Close()
				return fmt.Errorf("write recovery key: %w", err)
			}
			if err := f.Sync(); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote the recovery private key to %s: keep it offline, it opens every point\n", out)
			fmt.Fprintf(e.stdout, "add this line to the controller's config:\n\nrecovery_public_key = %q\n", k.Public().Marshal())
			return nil
		},
	}
	initCmd.Flags().StringVar(&out, "out", "", "file for the private key (must not exist)")
	c.AddCommand(initCmd)
	return c
}

// readRecoveryKey reads a recovery private key file.
func readRecoveryKey(path string) (*keys.RecoveryPrivate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read recovery key: %w", err)
	}
	k, err := keys.ParseRecoveryPrivate(string(b))
	if err != nil {
		return nil, fmt.Errorf("recovery key %s: %w", path, err)
	}
	return k, nil
}
