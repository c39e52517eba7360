package cli

import (
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

// The -o json output of the online commands is made of the structs below
// rather than protojson of the responses: ids are hex as everywhere else in
// the CLI (protojson would write bytes as base64), enums are the lower-case
// words the flags take, times are RFC 3339, and points have the shape of
// `offline ls -o json`. Fields are only ever added.
//
//	agent list    {"agents": [agentView]}
//	job list      {"jobs": [jobView]}           job show      jobView
//	session list  {"sessions": [sessionView]}   session show  sessionView
//	point list    {"backups": [lsBackup]}       (as offline ls)

type agentView struct {
	Name    string `json:"name"`
	Role    string `json:"role"`
	Address string `json:"address"`
}

type jobView struct {
	Name             string     `json:"name"`
	Kind             string     `json:"kind"`
	Agent            string     `json:"agent,omitempty"`
	Repository       string     `json:"repository,omitempty"`
	Path             string     `json:"path,omitempty"`
	FromAgent        string     `json:"from_agent,omitempty"`
	FromRepository   string     `json:"from_repository,omitempty"`
	FromJob          string     `json:"from_job,omitempty"`
	ToAgent          string     `json:"to_agent,omitempty"`
	ToRepository     string     `json:"to_repository,omitempty"`
	Encryption       string     `json:"encryption,omitempty"`
	PasswordHint     string     `json:"password_hint,omitempty"`
	BlockSize        uint32     `json:"block_size,omitempty"`
	Compression      string     `json:"compression,omitempty"`
	CompressionLevel int32      `json:"compression_level,omitempty"`
	Schedule         string     `json:"schedule,omitempty"`
	Mode             string     `json:"mode,omitempty"`
	Retain           int32      `json:"retain,omitempty"`
	RetainDays       int32      `json:"retain_days,omitempty"`
	HealthCheck      string     `json:"health_check,omitempty"`
	Bandwidth        string     `json:"bandwidth,omitempty"`
	KeepWeekly       int32      `json:"keep_weekly,omitempty"`
	KeepMonthly      int32      `json:"keep_monthly,omitempty"`
	WAN              bool       `json:"wan,omitempty"`
	Created          *time.Time `json:"created,omitempty"`
	LastSession      string     `json:"last_session,omitempty"`
	LastResult       string     `json:"last_result,omitempty"`
}

type sessionView struct {
	ID              string        `json:"id"`
	Job             string        `json:"job"`
	Kind            string        `json:"kind,omitempty"`
	Mode            string        `json:"mode,omitempty"`
	Result          string        `json:"result"`
	Error           string        `json:"error,omitempty"`
	Started         *time.Time    `json:"started,omitempty"`
	Ended           *time.Time    `json:"ended,omitempty"`
	DurationSeconds float64       `json:"duration_seconds"`
	BytesRead       int64         `json:"bytes_read"`
	BytesSent       int64         `json:"bytes_sent"`
	BytesWritten    int64         `json:"bytes_written"`
	Records         int64         `json:"records"`
	MBPerSecond     float64       `json:"mb_per_second"`
	Point           *sessionPoint `json:"point,omitempty"`
	Notes           []string      `json:"notes,omitempty"`
	// WAN is what a WAN-mode session negotiated and moved.
	WAN *wanView `json:"wan,omitempty"`
}

// wanView are the counters of a WAN-mode session (common.v1.SessionStats)
// with the ratios they give.
type wanView struct {
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
	// CompressionRatio is the plaintext of the blocks sent over their
	// bytes on the wire (0 when none were sent).
	CompressionRatio float64 `json:"compression_ratio"`
	// EffectiveMBPerSecond is the plaintext of the new file's blocks per
	// second of the session, in decimal MB/s.
	EffectiveMBPerSecond float64 `json:"effective_mb_per_second"`
}

func newWANView(st *commonv1.SessionStats, d time.Duration) *wanView {
	if st.GetBlocks() == 0 && st.GetWireBytesSent() == 0 {
		return nil
	}
	w := &wanView{
		WireBytesSent: st.GetWireBytesSent(), WireBytesReceived: st.GetWireBytesReceived(),
		DigestBytesSent: st.GetDigestBytesSent(), BlockBytesSent: st.GetBlockBytesSent(),
		Blocks: st.GetBlocks(), PlainBytes: st.GetPlainBytes(), BlocksSent: st.GetBlocksSent(), BlockPlainBytesSent: st.GetBlockPlainBytesSent(),
		CacheHitBlocks: st.GetCacheHitBlocks(), CacheHitBytes: st.GetCacheHitBytes(), BlocksRefetched: st.GetBlocksRefetched(),
	}
	if w.BlockBytesSent > 0 {
		w.CompressionRatio = float64(w.BlockPlainBytesSent) / float64(w.BlockBytesSent)
	}
	w.EffectiveMBPerSecond = mbPerSecond(w.PlainBytes, d)
	return w
}

// sessionPoint is the point a session made.
type sessionPoint struct {
	Chain string `json:"chain"`
	lsPoint
}

// enumWord turns FOO_BAR_PASSWORD into "password" given the prefix
// FOO_BAR_; the zero value (…_UNSPECIFIED) becomes "".
func enumWord(name, prefix string) string {
	w := strings.TrimPrefix(name, prefix)
	if w == "UNSPECIFIED" {
		return ""
	}
	return strings.ReplaceAll(strings.ToLower(w), "_", "-")
}

func roleWord(r controllerv1.AgentRole) string { return enumWord(r.String(), "AGENT_ROLE_") }
func kindWord(k controllerv1.JobKind) string   { return enumWord(k.String(), "JOB_KIND_") }
func resultWord(r controllerv1.SessionResult) string {
	return enumWord(r.String(), "SESSION_RESULT_")
}
func encryptionWord(m commonv1.EncryptionMode) string {
	return enumWord(m.String(), "ENCRYPTION_MODE_")
}
func compressionWord(c commonv1.Compression) string { return enumWord(c.String(), "COMPRESSION_") }
func pointKindWord(k commonv1.PointKind) string     { return enumWord(k.String(), "POINT_KIND_") }

// orDash fills empty table cells.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func unixTime(nanos int64) *time.Time {
	if nanos == 0 {
		return nil
	}
	t := time.Unix(0, nanos).UTC()
	return &t
}

