package controller

import (
	"context"
	"fmt"
	"github.com/ferrybackup/ferry/internal/config"
	"github.com/ferrybackup/ferry/internal/schedule"
	"slices"
	"time"

	"github.com/ferrybackup/ferry/internal/backup"
	"github.com/ferrybackup/ferry/internal/catalog"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	repositoryv1 "github.com/ferrybackup/ferry/internal/gen/ferry/repository/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/repo"
)

const (
	kindBackup = "backup"
	kindCopy   = "copy"
	encNone    = "none"
	encPass    = "password"
	encKMS     = "kms"

	modeImmediate = "immediate"
	modePeriodic  = "periodic"

	// Session modes of health checks (their kind is the copy job's).
	sessHealthKeyless = "health-check keyless"
	sessHealthFull    = "health-check full"
)

// bandwidthOf is a job's link limit in bytes per second (0: none); the
// value was checked when the job was stored.
func bandwidthOf(j catalog.Job) int64 {
	n, _ := config.ParseRate(j.Bandwidth)
	return n
}

func isHealthCheck(sess catalog.Session) bool {
	return sess.Mode == sessHealthKeyless || sess.Mode == sessHealthFull
}

func encryptionName(e commonv1.EncryptionMode, havePassword bool) (string, error) {
	switch e {
	case commonv1.EncryptionMode_ENCRYPTION_MODE_UNSPECIFIED:
		if havePassword {
			return encPass, nil
		}
		return encNone, nil
	case commonv1.EncryptionMode_ENCRYPTION_MODE_NONE:
		return encNone, nil
	case commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD:
		return encPass, nil
	case commonv1.EncryptionMode_ENCRYPTION_MODE_KMS:
		return encKMS, nil
	}
	return "", invalidf("unknown encryption mode %v", e)
}

func jobProto(j catalog.Job, last *catalog.Session) *controllerv1.Job {
	spec := &controllerv1.JobSpec{
		Name: j.Name, Agent: j.Agent, Repository: j.Repository, Path: j.Path,
		FromAgent: j.FromAgent, FromRepository: j.FromRepository, FromJob: j.FromJob,
		ToAgent: j.ToAgent, ToRepository: j.ToRepository, PasswordHint: j.PasswordHint,
		BlockSize: j.BlockSize, CompressionLevel: int32(j.CompressionLevel),
		Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_NONE,
		Compression: commonv1.Compression_COMPRESSION_ZSTD,
	}
	if j.Kind == kindCopy {
		spec.Kind = controllerv1.JobKind_JOB_KIND_COPY
	}
	switch j.Encryption {
	case encPass:
		spec.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD
	case encKMS:
		spec.Encryption = commonv1.EncryptionMode_ENCRYPTION_MODE_KMS
		spec.KmsKey = j.KMSKey
	}
	if j.Compression == "none" {
		spec.Compression = commonv1.Compression_COMPRESSION_NONE
	}
	spec.Schedule, spec.Mode, spec.Retain, spec.RetainDays, spec.HealthCheck = j.Schedule, j.Mode, int32(j.Retain), int32(j.RetainDays), j.HealthCheck
	spec.Bandwidth = j.Bandwidth
	spec.KeepWeekly, spec.KeepMonthly = int32(j.KeepWeekly), int32(j.KeepMonthly)
	spec.Wan = j.WAN
	out := &controllerv1.Job{Spec: spec, CreatedUnix: j.CreatedAt.Unix()}
	if last != nil {
		out.LastSession = last.ID
		out.LastResult = resultProto(last.Result)
	}
	return out
}

