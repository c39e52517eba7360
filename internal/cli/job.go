package cli

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

func newJobCmd(e *env) *cobra.Command {
	c := groupCmd("job", "Create, change, run and remove backup and copy jobs")
	c.Long = `A backup job backs up a path on a source agent into a repository of that
agent. A copy job copies the restore points of a backup job to a repository
on a target agent, encrypted end to end: by default the target never sees
plaintext or a key. Each run of a job is a session that makes one restore
point.`
	addConnFlags(c)
	c.AddCommand(newJobCreateCmd(e), newJobUpdateCmd(e), newJobListCmd(e), newJobShowCmd(e), newJobDeleteCmd(e), newJobRunCmd(e))
	return c
}

// jobFlags are the settings of a job, shared by create and update.
type jobFlags struct {
	kind, agent, repo, path, from, to string
	encryption, pwFile, hint          string
	kmsKey, kmsKeyType                string
	srcPwFile, srcKMSKey              string
	blockSize, compression            string
	level                             int
	schedule, mode, healthCheck       string
	bandwidth                         string
	retain, retainDays                int
	keepWeekly, keepMonthly           int
	wan                               bool
}

// The flags of each kind of job. UpdateJobRequest.fields carries these
// names for the flags a user set.
var (
	backupOnlyFlags = []string{"agent", "repo", "path", "block-size", "compression", "compression-level"}
	copyOnlyFlags   = []string{"from", "to", "source-password-file", "source-kms-key", "mode", "retain", "retain-days", "health-check", "wan", "bandwidth", "keep-weekly", "keep-monthly"}
	updateFlags     = []string{"agent", "repo", "path", "from", "to", "encryption", "password-file", "password-hint", "kms-key", "kms-key-type", "source-password-file", "source-kms-key", "block-size", "compression", "compression-level",
		"schedule", "mode", "retain", "retain-days", "health-check", "wan", "bandwidth", "keep-weekly", "keep-monthly"}
)

func (j *jobFlags) register(c *cobra.Command, create bool) {
	f := c.Flags()
	if create {
		f.StringVar(&j.kind, "kind", "", "backup or copy")
	}
	f.StringVar(&j.agent, "agent", "", "backup jobs: the source agent holding the path and the repository")
	f.StringVar(&j.repo, "repo", "", "backup jobs: the repository on the agent")
	f.StringVar(&j.path, "path", "", "backup jobs: the file, block device or directory to back up")
	f.StringVar(&j.from, "from", "", "copy jobs: the backup job to copy, AGENT:REPO/BACKUPJOB")
	f.StringVar(&j.to, "to", "", "copy jobs: the target agent and repository, AGENT:REPO")
	f.StringVar(&j.encryption, "encryption", "", "none, password or kms (default: password with --password-file, kms with --kms-key, else none)")
	f.StringVar(&j.kmsKey, "kms-key", "", "the Vault Transit key that wraps session secrets (created when missing); implies --encryption kms")
	f.StringVar(&j.srcPwFile, "source-password-file", "", "copy jobs from a backup this controller did not make: the file holding its password")
	f.StringVar(&j.srcKMSKey, "source-kms-key", "", "copy jobs from a backup this controller did not make: the Vault Transit key that wraps its secrets")
	f.StringVar(&j.kmsKeyType, "kms-key-type", "", "type of a Transit key the controller creates: aes256-gcm96 (default) or rsa-4096")
	f.StringVar(&j.pwFile, "password-file", "", "file holding the password; implies --encryption password")
	f.StringVar(&j.hint, "password-hint", "", "hint stored in plaintext with the files, shown when a password is wrong")
	f.StringVar(&j.blockSize, "block-size", "1MiB", "backup jobs: block size of a new chain, 256KiB, 512KiB, 1MiB or 4MiB")
	f.StringVar(&j.compression, "compression", "zstd", "backup jobs: zstd or none")
	f.IntVar(&j.level, "compression-level", 1, "backup jobs: zstd level, 1 (fastest) to 4 (best)")
	f.StringVar(&j.schedule, "schedule", "", `run on its own: an interval ("6h") or a cron expression ("0 2 * * *", "@daily"); "" = only by hand`)
	f.StringVar(&j.mode, "mode", "", "copy jobs: immediate (copy each new source point as it appears, in order) or periodic (the latest point, on --schedule); default periodic")
	f.IntVar(&j.retain, "retain", 0, "copy jobs: restore points to keep at the target; older ones are merged into the full there, without any key (0 = all)")
	f.IntVar(&j.retainDays, "retain-days", 0, "copy jobs: keep the points of this many days (0 = all; with --retain, both must allow a point to drop it)")
	f.StringVar(&j.bandwidth, "bandwidth", "", `copy jobs: the most a session sends over the link, "50Mbit", "10MB/s" or bytes per second ("" or 0: no limit); the source agent's cap applies too`)
	f.IntVar(&j.keepWeekly, "keep-weekly", 0, "copy jobs: GFS; start a new chain (a full) each week and keep the first full of this many past weeks, which merges never touch")
	f.IntVar(&j.keepMonthly, "keep-monthly", 0, "copy jobs: GFS; keep the first full of this many past months (a new chain each month when --keep-weekly is 0)")
	f.StringVar(&j.healthCheck, "health-check", "", "copy jobs: when to check the latest point at the target (interval or cron): keyless each time, a full verify weekly")
	f.BoolVar(&j.wan, "wan", false, "copy jobs: WAN-accelerator mode: the source sends block digests, only the blocks the target's WAN cache lacks travel (compressed), "+
		"and the target encrypts: the controller hands the session key to the target, not the source (--wan=false turns it off)")
}