// tableTime formats a time for a table, in local time like offline ls.
func tableTime(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

func newAgentView(a *controllerv1.Agent) agentView {
	return agentView{Name: a.GetName(), Role: roleWord(a.GetRole()), Address: a.GetAddress()}
}

func newJobView(j *controllerv1.Job) jobView {
	s := j.GetSpec()
	v := jobView{
		Name: s.GetName(), Kind: kindWord(s.GetKind()),
		Agent: s.GetAgent(), Repository: s.GetRepository(), Path: s.GetPath(),
		FromAgent: s.GetFromAgent(), FromRepository: s.GetFromRepository(), FromJob: s.GetFromJob(),
		ToAgent: s.GetToAgent(), ToRepository: s.GetToRepository(),
		Encryption: encryptionWord(s.GetEncryption()), PasswordHint: s.GetPasswordHint(),
		BlockSize: s.GetBlockSize(), Compression: compressionWord(s.GetCompression()), CompressionLevel: s.GetCompressionLevel(),
		LastSession: j.GetLastSession(), LastResult: resultWord(j.GetLastResult()),
		Schedule: s.GetSchedule(), Mode: s.GetMode(), Retain: s.GetRetain(), RetainDays: s.GetRetainDays(), HealthCheck: s.GetHealthCheck(), WAN: s.GetWan(), Bandwidth: s.GetBandwidth(), KeepWeekly: s.GetKeepWeekly(), KeepMonthly: s.GetKeepMonthly(),
	}
	if j.GetCreatedUnix() != 0 {
		t := time.Unix(j.GetCreatedUnix(), 0).UTC()
		v.Created = &t
	}
	return v
}

// jobSource and jobTarget say where a job reads and writes, in the
// AGENT:... forms the flags take.
func jobSource(v jobView) string {
	switch {
	case v.FromAgent != "":
		return v.FromAgent + ":" + v.FromRepository + "/" + v.FromJob
	case v.Agent != "":
		return v.Agent + ":" + v.Path
	}
	return "-"
}

func jobTarget(v jobView) string {
	switch {
	case v.ToAgent != "":
		return v.ToAgent + ":" + v.ToRepository
	case v.Agent != "":
		return v.Agent + ":" + v.Repository
	}
	return "-"
}

// describeJob is a one-line description of a job.
func describeJob(v jobView) string {
	enc := orDash(v.Encryption)
	if v.PasswordHint != "" {
		enc += fmt.Sprintf(" (hint %q)", v.PasswordHint)
	}
	return fmt.Sprintf("%s of %s into %s, encryption %s", orDash(v.Kind), jobSource(v), jobTarget(v), enc)
}

func newPointView(p *commonv1.Point) lsPoint {
	v := lsPoint{
		ID: hex.EncodeToString(p.GetFileId()), Sequence: p.GetSequence(), Kind: pointKindWord(p.GetKind()),
		Size: p.GetSize(), DataBytes: p.GetPlainBytes(), Encryption: "none",
		KeyRefs: p.GetKeyRefs(), Hint: p.GetPasswordHint(), Damaged: p.GetDamaged(),
	}
	if t := unixTime(p.GetCreatedUnixNano()); t != nil {
		v.Time = *t
	}
	if p.GetEncrypted() {
		v.Encryption = "aes-256-gcm"
	}
	return v
}

// groupPoints groups points by backup and chain in the order they come,
// into the shape of offline ls.
func groupPoints(points []*commonv1.Point) []lsBackup {
	out := []lsBackup{}
	bi := map[string]int{}
	ci := map[[2]string]int{}
	for _, p := range points {
		b, ok := bi[p.GetBackup()]
		if !ok {
			b = len(out)
			bi[p.GetBackup()] = b
			out = append(out, lsBackup{Name: p.GetBackup(), Chains: []lsChain{}})
		}
		chain := hex.EncodeToString(p.GetChainId())
		key := [2]string{p.GetBackup(), chain}
		c, ok := ci[key]
		if !ok {
			c = len(out[b].Chains)
			ci[key] = c
			out[b].Chains = append(out[b].Chains, lsChain{ID: chain, Points: []lsPoint{}})
		}
		out[b].Chains[c].Points = append(out[b].Chains[c].Points, newPointView(p))
	}
	return out
}

// pointEncryption is the ENCRYPTION cell of a point: the mode and how its
// session secrets are wrapped (the key reference).
func pointEncryption(p lsPoint) string {
	e := p.Encryption
	if len(p.KeyRefs) > 0 {
		e += " (" + strings.Join(p.KeyRefs, ", ") + ")"
	}
	if p.Hint != "" {
		e += fmt.Sprintf(" hint %q", p.Hint)
	}
	if p.Damaged != "" {
		e = "DAMAGED: " + p.Damaged
	}
	return e
}

// shortID cuts an id for a table column.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return orDash(id)
}