// applySpec copies the fields of spec named in fields (all when fields is
// nil) into j, and says whether a new password was given.
func applySpec(j *catalog.Job, spec *controllerv1.JobSpec, fields []string) (newPassword bool, err error) {
	set := func(f string) bool { return fields == nil || slices.Contains(fields, f) }
	if set("agent") {
		j.Agent = spec.Agent
	}
	if set("repo") {
		j.Repository = spec.Repository
	}
	if set("path") {
		j.Path = spec.Path
	}
	if set("from") {
		j.FromAgent, j.FromRepository, j.FromJob = spec.FromAgent, spec.FromRepository, spec.FromJob
	}
	if set("to") {
		j.ToAgent, j.ToRepository = spec.ToAgent, spec.ToRepository
	}
	if set("block-size") {
		j.BlockSize = spec.BlockSize
	}
	if set("compression") {
		switch spec.Compression {
		case commonv1.Compression_COMPRESSION_NONE:
			j.Compression = "none"
		default:
			j.Compression = "zstd"
		}
	}
	if set("compression-level") {
		j.CompressionLevel = int(spec.CompressionLevel)
	}
	if set("password-hint") {
		j.PasswordHint = spec.PasswordHint
	}
	if set("kms-key") {
		j.KMSKey = spec.KmsKey
	}
	if set("source-kms-key") {
		j.SourceKMSKey = spec.SourceKmsKey
	}
	if set("wan") {
		j.WAN = spec.Wan
	}
	if set("schedule") {
		j.Schedule = spec.Schedule
	}
	if set("mode") {
		j.Mode = spec.Mode
	}
	if set("retain") {
		j.Retain = int(spec.Retain)
	}
	if set("retain-days") {
		j.RetainDays = int(spec.RetainDays)
	}
	if set("health-check") {
		j.HealthCheck = spec.HealthCheck
	}
	if set("bandwidth") {
		j.Bandwidth = spec.Bandwidth
	}
	if set("keep-weekly") {
		j.KeepWeekly = int(spec.KeepWeekly)
	}
	if set("keep-monthly") {
		j.KeepMonthly = int(spec.KeepMonthly)
	}
	newPassword = len(spec.Password) > 0 && set("password-file")
	if set("encryption") || set("password-file") || set("kms-key") {
		enc, err := encryptionName(spec.Encryption, newPassword)
		if err != nil {
			return false, err
		}
		if fields != nil && !set("encryption") && newPassword {
			enc = encPass
		}
		j.Encryption = enc
	}
	return newPassword, nil
}

// checkRunning validates how a job runs on its own: schedule, mode,
// retention and health checks.
func checkRunning(j *catalog.Job) error {
	if j.Schedule != "" {
		if _, err := schedule.Parse(j.Schedule); err != nil {
			return invalidf("--schedule: %v", err)
		}
	}
	if j.Kind == kindBackup {
		switch {
		case j.Mode != "":
			return invalidf("--mode is for copy jobs; a backup job runs on its --schedule")
		case j.Retain != 0 || j.RetainDays != 0:
			return invalidf("--retain and --retain-days are for copy jobs")
		case j.HealthCheck != "":
			return invalidf("--health-check is for copy jobs")
		case j.Bandwidth != "":
			return invalidf("--bandwidth is for copy jobs: it limits what crosses the link to the target")
		case j.KeepWeekly != 0 || j.KeepMonthly != 0:
			return invalidf("--keep-weekly and --keep-monthly are for copy jobs")
		}
		return nil
	}
	switch j.Mode {
	case "":
		j.Mode = modePeriodic
	case modePeriodic:
	case modeImmediate:
		if j.Schedule != "" {
			return invalidf("an immediate copy job runs whenever its source has a new point; drop --schedule or use --mode periodic")
		}
	default:
		return invalidf("--mode %q: use immediate or periodic", j.Mode)
	}
	if j.Retain < 0 || j.RetainDays < 0 {
		return invalidf("--retain and --retain-days cannot be negative")
	}
	if j.KeepWeekly < 0 || j.KeepMonthly < 0 {
		return invalidf("--keep-weekly and --keep-monthly cannot be negative")
	}
	if j.Retain == 1 {
		return invalidf("--retain 1 would merge every incremental away as it arrives; keep at least 2 points (or 0 for all)")
	}
	if j.HealthCheck != "" {
		if _, err := schedule.Parse(j.HealthCheck); err != nil {
			return invalidf("--health-check: %v", err)
		}
	}
	if j.Bandwidth != "" {
		if _, err := config.ParseRate(j.Bandwidth); err != nil {
			return invalidf("--bandwidth: %v", err)
		}
	}
	return nil
}