// spec builds the JobSpec from the flags for which set is true: all of
// them on create, the changed ones on update.
func (j *jobFlags) spec(name string, set func(string) bool, create bool) (*controllerv1.JobSpec, error) {
	s := &controllerv1.JobSpec{Name: name}
	var err error
	if set("agent") {
		s.Agent = j.agent
	}
	if set("repo") {
		s.Repository = j.repo
	}
	if set("path") {
		s.Path = j.path
	}
	if set("from") {
		if s.FromAgent, s.FromRepository, s.FromJob, err = parseFrom(j.from); err != nil {
			return nil, err
		}
	}
	if set("to") {
		if s.ToAgent, s.ToRepository, err = parseAgentRef("to", "REPO", "vault-b:offsite", j.to); err != nil {
			return nil, err
		}
	}
	if set("block-size") {
		bs, err := parseSize(j.blockSize)
		if err != nil {
			return nil, usageError{fmt.Errorf("--block-size: %w", err)}
		}
		if bs > 1<<32-1 || !validBlock(uint32(bs)) {
			return nil, usagef("--block-size %s: choose 256KiB, 512KiB, 1MiB or 4MiB", j.blockSize)
		}
		s.BlockSize = uint32(bs)
	}
	if set("compression") {
		switch j.compression {
		case "zstd":
			s.Compression = commonv1.Compression_COMPRESSION_ZSTD
		case "none":
			s.Compression = commonv1.Compression_COMPRESSION_NONE
		default:
			return nil, usagef("--compression %q: choose zstd or none", j.compression)
		}
	}
	if set("compression-level") {
		if j.level < 1 || j.level > 4 {
			return nil, usagef("--compression-level %d: choose 1 (fastest) to 4 (best)", j.level)
		}
		s.CompressionLevel = int32(j.level)
	}
	s.Schedule, s.Mode, s.HealthCheck, s.Bandwidth = j.schedule, j.mode, j.healthCheck, j.bandwidth
	if set("wan") {
		s.Wan = j.wan
	}
	if j.retain < 0 || j.retainDays < 0 {
		return nil, usagef("--retain and --retain-days cannot be negative")
	}
	s.Retain, s.RetainDays = int32(j.retain), int32(j.retainDays)
	if j.keepWeekly < 0 || j.keepMonthly < 0 {
		return nil, usagef("--keep-weekly and --keep-monthly cannot be negative")
	}
	s.KeepWeekly, s.KeepMonthly = int32(j.keepWeekly), int32(j.keepMonthly)
	if err := j.encryptionSpec(s, create); err != nil {
		return nil, err
	}
	if j.srcPwFile != "" {
		pw, err := readPassword(j.srcPwFile)
		if err != nil {
			return nil, err
		}
		s.SourcePassword = pw
	}
	s.SourceKmsKey = j.srcKMSKey
	return s, nil
}

// encryptionSpec sets the encryption mode, password and hint. The password
// is read here and travels only in this request; the controller never
// returns it.
func (j *jobFlags) encryptionSpec(s *controllerv1.JobSpec, create bool) error {
	enc := j.encryption
	if enc == "" && j.pwFile != "" {
		enc = "password"
	}
	if enc == "" && j.kmsKey != "" {
		enc = "kms"
	}
	if j.kmsKey != "" && enc != "kms" {
		return usagef("--kms-key needs --encryption kms")
	}
	if j.kmsKeyType != "" && j.kmsKey == "" {
		return usagef("--kms-key-type needs --kms-key")
	}
	switch enc {
	case "":
		if create {
			s.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_NONE
		}
	case "none":
		if j.pwFile != "" {
			return usagef("--password-file and --encryption none contradict each other")
		}
		s.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_NONE
	case "password":
		if create && j.pwFile == "" {
			return usagef("--encryption password needs --password-file")
		}
		s.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD
	case "kms":
		if j.pwFile != "" {
			return usagef("--password-file and --encryption kms contradict each other")
		}
		if create && j.kmsKey == "" {
			return usagef("--encryption kms needs --kms-key NAME")
		}
		s.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_KMS
		s.KmsKey, s.KmsKeyType = j.kmsKey, j.kmsKeyType
	default:
		return usagef("--encryption %q: choose none, password or kms", j.encryption)
	}
	if j.hint != "" && (enc == "none" || enc == "kms" || create && enc == "") {
		return usagef("--password-hint needs password encryption (--password-file)")
	}
	s.PasswordHint = j.hint
	if j.pwFile != "" {
		pw, err := readPassword(j.pwFile)
		if err != nil {
			return err
		}
		s.Password = pw
	}
	return nil
}

