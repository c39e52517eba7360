package telemetry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/ferrybackup/ferry/internal/telemetry"
)

// pki is a throw-away CA with a server certificate for 127.0.0.1 and a client certificate.
type pki struct {
	pool   *x509.CertPool
	server tls.Certificate
	client tls.Certificate
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name + " CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return &pki{
		pool:   pool,
		server: leaf(2, name+" controller", x509.ExtKeyUsageServerAuth),
		client: leaf(3, name+" prometheus", x509.ExtKeyUsageClientAuth),
	}
}

func (p *pki) serverTLS() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.server},
		ClientCAs:    p.pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}
}

// httpClient trusts p's CA and presents cert, if any.
func (p *pki) httpClient(cert *tls.Certificate) *http.Client {
	conf := &tls.Config{RootCAs: p.pool, MinVersion: tls.VersionTLS13}
	if cert != nil {
		conf.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: conf}, Timeout: 10 * time.Second}
}

func serve(t *testing.T, p *pki, m *telemetry.Metrics) string {
	t.Helper()
	addr, stop, err := telemetry.Serve(context.Background(), "127.0.0.1:0", p.serverTLS(), m.Registry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := stop(ctx); err != nil {
			t.Error(err)
		}
	})
	return addr
}

func scrape(t *testing.T, c *http.Client, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := c.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

func gather(t *testing.T, m *telemetry.Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	list, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	fams := map[string]*dto.MetricFamily{}
	for _, f := range list {
		fams[f.GetName()] = f
	}
	return fams
}

// find returns the series of family name whose labels are exactly labels ("k=v" pairs).
func find(fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	f, ok := fams[name]
	if !ok {
		return nil
	}
	for _, m := range f.GetMetric() {
		var got []string
		for _, l := range m.GetLabel() {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") == strings.Join(labels, ",") {
			return m
		}
	}
	return nil
}

// value returns the value of a counter or gauge series, or -1 if there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	m := find(fams, name, labels...)
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return -1
}

type httpStatusError int

func (e httpStatusError) Error() string   { return fmt.Sprintf("vault: status %d", int(e)) }
func (e httpStatusError) StatusCode() int { return int(e) }