// checkJob validates a job against the agents, asking them about their
// repositories, and applies defaults.
func (s *Server) checkJob(ctx context.Context, j *catalog.Job) error {
	if err := repo.ValidateName(j.Name); err != nil {
		return invalidf("job name: %v", err)
	}
	if j.BlockSize == 0 {
		j.BlockSize = backup.DefaultBlockSize
	}
	if !slices.Contains(backup.BlockSizes, j.BlockSize) {
		return invalidf("block size %d: choose 256KiB, 512KiB, 1MiB or 4MiB", j.BlockSize)
	}
	if j.Compression == "" {
		j.Compression = "zstd"
	}
	if j.CompressionLevel == 0 {
		j.CompressionLevel = 1
	}
	if j.CompressionLevel < 1 || j.CompressionLevel > 4 {
		return invalidf("compression level %d: choose 1 to 4", j.CompressionLevel)
	}
	if j.Encryption == encKMS {
		if s.o.Transit == nil {
			return invalidf("KMS encryption needs a Vault: configure the vault block of the controller (controller dev uses VAULT_ADDR and VAULT_TOKEN)")
		}
		if j.KMSKey == "" {
			return invalidf("KMS encryption needs --kms-key NAME (the Vault Transit key; it is created when missing)")
		}
	}
	if err := checkRunning(j); err != nil {
		return err
	}
	if j.WAN && j.Kind != kindCopy {
		return invalidf("--wan is for copy jobs: WAN mode changes how a copy travels to its target")
	}
	switch j.Kind {
	case kindBackup:
		if j.Path == "" {
			return invalidf("a backup job needs --path")
		}
		a, err := s.agent(j.Agent, "source")
		if err != nil {
			return err
		}
		repos, err := s.agentRepos(ctx, a)
		if err != nil {
			return err
		}
		if _, ok := repos[j.Repository]; !ok {
			return fmt.Errorf("%w: agent %s has no repository %q (it has %v)", errNotFound, a.Name, j.Repository, keysOf(repos))
		}
	case kindCopy:
		src, err := s.store.GetJob(j.FromJob)
		if err != nil {
			// Not a job of ours: a backup the source agent holds that this
			// controller did not make.
			if err := s.checkForeignSource(ctx, j); err != nil {
				return err
			}
			j.FromForeign = true
			return s.checkTargetRepo(ctx, j)
		}
		j.FromForeign = false
		if src.Kind != kindBackup {
			return invalidf("job %s is a %s job; a copy job copies a backup job", src.Name, src.Kind)
		}
		if src.Agent != j.FromAgent || src.Repository != j.FromRepository {
			return invalidf("backup job %s writes to %s:%s, not %s:%s", src.Name, src.Agent, src.Repository, j.FromAgent, j.FromRepository)
		}
		if _, err := s.agent(j.FromAgent, "source"); err != nil {
			return err
		}
		if err := s.checkTargetRepo(ctx, j); err != nil {
			return err
		}
	default:
		return invalidf("a job's kind is backup or copy")
	}
	return nil
}

// checkForeignSource makes sure the source agent holds the backup a copy
// job names when no backup job of that name exists.
func (s *Server) checkForeignSource(ctx context.Context, j *catalog.Job) error {
	a, err := s.agent(j.FromAgent, "source")
	if err != nil {
		return err
	}
	rc, err := s.repoClient(a)
	if err != nil {
		return err
	}
	pts, err := rc.ListPoints(ctx, &repositoryv1.ListPointsRequest{Repository: j.FromRepository, Backup: j.FromJob})
	if err != nil {
		return fmt.Errorf("%w: neither a backup job %q nor a backup of that name on %s:%s (%v)", errNotFound, j.FromJob, j.FromAgent, j.FromRepository, agentErr(a, "list points", err))
	}
	if len(pts.Points) == 0 {
		return fmt.Errorf("%w: backup %s on %s:%s has no restore points", errNotFound, j.FromJob, j.FromAgent, j.FromRepository)
	}
	return nil
}

// checkTargetRepo refuses a copy job that would write plaintext into a
// repository that requires encryption.
func (s *Server) checkTargetRepo(ctx context.Context, j *catalog.Job) error {
	a, err := s.agent(j.ToAgent, "target")
	if err != nil {
		return err
	}
	repos, err := s.agentRepos(ctx, a)
	if err != nil {
		return err
	}
	req, ok := repos[j.ToRepository]
	if !ok {
		return fmt.Errorf("%w: target agent %s has no repository %q (it has %v)", errNotFound, a.Name, j.ToRepository, keysOf(repos))
	}
	if req && j.Encryption == encNone {
		return invalidf("repository %s on agent %s requires encryption (require_encryption = true): give the job --encryption password", j.ToRepository, a.Name)
	}
	return nil
}

