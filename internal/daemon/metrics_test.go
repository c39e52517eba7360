package daemon

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/pki"
)

// scrape reads a daemon's metrics over mTLS with the admin's client
// certificate and returns the value of every sample, by its text.
func scrape(t *testing.T, env *DevEnv, addr string, role pki.Role) map[string]float64 {
	t.Helper()
	cfg, err := pki.ClientTLSConfig(env.ClientCert, env.ClientKey, env.CACert, role)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	resp, err := c.Get("https://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %s", addr, resp.Status)
	}
	out := map[string]float64{}
	for _, m := range regexp.MustCompile(`(?m)^(ferry_[^ ]+) ([0-9.e+-]+)$`).FindAllStringSubmatch(string(b), -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		out[m[1]] = v
	}
	return out
}

// TestMetricsMoveDuringSessions: each daemon of controller dev serves its
// metrics over mTLS only; after a backup and a copy session the session,
// byte and duration series have moved on the controller and both agents.
func TestMetricsMoveDuringSessions(t *testing.T) {
	ctx := context.Background()
	env, err := StartDev(ctx, t.TempDir(), logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	if env.Controller.MetricsAddr == "" || env.Source.MetricsAddr == "" || env.Target.MetricsAddr == "" {
		t.Fatal("controller dev serves no metrics")
	}
	// No client certificate: refused.
	plain := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := plain.Get("https://" + env.Controller.MetricsAddr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Fatalf("metrics served without a client certificate: %s", resp.Status)
	}
	before := scrape(t, env, env.Controller.MetricsAddr, pki.RoleController)
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 71, datagen.TreeOptions{Size: 4 << 20}); err != nil {
		t.Fatal(err)
	}
	createJob(t, c, &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP, Agent: "source", Repository: "local", Path: src})
	createJob(t, c, &controllerv1.JobSpec{Name: "offsite", Kind: controllerv1.JobKind_JOB_KIND_COPY, FromAgent: "source", FromRepository: "local", FromJob: "site",
		ToAgent: "target", ToRepository: "local", Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_PASSWORD, Password: []byte("pw")})
	runJob(t, c, "site")
	runJob(t, c, "offsite")

	ctl := scrape(t, env, env.Controller.MetricsAddr, pki.RoleController)
	for _, series := range []string{
		`ferry_sessions_total{kind="backup",result="ok"}`,
		`ferry_sessions_total{kind="copy",result="ok"}`,
		`ferry_session_duration_seconds_count{kind="copy"}`,
	} {
		if ctl[series] != before[series]+1 {
			t.Errorf("controller %s: %v -> %v; want +1", series, before[series], ctl[series])
		}
	}
	if ctl[`ferry_bytes_read_total{job="site"}`] < 4<<20 || ctl[`ferry_bytes_written_total{job="offsite"}`] <= 0 {
		t.Errorf("controller byte counters did not move: %v", ctl)
	}
	src1 := scrape(t, env, env.Source.MetricsAddr, pki.RoleSource)
	if src1[`ferry_sessions_total{kind="backup",result="ok"}`] != 1 || src1[`ferry_sessions_total{kind="copy",result="ok"}`] != 1 ||
		src1[`ferry_bytes_sent_total{job="offsite"}`] <= 0 {
		t.Errorf("source agent metrics: %v", src1)
	}
	tgt := scrape(t, env, env.Target.MetricsAddr, pki.RoleTarget)
	if tgt[`ferry_sessions_total{kind="copy",result="ok"}`] != 1 || tgt[`ferry_bytes_written_total{job="offsite"}`] <= 0 {
		t.Errorf("target agent metrics: %v", tgt)
	}
	if tgt[`ferry_sessions_running`] != 0 {
		t.Errorf("target sessions running after the sessions: %v", tgt[`ferry_sessions_running`])
	}
}