func newSessionView(s *controllerv1.Session) sessionView {
	st := s.GetStats()
	v := sessionView{
		ID: s.GetId(), Job: s.GetJob(), Kind: kindWord(s.GetKind()), Mode: s.GetMode(),
		Result: resultWord(s.GetResult()), Error: s.GetError(),
		Started: unixTime(s.GetStartedUnixNano()), Ended: unixTime(s.GetEndedUnixNano()),
		BytesRead: st.GetBytesRead(), BytesSent: st.GetBytesSent(), BytesWritten: st.GetBytesWritten(), Records: st.GetRecords(),
		Notes: s.GetNotes(),
	}
	d := sessionDuration(s, time.Now())
	v.DurationSeconds = d.Seconds()
	v.MBPerSecond = mbPerSecond(v.BytesRead, d)
	v.WAN = newWANView(st, d)
	if p := s.GetPoint(); p != nil && len(p.GetFileId()) > 0 {
		v.Point = &sessionPoint{Chain: hex.EncodeToString(p.GetChainId()), lsPoint: newPointView(p)}
	}
	return v
}

// sessionDuration is the agents' reported duration, or the wall time from
// start to end (or to now while running).
func sessionDuration(s *controllerv1.Session, now time.Time) time.Duration {
	if d := s.GetStats().GetDurationNanos(); d > 0 {
		return time.Duration(d)
	}
	if s.GetStartedUnixNano() == 0 {
		return 0
	}
	end := s.GetEndedUnixNano()
	if end == 0 {
		end = now.UnixNano()
	}
	return max(time.Duration(end-s.GetStartedUnixNano()), 0)
}

// mbPerSecond is the session's speed in decimal MB/s, as offline prints it.
func mbPerSecond(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / 1e6 / d.Seconds()
}

// roundDuration shortens a duration for display.
func roundDuration(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}
