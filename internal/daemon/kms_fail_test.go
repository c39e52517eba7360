package daemon

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ferrybackup/ferry/internal/datagen"
	commonv1 "github.com/ferrybackup/ferry/internal/gen/ferry/common/v1"
	controllerv1 "github.com/ferrybackup/ferry/internal/gen/ferry/controller/v1"
	"github.com/ferrybackup/ferry/internal/keys"
	"github.com/ferrybackup/ferry/internal/transittest"
)

// TestKMSSessionFailures: with Vault sealed, refusing the controller's
// token, missing the job's key, or gone, a KMS session fails before
// anything is committed, with an error naming Vault, the key or the cause
// and what to do, after a bounded number of requests.
func TestKMSSessionFailures(t *testing.T) {
	vault := transittest.NewTest(t, transittest.Options{})
	t.Setenv("VAULT_ADDR", vault.URL())
	t.Setenv("VAULT_TOKEN", vault.RootToken())
	ctx := context.Background()
	dir := t.TempDir()
	env, err := StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	c := devClient(t, env)
	src := filepath.Join(t.TempDir(), "site")
	if err := datagen.Tree(src, 13, datagen.TreeOptions{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateJob(ctx, &controllerv1.CreateJobRequest{Spec: &controllerv1.JobSpec{Name: "site", Kind: controllerv1.JobKind_JOB_KIND_BACKUP,
		Agent: "source", Repository: "local", Path: src, Encryption: commonv1.EncryptionMode_ENCRYPTION_MODE_KMS, KmsKey: "ferry-fail"}}); err != nil {
		t.Fatal(err)
	}
	runJob(t, c, "site")
	points := func() int {
		p, err := c.ListPoints(ctx, &controllerv1.ListPointsRequest{Job: "site"})
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Points)
	}
	expectFail := func(what string, says ...string) {
		t.Helper()
		vault.ResetRequests()
		start := time.Now()
		s := runJobResult(t, c, "site")
		if s.Result != controllerv1.SessionResult_SESSION_RESULT_FAILED {
			t.Fatalf("%s: the session did not fail", what)
		}
		for _, w := range says {
			if !strings.Contains(s.Error, w) {
				t.Fatalf("%s: error %q does not say %q", what, s.Error, w)
			}
		}
		if n := points(); n != 1 {
			t.Fatalf("%s: %d points after a failed session", what, n)
		}
		if n := vault.Requests(""); n > 3 {
			t.Fatalf("%s: %d requests to Vault for one session (retry storm)", what, n)
		}
		t.Logf("%s: failed after %v with: %s", what, time.Since(start).Round(time.Millisecond), s.Error)
	}

	vault.Seal()
	expectFail("sealed", vault.URL(), "sealed", "unseal")
	vault.Unseal()

	// A token Vault refuses.
	env.Stop()
	t.Setenv("VAULT_TOKEN", "not-a-valid-token")
	env, err = StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	c = devClient(t, env)
	expectFail("permission denied", vault.URL(), "denied", "token")
	env.Stop()
	t.Setenv("VAULT_TOKEN", vault.RootToken())
	env, err = StartDev(ctx, dir, logWriter{t}, keys.TestKDF)
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	c = devClient(t, env)

	// The job's key deleted in Vault: no new key of that name is made.
	vapi, _ := api.NewClient(&api.Config{Address: vault.URL()})
	vapi.SetToken(vault.RootToken())
	if _, err := vapi.Logical().Write("transit/keys/ferry-fail/config", map[string]any{"deletion_allowed": true}); err != nil {
		t.Fatal(err)
	}
	if _, err := vapi.Logical().Delete("transit/keys/ferry-fail"); err != nil {
		t.Fatal(err)
	}
	expectFail("key deleted", "ferry-fail", "deleted")
	if sec, err := vapi.Logical().Read("transit/keys/ferry-fail"); err == nil && sec != nil {
		t.Fatal("the failed session re-created the deleted key")
	} else if re, ok := err.(*api.ResponseError); ok && re.StatusCode != http.StatusNotFound {
		t.Fatal(err)
	}

	// Vault gone.
	vault.Close()
	expectFail("unreachable", vault.URL(), "unreachable")
}
