package telemetry

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Session kinds, the values of the kind label. Others are recorded as "other".
const (
	KindBackup  = "backup"
	KindCopy    = "copy"
	KindRestore = "restore"
	KindVerify  = "verify"
	KindHealth  = "health"
	KindMerge   = "merge"
)

// Session results, the values of the result label. Others are recorded as "failed".
const (
	ResultOK        = "ok"
	ResultFailed    = "failed"
	ResultCancelled = "cancelled"
)

var (
	kinds   = []string{KindBackup, KindCopy, KindRestore, KindVerify, KindHealth, KindMerge}
	results = []string{ResultOK, ResultFailed, ResultCancelled}
)

// Stage names where bytes are counted on the way from a source to a target.
type Stage int

const (
	// StageRead counts bytes read from a source repository or path.
	StageRead Stage = iota
	// StageSent counts bytes sent on a session stream.
	StageSent
	// StageReceived counts bytes received from a session stream.
	StageReceived
	// StageWritten counts bytes written to a target repository.
	StageWritten
	numStages
)

// SessionBuckets are the upper bounds of ferry_session_duration_seconds: from a tenth of a
// second (a health check) to six hours (a first full copy over a WAN).
var SessionBuckets = []float64{0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 21600}

// Metrics records one daemon's ferry series in its own registry. All methods are safe for
// concurrent use, and do nothing on a nil *Metrics.
type Metrics struct {
	reg *prometheus.Registry

	sessions        *prometheus.CounterVec
	sessionDuration *prometheus.HistogramVec
	sessionsRunning prometheus.Gauge
	bytes           [numStages]*prometheus.CounterVec
	wanHits         prometheus.Counter
	wanMisses       prometheus.Counter
	wanBytes        prometheus.Gauge
	vaultRequests   *prometheus.CounterVec
	vaultErrors     *prometheus.CounterVec
}

// New returns the metrics of a daemon of the given version, in a new registry that also
// holds the Go runtime and process collectors.
func New(version string) *Metrics {
	if version == "" {
		version = "unknown"
	}
	reg := prometheus.NewRegistry()
	f := factory{reg}
	m := &Metrics{
		reg: reg,
		sessions: f.counterVec("ferry_sessions_total",
			"Sessions finished, by kind and result.", "kind", "result"),
		sessionDuration: f.histogramVec("ferry_session_duration_seconds",
			"How long finished sessions took, by kind.", SessionBuckets, "kind"),
		sessionsRunning: f.gauge("ferry_sessions_running", "Sessions running now."),
		bytes: [numStages]*prometheus.CounterVec{
			StageRead:     f.counterVec("ferry_bytes_read_total", "Bytes read from source repositories or paths, by job.", "job"),
			StageSent:     f.counterVec("ferry_bytes_sent_total", "Bytes sent on session streams, by job.", "job"),
			StageReceived: f.counterVec("ferry_bytes_received_total", "Bytes received from session streams, by job.", "job"),
			StageWritten:  f.counterVec("ferry_bytes_written_total", "Bytes written to target repositories, by job.", "job"),
		},
		wanHits:   f.counter("ferry_wan_cache_hits_total", "Blocks the WAN global cache already held."),
		wanMisses: f.counter("ferry_wan_cache_misses_total", "Blocks the WAN global cache lacked."),
		wanBytes:  f.gauge("ferry_wan_cache_bytes", "Size of the WAN global cache."),
		vaultRequests: f.counterVec("ferry_vault_requests_total",
			"Requests to Vault, by operation.", "op"),
		vaultErrors: f.counterVec("ferry_vault_errors_total",
			"Failed requests to Vault, by operation and kind of error.", "op", "kind"),
	}
	f.gaugeVec("ferry_build_info", "The running ferry version; always 1.", "version").
		WithLabelValues(version).Set(1)
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	// Every kind and result is exported from the start, so rates and alerts see a zero
	// rather than a missing series.
	for _, k := range kinds {
		for _, r := range results {
			m.sessions.WithLabelValues(k, r)
		}
		m.sessionDuration.WithLabelValues(k)
	}
	return m
}

// Registry returns the registry holding m's series, for serving it (see Serve) or for
// registering more collectors. It returns nil for a nil m.
func (m *Metrics) Registry() *prometheus.Registry {
	if m == nil {
		return nil
	}
	return m.reg
}

// SessionStarted counts a session as running until the matching SessionDone.
func (m *Metrics) SessionStarted() {
	if m == nil {
		return
	}
	m.sessionsRunning.Inc()
}