// ensureKMSKey creates a KMS job's Transit key in Vault when missing.
func (s *Server) ensureKMSKey(ctx context.Context, j catalog.Job, typ string) error {
	if j.Encryption != encKMS {
		return nil
	}
	if typ == "" {
		typ = "aes256-gcm96"
	}
	if typ != "aes256-gcm96" && typ != "rsa-4096" {
		return invalidf("--kms-key-type %q: choose aes256-gcm96 or rsa-4096", typ)
	}
	return s.o.Transit.EnsureKey(ctx, j.KMSKey, typ)
}

func keysOf(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// newPasswordKey derives the job's secret key from a password and stores
// it sealed; the password itself is dropped.
func (s *Server) newPasswordKey(tx *catalog.Tx, j catalog.Job, password []byte) (string, error) {
	pk, err := keys.NewPasswordKey(password, s.o.KDF, j.PasswordHint)
	if err != nil {
		return "", invalidf("%v", err)
	}
	rec := catalog.KeyRecord{ID: catalog.NewID(), Job: j.Name, JobUID: j.UID, Kind: encPass, Created: time.Now().UTC(), Hint: j.PasswordHint,
		KDFTime: pk.Params.Time, KDFMemory: pk.Params.Memory, KDFThreads: pk.Params.Threads, Salt: pk.Salt[:]}
	if err := tx.PutKeyRecord(rec, pk.Raw()); err != nil {
		return "", err
	}
	return rec.ID, nil
}

// sourcePassword keeps, sealed in the catalog, the password of a source
// backup this controller did not make: each of its files has its own salt,
// so the password itself is what opens them.
func (s *Server) sourcePassword(tx *catalog.Tx, j catalog.Job, password []byte) (string, error) {
	rec := catalog.KeyRecord{ID: catalog.NewID(), Job: j.Name, JobUID: j.UID, Kind: "source-password", Created: time.Now().UTC()}
	if err := tx.PutKeyRecord(rec, password); err != nil {
		return "", err
	}
	return rec.ID, nil
}

// CreateJob creates a backup or copy job.
func (s *Server) CreateJob(ctx context.Context, req *controllerv1.CreateJobRequest) (*controllerv1.CreateJobResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	spec := req.GetSpec()
	if spec == nil {
		return nil, toStatus(invalidf("no job given"))
	}
	j := catalog.Job{Name: spec.Name}
	switch spec.Kind {
	case controllerv1.JobKind_JOB_KIND_BACKUP:
		j.Kind = kindBackup
	case controllerv1.JobKind_JOB_KIND_COPY:
		j.Kind = kindCopy
	default:
		return nil, toStatus(invalidf("a job's kind is backup or copy"))
	}
	if _, err := applySpec(&j, spec, nil); err != nil {
		return nil, toStatus(err)
	}
	if j.Encryption == encPass && len(spec.Password) == 0 {
		return nil, toStatus(invalidf("password encryption needs a password (--password-file)"))
	}
	if j.Encryption == encNone && len(spec.Password) > 0 {
		return nil, toStatus(invalidf("a password was given with --encryption none"))
	}
	if _, err := s.store.GetJob(j.Name); err == nil {
		return nil, toStatus(fmt.Errorf("%w: job %s exists already (change it with `controller job update`)", errExists, j.Name))
	}
	if err := s.checkJob(ctx, &j); err != nil {
		return nil, toStatus(err)
	}
	if err := s.ensureKMSKey(ctx, j, spec.KmsKeyType); err != nil {
		return nil, toStatus(err)
	}
	var out catalog.Job
	err := s.store.Update(func(tx *catalog.Tx) error {
		var err error
		if out, err = tx.PutJob(j); err != nil {
			return err
		}
		if j.Encryption == encPass {
			if out.KeyID, err = s.newPasswordKey(tx, out, spec.Password); err != nil {
				return err
			}
		}
		if len(spec.SourcePassword) > 0 {
			if out.SourceKeyID, err = s.sourcePassword(tx, out, spec.SourcePassword); err != nil {
				return err
			}
		}
		out, err = tx.PutJob(out)
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("job created", "job", out.Name, "kind", out.Kind, "encryption", out.Encryption)
	s.kick()
	return &controllerv1.CreateJobResponse{Job: jobProto(out, nil)}, nil
}

// UpdateJob changes the named fields of a job. Encryption turned on or off
// starts a new chain at the next session; a new password continues the
// chain under a new key.
func (s *Server) UpdateJob(ctx context.Context, req *controllerv1.UpdateJobRequest) (*controllerv1.UpdateJobResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	spec := req.GetSpec()
	if spec == nil || len(req.Fields) == 0 {
		return nil, toStatus(invalidf("nothing to update"))
	}
	j, err := s.store.GetJob(spec.Name)
	if err != nil {
		return nil, toStatus(fmt.Errorf("%w: no job named %q", errNotFound, spec.Name))
	}
	oldEnc, oldBlock := j.Encryption, j.BlockSize
	newPassword, err := applySpec(&j, spec, req.Fields)
	if err != nil {
		return nil, toStatus(err)
	}
	if j.Encryption == encPass && j.KeyID == "" && !newPassword {
		return nil, toStatus(invalidf("turning password encryption on needs a password (--password-file)"))
	}
	if err := s.checkJob(ctx, &j); err != nil {
		return nil, toStatus(err)
	}
	if err := s.ensureKMSKey(ctx, j, spec.KmsKeyType); err != nil {
		return nil, toStatus(err)
	}
	if (oldEnc == encNone) != (j.Encryption == encNone) || oldBlock != j.BlockSize {
		j.NewChainPending = true
	}
	var out catalog.Job
	err = s.store.Update(func(tx *catalog.Tx) error {
		if j.Encryption != encPass {
			j.KeyID = ""
		} else if newPassword {
			id, err := s.newPasswordKey(tx, j, spec.Password)
			if err != nil {
				return err
			}
			j.KeyID = id
		}
		if len(spec.SourcePassword) > 0 && slices.Contains(req.Fields, "source-password-file") {
			id, err := s.sourcePassword(tx, j, spec.SourcePassword)
			if err != nil {
				return err
			}
			j.SourceKeyID = id
		}
		var err error
		out, err = tx.PutJob(j)
		return err
	})
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("job updated", "job", out.Name, "fields", req.Fields, "new_chain", out.NewChainPending)
	s.kick()
	return &controllerv1.UpdateJobResponse{Job: jobProto(out, s.lastSession(out.UID))}, nil
}

func (s *Server) lastSession(jobUID string) *catalog.Session {
	ss, err := s.store.ListSessions(jobUID)
	if err != nil || len(ss) == 0 {
		return nil
	}
	return &ss[0]
}

func (s *Server) job(name string) (catalog.Job, error) {
	j, err := s.store.GetJob(name)
	if err != nil {
		return j, fmt.Errorf("%w: no job named %q (see `controller job list`)", errNotFound, name)
	}
	return j, nil
}

// GetJob shows a job.
func (s *Server) GetJob(ctx context.Context, req *controllerv1.GetJobRequest) (*controllerv1.GetJobResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	return &controllerv1.GetJobResponse{Job: jobProto(j, s.lastSession(j.UID))}, nil
}

// ListJobs lists the jobs.
func (s *Server) ListJobs(ctx context.Context, _ *controllerv1.ListJobsRequest) (*controllerv1.ListJobsResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	js, err := s.store.ListJobs()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &controllerv1.ListJobsResponse{}
	for _, j := range js {
		resp.Jobs = append(resp.Jobs, jobProto(j, s.lastSession(j.UID)))
	}
	return resp, nil
}

// DeleteJob deletes a job. Its files stay in their repositories and its
// keys in the catalog, so nothing already backed up becomes unreadable.
func (s *Server) DeleteJob(ctx context.Context, req *controllerv1.DeleteJobRequest) (*controllerv1.DeleteJobResponse, error) {
	if err := requireClient(ctx); err != nil {
		return nil, err
	}
	j, err := s.job(req.Name)
	if err != nil {
		return nil, toStatus(err)
	}
	s.mu.Lock()
	_, busy := s.running[j.UID]
	s.mu.Unlock()
	if busy {
		return nil, toStatus(fmt.Errorf("%w: job %s has a session running", errBusy, j.Name))
	}
	js, _ := s.store.ListJobs()
	for _, o := range js {
		if o.Kind == kindCopy && o.FromJob == j.Name {
			return nil, toStatus(fmt.Errorf("%w: copy job %s copies job %s; delete it first", errBusy, o.Name, j.Name))
		}
	}
	if err := s.store.DeleteJob(j.Name); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("job deleted", "job", j.Name)
	s.o.Metrics.ForgetJob(j.Name)
	return &controllerv1.DeleteJobResponse{}, nil
}
