package cli

import (
	"encoding/json"
	"strings"
	"testing"

	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
)

// fakeWANSession is a WAN-mode session: 100 blocks of 1 MiB, 90 from the
// target's cache, 10 sent as 5 MiB, over 2 seconds.
func fakeWANSession() *controllerv1.Session {
	s := fakeSession("wan1", controllerv1.SessionResult_SESSION_RESULT_SUCCESS, 5<<20)
	s.Mode = "wan"
	st := s.Stats
	st.WireBytesSent, st.WireBytesReceived, st.DigestBytesSent, st.BlockBytesSent = 5<<20+9000, 300, 9000, 5<<20
	st.Blocks, st.PlainBytes, st.BlocksSent, st.BlockPlainBytesSent = 100, 100<<20, 10, 10<<20
	st.CacheHitBlocks, st.CacheHitBytes, st.BlocksRefetched = 90, 90<<20, 1
	return s
}

func TestWANFlagsAndSessionShow(t *testing.T) {
	f := startFakeController(t)
	mustRun(t, "job", "create", "far", "--kind", "copy", "--from", "site-a:main/web", "--to", "vault-b:offsite", "--wan")
	if s := f.last().(*controllerv1.CreateJobRequest).Spec; !s.Wan {
		t.Fatalf("create --wan: %v", s)
	}
	mustRun(t, "job", "update", "far", "--wan=false")
	if r := f.last().(*controllerv1.UpdateJobRequest); strings.Join(r.Fields, ",") != "wan" || r.Spec.Wan {
		t.Fatalf("update --wan=false: %v", r)
	}
	code, _, stderr := run(t, "job", "create", "w", "--kind", "backup", "--agent", "a", "--repo", "r", "--path", "/p", "--wan")
	if code != ExitUsage || !strings.Contains(stderr, "--wan does not apply to a backup job") {
		t.Fatalf("--wan on a backup job: exit %d %q", code, stderr)
	}

	out := mustRun(t, "session", "show", "wan1")
	for _, want := range []string{"mode:", "wan", "wan blocks:", "100 (100.0 MiB of plaintext)", "wan cache hits:", "90 blocks, 90.0 MiB",
		"wan blocks sent:", "10 blocks, 10.0 MiB of plaintext as 5.0 MiB (compression 2.00x)", "wan refetched:", "1 blocks",
		"wan wire sent:", "digests 8.8 KiB", "wan wire received:", "effective speed:", "52 MB/s of plaintext"} {
		if !strings.Contains(out, want) {
			t.Fatalf("session show: no %q in\n%s", want, out)
		}
	}
	var sv sessionView
	if err := json.Unmarshal([]byte(mustRun(t, "session", "show", "wan1", "-o", "json")), &sv); err != nil || sv.WAN == nil ||
		sv.WAN.CacheHitBlocks != 90 || sv.WAN.BlockBytesSent != 5<<20 || sv.WAN.CompressionRatio != 2 || sv.WAN.DigestBytesSent != 9000 ||
		sv.WAN.WireBytesReceived != 300 || sv.WAN.BlocksRefetched != 1 || sv.WAN.EffectiveMBPerSecond < 52 || sv.WAN.EffectiveMBPerSecond > 53 {
		t.Fatalf("session show -o json: %+v %v", sv.WAN, err)
	}
	// A default-mode session shows no WAN counters.
	if out := mustRun(t, "session", "show", "s1"); strings.Contains(out, "wan") {
		t.Fatalf("default session shows WAN counters:\n%s", out)
	}
	if out := mustRun(t, "session", "show", "s1", "-o", "json"); strings.Contains(out, `"wan"`) {
		t.Fatalf("default session has WAN counters in JSON:\n%s", out)
	}
}