// checkKindFlags refuses flags of the other kind of job, which would be
// silently ignored otherwise.
func checkKindFlags(cmd *cobra.Command, kind string) error {
	changed := cmd.Flags().Changed
	var wrong, own []string
	switch kind {
	case "backup":
		wrong, own = copyOnlyFlags, []string{"--agent, --repo and --path"}
	case "copy":
		wrong, own = backupOnlyFlags, []string{"--from and --to"}
	}
	for _, n := range wrong {
		if changed(n) {
			return usagef("--%s does not apply to a %s job, which takes %s", n, kind, own[0])
		}
	}
	return nil
}

func newJobCreateCmd(e *env) *cobra.Command {
	var j jobFlags
	c := &cobra.Command{
		Use:   "create NAME --kind backup|copy ...",
		Short: "Create a backup job or a copy job",
		Long: `Creates the job NAME.

A backup job (--kind backup) backs up --path on the source agent --agent
into its repository --repo:
  create NAME --kind backup --agent A --repo R --path P [--block-size 1MiB]
              [--compression zstd|none] [--compression-level N]

A copy job (--kind copy) copies the restore points of a backup job to a
repository on a target agent:
  create NAME --kind copy --from AGENT:REPO/BACKUPJOB --to AGENT:REPO [--wan]

--wan runs a copy job in WAN-accelerator mode: the source sends the digests
of the blocks, the target answers which ones its WAN cache (shared by every
job and source agent) lacks, only those travel, compressed, and the target
encrypts them. In this mode the controller hands the session key to the
target agent instead of the source agent.

Both kinds take [--encryption none|password] [--password-file F]
[--password-hint H]. --password-file turns password encryption on. The
password is sent to the controller once, over mutual TLS, and never shown
again; a target repository that requires encryption refuses a job without.`,
		Example: `  controller job create web --kind backup --agent site-a --repo main --path /var/www
  controller job create web-offsite --kind copy --from site-a:main/web --to vault-b:offsite \
      --password-file ~/.ferry-pw --password-hint "the usual"`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var kind controllerv1.JobKind
			var need []string
			switch j.kind {
			case "backup":
				kind, need = controllerv1.JobKind_JOB_KIND_BACKUP, []string{"agent", "repo", "path"}
			case "copy":
				kind, need = controllerv1.JobKind_JOB_KIND_COPY, []string{"from", "to"}
			default:
				return usagef("--kind %q: choose backup or copy", j.kind)
			}
			if err := checkKindFlags(cmd, j.kind); err != nil {
				return err
			}
			for _, n := range need {
				if v, _ := cmd.Flags().GetString(n); v == "" {
					return usagef("a %s job needs --%s", j.kind, n)
				}
			}
			// Each kind takes its own flags, with their defaults; a copy
			// keeps the block size and compression of its source.
			other := copyOnlyFlags
			if j.kind == "copy" {
				other = backupOnlyFlags
			}
			set := func(n string) bool { return !contains(other, n) }
			spec, err := j.spec(args[0], set, true)
			if err != nil {
				return err
			}
			spec.Kind = kind
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: spec})
			if err != nil {
				return err
			}
			job := resp.GetJob()
			if job == nil {
				job = &controllerv1.Job{Spec: spec}
			}
			fmt.Fprintf(e.stdout, "job %s created: %s\n", args[0], describeJob(newJobView(job)))
			return nil
		},
	}
	j.register(c, true)
	c.MarkFlagRequired("kind")
	return c
}