func TestScrapeOverMTLS(t *testing.T) {
	p := newPKI(t, "test")
	m := telemetry.New("1.2.3-test")
	addr := serve(t, p, m)
	c := p.httpClient(&p.client)

	before := scrape(t, c, addr)
	for _, name := range []string{
		"ferry_sessions_total", "ferry_session_duration_seconds", "ferry_sessions_running",
		"ferry_wan_cache_hits_total", "ferry_wan_cache_misses_total", "ferry_wan_cache_bytes",
		"ferry_build_info", "go_goroutines", "process_cpu_seconds_total",
	} {
		if _, ok := before[name]; !ok {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if v := value(before, "ferry_build_info", "version=1.2.3-test"); v != 1 {
		t.Errorf("ferry_build_info{version=1.2.3-test} = %v, want 1", v)
	}
	if v := value(before, "ferry_sessions_total", "kind=merge", "result=cancelled"); v != 0 {
		t.Errorf("ferry_sessions_total{merge,cancelled} = %v before any session, want an exported 0", v)
	}

	m.SessionStarted()
	m.SessionStarted()
	m.SessionStarted()
	m.SessionDone(telemetry.KindCopy, telemetry.ResultOK, 90*time.Second)
	m.SessionDone("surprise", "weird", time.Second)
	m.AddBytes(telemetry.StageRead, "nightly", 1000)
	m.AddBytes(telemetry.StageSent, "nightly", 400)
	m.AddBytes(telemetry.StageReceived, "nightly", 300)
	m.AddBytes(telemetry.StageWritten, "nightly", 200)
	m.AddBytes(telemetry.StageWritten, "nightly", 50)
	m.AddBytes(telemetry.StageWritten, "nightly", -5) // ignored, not a panic
	m.WANCacheLookup(3, 2)
	m.WANCacheLookup(1, 0)
	m.SetWANCacheBytes(4096)
	m.VaultRequest("encrypt", nil)
	m.VaultRequest("decrypt", fmt.Errorf("unwrap: %w", httpStatusError(403)))
	m.VaultRequest("decrypt", context.DeadlineExceeded)

	after := scrape(t, c, addr)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ferry_sessions_running", nil, 1},
		{"ferry_sessions_total", []string{"kind=copy", "result=ok"}, 1},
		{"ferry_sessions_total", []string{"kind=other", "result=failed"}, 1},
		{"ferry_sessions_total", []string{"kind=copy", "result=failed"}, 0},
		{"ferry_bytes_read_total", []string{"job=nightly"}, 1000},
		{"ferry_bytes_sent_total", []string{"job=nightly"}, 400},
		{"ferry_bytes_received_total", []string{"job=nightly"}, 300},
		{"ferry_bytes_written_total", []string{"job=nightly"}, 250},
		{"ferry_wan_cache_hits_total", nil, 4},
		{"ferry_wan_cache_misses_total", nil, 2},
		{"ferry_wan_cache_bytes", nil, 4096},
		{"ferry_vault_requests_total", []string{"op=encrypt"}, 1},
		{"ferry_vault_requests_total", []string{"op=decrypt"}, 2},
		{"ferry_vault_errors_total", []string{"kind=permission_denied", "op=decrypt"}, 1},
		{"ferry_vault_errors_total", []string{"kind=timeout", "op=decrypt"}, 1},
		{"ferry_vault_errors_total", []string{"kind=other", "op=encrypt"}, -1},
	}
	for _, c := range checks {
		if got := value(after, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}

	h := find(after, "ferry_session_duration_seconds", "kind=copy").GetHistogram()
	if h.GetSampleCount() != 1 || h.GetSampleSum() != 90 {
		t.Errorf("copy duration: count %d, sum %v; want 1, 90", h.GetSampleCount(), h.GetSampleSum())
	}
	buckets := map[float64]uint64{}
	for _, b := range h.GetBucket() {
		buckets[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	if buckets[0.1] != 0 || buckets[60] != 0 || buckets[120] != 1 || buckets[21600] != 1 {
		t.Errorf("copy duration buckets = %v; want 90s in (60, 120]", buckets)
	}
	if len(buckets) < 10 || buckets[0.1] != 0 {
		t.Errorf("buckets %v, want 0.1 s to 6 h", buckets)
	}

	resp, err := c.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		t.Errorf("GET /healthz = %s %q", resp.Status, body)
	}
}

func TestRefusesClientsWithoutTrustedCertificate(t *testing.T) {
	p := newPKI(t, "test")
	addr := serve(t, p, telemetry.New("v"))
	other := newPKI(t, "other")

	clients := map[string]*http.Client{
		"no certificate":          p.httpClient(nil),
		"certificate of other CA": p.httpClient(&other.client),
	}
	for name, c := range clients {
		resp, err := c.Get("https://" + addr + "/metrics")
		if err == nil {
			resp.Body.Close()
			t.Errorf("%s: GET /metrics = %s, want refused", name, resp.Status)
		}
	}
	// The same server does answer a client with a certificate of its CA.
	if len(scrape(t, p.httpClient(&p.client), addr)) == 0 {
		t.Error("trusted client got no metrics")
	}
}

func TestServeRequiresMutualTLS(t *testing.T) {
	p := newPKI(t, "test")
	reg := telemetry.New("v").Registry()
	noClientAuth := p.serverTLS()
	noClientAuth.ClientAuth = tls.VerifyClientCertIfGiven
	noCert := p.serverTLS()
	noCert.Certificates = nil
	cases := map[string]*tls.Config{
		"nil TLS config":       nil,
		"client cert optional": noClientAuth,
		"no server cert":       noCert,
	}
	for name, conf := range cases {
		if _, _, err := telemetry.Serve(context.Background(), "127.0.0.1:0", conf, reg, nil); err == nil {
			t.Errorf("%s: Serve succeeded", name)
		}
	}
	if _, _, err := telemetry.Serve(context.Background(), "127.0.0.1:0", p.serverTLS(), nil, nil); err == nil {
		t.Error("nil registry: Serve succeeded")
	}
}

func TestStop(t *testing.T) {
	p := newPKI(t, "test")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := telemetry.New("v")
	addr, stop, err := telemetry.Serve(ctx, "127.0.0.1:0", p.serverTLS(), m.Registry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	scrape(t, p.httpClient(&p.client), addr)
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := stop(context.Background()); err != nil {
		t.Fatalf("second stop: %v", err)
	}
	if conn, err := net.Dial("tcp", addr); err == nil {
		conn.Close()
		t.Error("listener still accepts after stop")
	}

	// Cancelling Serve's context closes the server too.
	addr2, stop2, err := telemetry.Serve(ctx, "127.0.0.1:0", p.serverTLS(), m.Registry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("tcp", addr2)
		if err != nil {
			break
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatal("listener still accepts after its context was cancelled")
		}
		time.Sleep(time.Millisecond)
	}
	if err := stop2(context.Background()); err != nil {
		t.Errorf("stop after cancel: %v", err)
	}
}

func TestDaemonsInOneProcessDoNotCollide(t *testing.T) {
	controller, agent := telemetry.New("v1"), telemetry.New("v2")
	controller.WANCacheLookup(5, 0)
	agent.WANCacheLookup(1, 0)
	if got := value(gather(t, controller), "ferry_wan_cache_hits_total"); got != 5 {
		t.Errorf("controller hits = %v, want 5", got)
	}
	if got := value(gather(t, agent), "ferry_wan_cache_hits_total"); got != 1 {
		t.Errorf("agent hits = %v, want 1", got)
	}
	if got := value(gather(t, agent), "ferry_build_info", "version=v2"); got != 1 {
		t.Errorf("agent build info = %v", got)
	}
}

func TestTrackSessionAndForgetJob(t *testing.T) {
	m := telemetry.New("v")
	done := m.TrackSession(telemetry.KindVerify)
	if got := value(gather(t, m), "ferry_sessions_running"); got != 1 {
		t.Fatalf("running = %v, want 1", got)
	}
	done(fmt.Errorf("verify: %w", context.Canceled))
	fams := gather(t, m)
	if got := value(fams, "ferry_sessions_running"); got != 0 {
		t.Errorf("running = %v, want 0", got)
	}
	if got := value(fams, "ferry_sessions_total", "kind=verify", "result=cancelled"); got != 1 {
		t.Errorf("verify cancelled = %v, want 1", got)
	}
	if n := find(fams, "ferry_session_duration_seconds", "kind=verify").GetHistogram().GetSampleCount(); n != 1 {
		t.Errorf("verify durations observed = %d, want 1", n)
	}

	m.AddBytes(telemetry.StageRead, "a", 1)
	m.AddBytes(telemetry.StageRead, "b", 1)
	m.AddBytes(telemetry.StageWritten, "a", 1)
	m.ForgetJob("a")
	fams = gather(t, m)
	if value(fams, "ferry_bytes_read_total", "job=a") != -1 || value(fams, "ferry_bytes_written_total", "job=a") != -1 {
		t.Error("series of forgotten job a remain")
	}
	if value(fams, "ferry_bytes_read_total", "job=b") != 1 {
		t.Error("series of job b went with a")
	}
}

func TestNilMetrics(t *testing.T) {
	var m *telemetry.Metrics
	m.SessionStarted()
	m.SessionDone(telemetry.KindBackup, telemetry.ResultOK, time.Second)
	m.TrackSession(telemetry.KindBackup)(nil)
	m.AddBytes(telemetry.StageSent, "job", 10)
	m.ForgetJob("job")
	m.WANCacheLookup(1, 1)
	m.SetWANCacheBytes(1)
	m.VaultRequest("encrypt", errors.New("x"))
	if m.Registry() != nil {
		t.Error("nil Metrics has a registry")
	}
}

func TestResultOfAndErrorKind(t *testing.T) {
	results := map[error]string{
		nil:                                   telemetry.ResultOK,
		errors.New("disk full"):               telemetry.ResultFailed,
		fmt.Errorf("x: %w", context.Canceled): telemetry.ResultCancelled,
	}
	for err, want := range results {
		if got := telemetry.ResultOf(err); got != want {
			t.Errorf("ResultOf(%v) = %q, want %q", err, got, want)
		}
	}
	kinds := []struct {
		err  error
		want string
	}{
		{context.DeadlineExceeded, "timeout"},
		{context.Canceled, "cancelled"},
		{&net.OpError{Op: "dial", Err: errors.New("connection refused")}, "network"},
		{httpStatusError(401), "permission_denied"},
		{httpStatusError(403), "permission_denied"},
		{httpStatusError(404), "not_found"},
		{httpStatusError(429), "rate_limited"},
		{httpStatusError(503), "unavailable"},
		{httpStatusError(400), "client_error"},
		{httpStatusError(500), "server_error"},
		{errors.New("odd"), "other"},
	}
	for _, k := range kinds {
		if got := telemetry.ErrorKind(k.err); got != k.want {
			t.Errorf("ErrorKind(%v) = %q, want %q", k.err, got, k.want)
		}
	}
}
