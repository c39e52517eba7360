package catalog

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// Agent is a source or target agent the controller talks to.
type Agent struct {
	Name    string    `json:"name"`
	Address string    `json:"address"`
	Role    string    `json:"role"` // "source" or "target"
	AddedAt time.Time `json:"added_at"`
}

// Job is a backup job (a local path into an agent's repository) or a copy
// job (a source backup into a target repository).
type Job struct {
	Name string `json:"name"`
	// UID is set by PutJob when the job is first stored and never changes.
	// Points, sessions and session secrets belong to the job by UID, so a
	// job re-created under the same name does not inherit them.
	UID  string `json:"uid"`
	Kind string `json:"kind"` // "backup" or "copy"

	// Backup jobs.
	Agent      string `json:"agent,omitempty"`
	Repository string `json:"repository,omitempty"`
	Path       string `json:"path,omitempty"`

	// Copy jobs.
	FromAgent      string `json:"from_agent,omitempty"`
	FromRepository string `json:"from_repository,omitempty"`
	FromJob        string `json:"from_job,omitempty"`
	ToAgent        string `json:"to_agent,omitempty"`
	ToRepository   string `json:"to_repository,omitempty"`
	// FromForeign says that FromJob names a backup on the source agent that
	// no backup job of this controller made; its keys come from
	// SourceKeyID (a key record sealing its password) or SourceKMSKey.
	FromForeign  bool   `json:"from_foreign,omitempty"`
	SourceKeyID  string `json:"source_key_id,omitempty"`
	SourceKMSKey string `json:"source_kms_key,omitempty"`

	Encryption       string `json:"encryption"` // "none", "password" or "kms"
	PasswordHint     string `json:"password_hint,omitempty"`
	KMSKey           string `json:"kms_key,omitempty"`
	BlockSize        uint32 `json:"block_size"`
	Compression      string `json:"compression"`
	CompressionLevel int    `json:"compression_level"`
	// WAN runs the copy job's sessions in WAN-accelerator mode.
	WAN bool `json:"wan,omitempty"`

	// Running on its own (issue: modes, schedules, retention, health).
	Schedule    string `json:"schedule,omitempty"`     // interval or cron; "" = by hand
	Mode        string `json:"mode,omitempty"`         // copy jobs: "immediate" or "periodic"
	Retain      int    `json:"retain,omitempty"`       // copy jobs: points to keep, 0 = all
	RetainDays  int    `json:"retain_days,omitempty"`  // copy jobs: days of points to keep, 0 = all
	HealthCheck string `json:"health_check,omitempty"` // copy jobs: schedule of health checks
	Bandwidth   string `json:"bandwidth,omitempty"`    // copy jobs: link limit ("50Mbit"), "" = none
	KeepWeekly  int    `json:"keep_weekly,omitempty"`  // copy jobs: GFS weekly fulls to keep
	KeepMonthly int    `json:"keep_monthly,omitempty"` // copy jobs: GFS monthly fulls to keep

	KeyID           string `json:"key_id,omitempty"` // current key record id, "" when none
	BackupID        []byte `json:"backup_id,omitempty"`
	ChainID         []byte `json:"chain_id,omitempty"` // the chain sessions continue
	NewChainPending bool   `json:"new_chain_pending"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
}

// Session is one run of a job.
type Session struct {
	ID     string `json:"id"`
	Job    string `json:"job"`     // job name, for display
	JobUID string `json:"job_uid"` // the job the session belongs to
	Kind   string `json:"kind"`
	Mode   string `json:"mode"`
	Result string `json:"result"` // "running", "success" or "failed"
	Error  string `json:"error,omitempty"`
	// Notes say what recovery found and did around the session: cut off
	// by a restart, points adopted, partial files removed by an agent.
	Notes []string `json:"notes,omitempty"`

	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`

	BytesRead    int64 `json:"bytes_read"`
	BytesSent    int64 `json:"bytes_sent"`
	BytesWritten int64 `json:"bytes_written"`
	Records      int64 `json:"records"`
	// WAN holds the counters of a WAN-mode session (nil otherwise).
	WAN *WANStats `json:"wan,omitempty"`

	FileID      []byte `json:"file_id,omitempty"`
	Sequence    uint32 `json:"sequence"`
	SourceAgent string `json:"source_agent,omitempty"`
	TargetAgent string `json:"target_agent,omitempty"`
}

// WANStats are the counters of a WAN-mode copy session (see
// common.v1.SessionStats for what each one means).
type WANStats struct {
	WireBytesSent       int64 `json:"wire_bytes_sent"`
	WireBytesReceived   int64 `json:"wire_bytes_received"`
	DigestBytesSent     int64 `json:"digest_bytes_sent"`
	BlockBytesSent      int64 `json:"block_bytes_sent"`
	Blocks              int64 `json:"blocks"`
	PlainBytes          int64 `json:"plain_bytes"`
	BlocksSent          int64 `json:"blocks_sent"`
	BlockPlainBytesSent int64 `json:"block_plain_bytes_sent"`
	CacheHitBlocks      int64 `json:"cache_hit_blocks"`
	CacheHitBytes       int64 `json:"cache_hit_bytes"`
	BlocksRefetched     int64 `json:"blocks_refetched"`
}