// SessionDone records a session that SessionStarted counted: it is no longer running, it
// ended with result (ResultOK, ResultFailed, ResultCancelled) and took d.
func (m *Metrics) SessionDone(kind, result string, d time.Duration) {
	if m == nil {
		return
	}
	kind = known(kind, kinds, "other")
	m.sessionsRunning.Dec()
	m.sessions.WithLabelValues(kind, known(result, results, ResultFailed)).Inc()
	m.sessionDuration.WithLabelValues(kind).Observe(d.Seconds())
}

// TrackSession calls SessionStarted and returns a function that calls SessionDone with the
// time since, and the result ResultOf(err):
//
//	done := m.TrackSession(telemetry.KindCopy)
//	defer func() { done(err) }()
func (m *Metrics) TrackSession(kind string) (done func(err error)) {
	if m == nil {
		return func(error) {}
	}
	m.SessionStarted()
	start := time.Now()
	return func(err error) { m.SessionDone(kind, ResultOf(err), time.Since(start)) }
}

// ResultOf maps a session's error to its result: nil is ok, a cancelled context is
// cancelled, anything else failed.
func ResultOf(err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errors.Is(err, context.Canceled):
		return ResultCancelled
	default:
		return ResultFailed
	}
}

// AddBytes adds n bytes of job at stage. Counts of zero or less are ignored.
func (m *Metrics) AddBytes(stage Stage, job string, n int64) {
	if m == nil || n <= 0 || stage < 0 || stage >= numStages {
		return
	}
	m.bytes[stage].WithLabelValues(job).Add(float64(n))
}

// ForgetJob drops the series of a deleted job, so that the number of series stays bounded
// by the jobs that exist.
func (m *Metrics) ForgetJob(job string) {
	if m == nil {
		return
	}
	for _, v := range m.bytes {
		v.DeleteLabelValues(job)
	}
}

// WANCacheLookup counts blocks the WAN global cache held (hits) and lacked (misses).
func (m *Metrics) WANCacheLookup(hits, misses int) {
	if m == nil {
		return
	}
	if hits > 0 {
		m.wanHits.Add(float64(hits))
	}
	if misses > 0 {
		m.wanMisses.Add(float64(misses))
	}
}

// SetWANCacheBytes sets the size of the WAN global cache.
func (m *Metrics) SetWANCacheBytes(n int64) {
	if m == nil {
		return
	}
	m.wanBytes.Set(float64(n))
}

// VaultRequest counts one request to Vault for op ("encrypt", "decrypt", "datakey",
// "rewrap", ...; a fixed set, not key names), and, if err is not nil, one error of kind
// ErrorKind(err).
func (m *Metrics) VaultRequest(op string, err error) {
	if m == nil {
		return
	}
	m.vaultRequests.WithLabelValues(op).Inc()
	if err != nil {
		m.vaultErrors.WithLabelValues(op, ErrorKind(err)).Inc()
	}
}

// StatusCoder is implemented by errors that carry an HTTP status, such as a wrapper of
// Vault's *api.ResponseError, so that ErrorKind can tell them apart.
type StatusCoder interface {
	StatusCode() int
}

// ErrorKind classifies err into a small fixed set for the kind label of
// ferry_vault_errors_total: timeout, cancelled, network, permission_denied, not_found,
// rate_limited, unavailable, client_error, server_error or other.
func ErrorKind(err error) string {
	var sc StatusCoder
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &sc):
		switch code := sc.StatusCode(); {
		case code == 403 || code == 401:
			return "permission_denied"
		case code == 404:
			return "not_found"
		case code == 429:
			return "rate_limited"
		case code == 503:
			return "unavailable" // sealed or standby
		case code >= 400 && code < 500:
			return "client_error"
		case code >= 500:
			return "server_error"
		}
	case errors.As(err, &ne):
		return "network"
	}
	return "other"
}

func known(v string, allowed []string, otherwise string) string {
	for _, a := range allowed {
		if v == a {
			return v
		}
	}
	return otherwise
}

// factory creates collectors and registers them with reg.
type factory struct{ reg prometheus.Registerer }

func (f factory) counter(name, help string) prometheus.Counter {
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	f.reg.MustRegister(c)
	return c
}

func (f factory) counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(c)
	return c
}

func (f factory) gauge(name, help string) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	f.reg.MustRegister(g)
	return g
}

func (f factory) gaugeVec(name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	f.reg.MustRegister(g)
	return g
}

func (f factory) histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	f.reg.MustRegister(h)
	return h
}
