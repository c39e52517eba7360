package cli

import (
	"fmt"
	"net"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/ferrybackup/ferry/internal/pki"
)

func newPKICmd(e *env) *cobra.Command {
	c := groupCmd("pki", "Create the certificate authority and issue certificates for ferry components")
	c.Long = `All ferry traffic is mutual TLS 1.3 with certificates from one CA. Create the
CA once with 'pki init', then issue one certificate per component: the
controller, each source and target agent, and each user of this CLI (role
client). The CA key stays in the directory; copy only the .crt and .key of
each component, with ca.crt, to where it runs.`
	c.AddCommand(newPKIInitCmd(e), newPKIIssueCmd(e))
	return c
}

func newPKIInitCmd(e *env) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:     "init --dir DIR",
		Short:   "Create a new CA in a directory (ca.crt, ca.key)",
		Long:    `Creates DIR when missing and a new CA in it. An existing CA is never replaced: every certificate it issued would stop verifying.`,
		Example: `  controller pki init --dir /etc/ferry/pki`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := pki.Init(dir); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote %s\nwrote %s (keep it secret)\n", filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile))
			return nil
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory for the CA (created when missing)")
	c.MarkFlagRequired("dir")
	return c
}

func newPKIIssueCmd(e *env) *cobra.Command {
	var (
		dir, name, role string
		dns, ips        []string
	)
	c := &cobra.Command{
		Use:   "issue --dir DIR --name NAME --role controller|source|target|client",
		Short: "Issue a certificate and key signed by the CA in a directory",
		Long: `Writes NAME.crt and NAME.key next to the CA. The role is what the holder may
act as: the controller, a source or target agent, or a client (a user of this
CLI). --dns and --ip are the names and addresses others dial the holder at;
without them the certificate is good for localhost, 127.0.0.1 and ::1.
Existing files are never replaced.`,
		Example: `  controller pki issue --dir /etc/ferry/pki --name ctl --role controller --dns ctl.example.net
  controller pki issue --dir /etc/ferry/pki --name site-a --role source --ip 10.0.0.5
  controller pki issue --dir /etc/ferry/pki --name alice --role client`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := pki.ParseRole(role)
			if err != nil {
				return usagef("--role %q: choose controller, source, target or client", role)
			}
			if err := pki.ValidateName(name); err != nil {
				return usagef("--name: %v", err)
			}
			req := pki.IssueRequest{Name: name, Role: r, DNS: dns}
			for _, s := range ips {
				ip := net.ParseIP(s)
				if ip == nil {
					return usagef("--ip %q: not an IP address", s)
				}
				req.IPs = append(req.IPs, ip)
			}
			for _, d := range dns {
				if d == "" {
					return usagef("--dns: empty name")
				}
			}
			certPath, keyPath, err := pki.Issue(dir, req)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "wrote %s\nwrote %s\n", certPath, keyPath)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&dir, "dir", "", "directory holding the CA (from pki init)")
	f.StringVar(&name, "name", "", "name of the holder: the agent or user name, also the file name")
	f.StringVar(&role, "role", "", "controller, source, target or client")
	f.StringArrayVar(&dns, "dns", nil, "DNS name the holder is dialled at (repeatable)")
	f.StringArrayVar(&ips, "ip", nil, "IP address the holder is dialled at (repeatable)")
	for _, n := range []string{"dir", "name", "role"} {
		c.MarkFlagRequired(n)
	}
	return c
}