// Point is a restore point: one committed backup file.
type Point struct {
	Job      string `json:"job"`     // job name, for display
	JobUID   string `json:"job_uid"` // the job the point belongs to
	FileID   []byte `json:"file_id"`
	BackupID []byte `json:"backup_id"`
	ChainID  []byte `json:"chain_id"`
	ParentID []byte `json:"parent_id,omitempty"`
	Sequence uint32 `json:"sequence"`
	Kind     string `json:"kind"` // "full" or "incremental"

	Created   time.Time `json:"created"`
	Size      int64     `json:"size"`
	Encrypted bool      `json:"encrypted"`
	KeyRecord string    `json:"key_record,omitempty"` // id of the key record that wraps its session secret
	KeyRefs   []string  `json:"key_refs,omitempty"`
	Hint      string    `json:"hint,omitempty"`

	Agent      string `json:"agent"`
	Repository string `json:"repository"`
	Backup     string `json:"backup"`
	// Wrapped is, for a point of a KMS job, its session secret as Vault
	// Transit wrapped it ("vault:vN:..."): the controller keeps no unwrapped
	// copy of such secrets and asks Vault when it needs one.
	Wrapped string `json:"wrapped,omitempty"`
	// WrappedKey is the Transit key that wrapped it.
	WrappedKey string `json:"wrapped_key,omitempty"`
	// SourceFileID is, for a point of a copy job, the source point it is
	// a copy of.
	SourceFileID []byte `json:"source_file_id,omitempty"`
	// MergedInto is set when retention merged the point away: its file is
	// gone, but records sealed under its session secret now live in the
	// file of point MergedInto, so its secret is kept for that one.
	// ListPoints leaves such points out; ListAllPoints has them.
	MergedInto []byte `json:"merged_into,omitempty"`
	// Day is the controller's date (UTC, YYYY-MM-DD) of the session that
	// made a copy job's point; GFS retention counts weeks and months by it.
	Day string `json:"day,omitempty"`
}

// KeyRecord describes a secret key of a job: a password-derived key or a
// Vault Transit key. Its key material is stored sealed beside it and only
// returned by GetKeyRecord.
type KeyRecord struct {
	ID      string    `json:"id"`
	Job     string    `json:"job"`     // job name, for display
	JobUID  string    `json:"job_uid"` // the job the key belongs to
	Kind    string    `json:"kind"`    // "password" or "kms"
	Created time.Time `json:"created"`
	Hint    string    `json:"hint,omitempty"`
	// Password keys: the Argon2id parameters and salt the sealed key was
	// derived with, which every file wrapped under it records too.
	KDFTime    uint32 `json:"kdf_time,omitempty"`
	KDFMemory  uint32 `json:"kdf_memory,omitempty"`
	KDFThreads uint8  `json:"kdf_threads,omitempty"`
	Salt       []byte `json:"salt,omitempty"`
}

var errSecretJSON = errors.New("a catalog secret is not carried in JSON")

// Secret is key material. It converts to and from []byte freely, and prints
// as a redaction under every fmt verb.
type Secret []byte

// String never prints the secret.
func (s Secret) String() string { return fmt.Sprintf("secret(%d bytes, redacted)", len(s)) }

// GoString keeps %#v from printing the secret.
func (s Secret) GoString() string { return s.String() }

// Format prints the redaction for every verb, so %x or %d cannot print the
// bytes either.
func (s Secret) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }

// MarshalJSON writes a redaction, so a record logged or served as JSON does
// not carry the secret. Secrets never travel as JSON; the catalog seals them.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"redacted"`), nil }

// UnmarshalJSON refuses: the JSON form of a Secret is only a redaction.
func (s *Secret) UnmarshalJSON([]byte) error { return errSecretJSON }

// SessionSecret is the session secret of one backup file the controller
// made, kept so it can hand it to agents for restore, verify and reading
// encrypted sources. It is stored sealed.
type SessionSecret struct {
	FileID []byte `json:"file_id"`
	KeyID  []byte `json:"key_id"` // fingerprint of Secret (keys.KeyID)
	Secret Secret `json:"secret"` // marshals as a redaction, see Secret.MarshalJSON
}

// String names the file and key id, never the secret.
func (s SessionSecret) String() string {
	return fmt.Sprintf("session_secret(file %x, key %x, redacted)", s.FileID, s.KeyID)
}

// GoString keeps %#v from printing the secret.
func (s SessionSecret) GoString() string { return s.String() }

// Format prints String for every verb, so no verb can walk into Secret.
func (s SessionSecret) Format(f fmt.State, verb rune) { io.WriteString(f, s.String()) }