func newJobUpdateCmd(e *env) *cobra.Command {
	var j jobFlags
	c := &cobra.Command{
		Use:   "update NAME [flags as create]",
		Short: "Change settings of a job; only the flags given change",
		Long: `Changes the settings of job NAME given as flags and leaves the rest as they
are. The kind of a job cannot change.

Changing encryption follows the copy rules: turning it on or off starts a
new chain with a full backup; a new password continues the chain with an
incremental under the new key. A new password needs --password-file.`,
		Example: `  controller job update web-offsite --password-file ~/.ferry-pw-2026 --password-hint "new one"
  controller job update web --compression-level 3`,
		Args: exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			changed := cmd.Flags().Changed
			var fields []string
			for _, n := range updateFlags {
				if changed(n) {
					fields = append(fields, n)
				}
			}
			if len(fields) == 0 {
				return usagef("nothing to change: give at least one of --%s", strings.Join(updateFlags, ", --"))
			}
			for _, b := range backupOnlyFlags {
				for _, cp := range copyOnlyFlags {
					if changed(b) && changed(cp) {
						return usagef("--%s (backup jobs) and --%s (copy jobs) do not go together", b, cp)
					}
				}
			}
			spec, err := j.spec(args[0], changed, false)
			if err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.UpdateJob(ctx, &controllerv1.UpdateJobRequest{Spec: spec, Fields: fields})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "job %s updated (%s)", args[0], strings.Join(fields, ", "))
			if resp.GetJob() != nil {
				fmt.Fprintf(e.stdout, ": %s", describeJob(newJobView(resp.GetJob())))
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	j.register(c, false)
	return c
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newJobListCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "list",
		Short:   "List the jobs and how their last session went",
		Example: `  controller job list`,
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.ListJobs(ctx, &controllerv1.ListJobsRequest{})
			if err != nil {
				return err
			}
			jobs := []jobView{}
			for _, j := range resp.GetJobs() {
				jobs = append(jobs, newJobView(j))
			}
			if output == "json" {
				return writeJSON(e.stdout, map[string]any{"jobs": jobs})
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tSOURCE\tTARGET\tENCRYPTION\tLAST SESSION\tRESULT")
			for _, v := range jobs {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, orDash(v.Kind), jobSource(v), jobTarget(v),
					orDash(v.Encryption), orDash(v.LastSession), orDash(v.LastResult))
			}
			return tw.Flush()
		},
	}
	addOutputFlag(c, &output)
	return c
}

func newJobShowCmd(e *env) *cobra.Command {
	var output string
	c := &cobra.Command{
		Use:     "show NAME",
		Short:   "Show the settings of a job",
		Example: `  controller job show web-offsite -o json`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			resp, err := client.GetJob(ctx, &controllerv1.GetJobRequest{Name: args[0]})
			if err != nil {
				return err
			}
			v := newJobView(resp.GetJob())
			if output == "json" {
				return writeJSON(e.stdout, v)
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			row := func(k, v string) {
				if v != "" {
					fmt.Fprintf(tw, "%s:\t%s\n", k, v)
				}
			}
			row("name", v.Name)
			row("kind", orDash(v.Kind))
			row("source", jobSource(v))
			row("target", jobTarget(v))
			row("encryption", orDash(v.Encryption))
			row("password hint", v.PasswordHint)
			if v.BlockSize != 0 {
				row("block size", humanBytes(int64(v.BlockSize)))
			}
			if v.Compression != "" {
				c := v.Compression
				if v.CompressionLevel != 0 {
					c += fmt.Sprintf(" (level %d)", v.CompressionLevel)
				}
				row("compression", c)
			}
			row("schedule", v.Schedule)
			row("mode", v.Mode)
			if v.Retain > 0 {
				row("retain", fmt.Sprintf("%d points", v.Retain))
			}
			if v.RetainDays > 0 {
				row("retain days", fmt.Sprintf("%d days", v.RetainDays))
			}
			row("health check", v.HealthCheck)
			row("bandwidth", v.Bandwidth)
			if v.KeepWeekly > 0 || v.KeepMonthly > 0 {
				row("gfs", fmt.Sprintf("%d weekly, %d monthly fulls", v.KeepWeekly, v.KeepMonthly))
			}
			if v.WAN {
				row("wan", "on (the target encrypts; only blocks its WAN cache lacks are sent)")
			}
			row("created", tableTime(v.Created))
			row("last session", orDash(v.LastSession))
			row("last result", orDash(v.LastResult))
			return tw.Flush()
		},
	}
	addOutputFlag(c, &output)
	return c
}

func newJobDeleteCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:     "delete NAME",
		Short:   "Delete a job from the catalog",
		Example: `  controller job delete web-offsite`,
		Args:    exactArgs("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			client, done, err := newClient(cmd)
			if err != nil {
				return err
			}
			defer done()
			ctx, cancel := callContext(cmd)
			defer cancel()
			if _, err := client.DeleteJob(ctx, &controllerv1.DeleteJobRequest{Name: args[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "job %s deleted\n", args[0])
			return nil
		},
	}
	return c
}
