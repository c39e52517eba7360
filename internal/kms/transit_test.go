package kms

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ferrybackup/ferry/internal/transittest"
)

// target returns a Transit client of the Vault the test runs against: a
// real one when VAULT_ADDR and VAULT_TOKEN are set, else the in-repo
// Transit test server (srv is nil for a real Vault).
func target(t *testing.T) (*Transit, *transittest.Server) {
	t.Helper()
	addr, token, srv := transittest.Target(t)
	if srv == nil {
		// A real Vault: make sure the transit mount exists.
		tr, err := New(context.Background(), Config{Address: addr, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		tr.c.Sys().Mount("transit", &api.MountInput{Type: "transit"}) // an existing mount is fine
		return tr, nil
	}
	tr, err := New(context.Background(), Config{Address: addr, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return tr, srv
}

func keyName(t *testing.T, kind string) string {
	return "ferry-test-" + kind + "-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
}

func TestWrapUnwrapRotateRewrap(t *testing.T) {
	tr, _ := target(t)
	ctx := context.Background()
	for _, typ := range []string{"aes256-gcm96", "rsa-4096"} {
		name := keyName(t, typ)
		if err := tr.EnsureKey(ctx, name, typ); err != nil {
			t.Fatal(err)
		}
		if err := tr.EnsureKey(ctx, name, typ); err != nil { // exists now: a no-op
			t.Fatal(err)
		}
		secrets := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
		wrapped, err := tr.Wrap(ctx, name, secrets)
		if err != nil {
			t.Fatalf("%s: wrap: %v", typ, err)
		}
		if !strings.HasPrefix(wrapped[0], "vault:v1:") || bytes.Contains([]byte(wrapped[0]), secrets[0]) {
			t.Fatalf("%s: wrapped form %q", typ, wrapped[0])
		}
		got, err := tr.Unwrap(ctx, name, wrapped)
		if err != nil || !bytes.Equal(got[0], secrets[0]) || !bytes.Equal(got[1], secrets[1]) {
			t.Fatalf("%s: unwrap: %v", typ, err)
		}
		if err := tr.Rotate(ctx, name); err != nil {
			t.Fatal(err)
		}
		re, err := tr.Rewrap(ctx, name, wrapped)
		if err != nil || !strings.HasPrefix(re[0], "vault:v2:") {
			t.Fatalf("%s: rewrap: %v %v", typ, re, err)
		}
		if _, err := tr.c.Logical().Write("transit/keys/"+name+"/config", map[string]any{"min_decryption_version": 2}); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Unwrap(ctx, name, wrapped); !errors.Is(err, ErrTooOld) {
			t.Fatalf("%s: the old wrapped form still unwraps after min_decryption_version: %v", typ, err)
		}
		got, err = tr.Unwrap(ctx, name, re)
		if err != nil || !bytes.Equal(got[1], secrets[1]) {
			t.Fatalf("%s: unwrap after rewrap: %v", typ, err)
		}
	}
}

func TestErrorsNameVaultAndKey(t *testing.T) {
	tr, srv := target(t)
	ctx := context.Background()
	name := keyName(t, "aes")
	if err := tr.EnsureKey(ctx, name, "aes256-gcm96"); err != nil {
		t.Fatal(err)
	}
	w, err := tr.Wrap(ctx, name, [][]byte{[]byte("0123456789abcdef0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	// A key that does not exist.
	if _, err := tr.Unwrap(ctx, "ferry-no-such-key", w); !errors.Is(err, ErrKeyNotFound) || !strings.Contains(err.Error(), "ferry-no-such-key") {
		t.Fatalf("missing key: %v", err)
	}
	// A token Vault does not know.
	bad, err := New(ctx, Config{Address: tr.c.Address(), Token: "not-a-token"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bad.Wrap(ctx, name, [][]byte{[]byte("x")}); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tr.c.Address()) {
		t.Fatalf("bad token: %v", err)
	}
	bad.Close()
	if srv == nil {
		return // sealing and counting requests need the in-repo server
	}
	// Sealed: a bounded number of requests, then a clear error.
	srv.Seal()
	srv.ResetRequests()
	_, err = tr.Unwrap(ctx, name, w)
	if !errors.Is(err, ErrSealed) || !strings.Contains(err.Error(), "unseal") {
		t.Fatalf("sealed: %v", err)
	}
	if n := srv.Requests("transit/decrypt/" + name); n < 1 || n > 3 {
		t.Fatalf("sealed Vault got %d requests for one unwrap; want 1..3 (bounded retries)", n)
	}
	srv.Unseal()
	if _, err := tr.Unwrap(ctx, name, w); err != nil {
		t.Fatalf("after unseal: %v", err)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	tr, err := New(context.Background(), Config{Address: addr, Token: "t", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = tr.Wrap(context.Background(), "k", [][]byte{[]byte("x")})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestAppRoleLogin(t *testing.T) {
	srv := transittest.NewTest(t, transittest.Options{AppRole: transittest.AppRole{RoleID: "ferry", SecretID: "s3cret-id"}})
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(secretFile, []byte("s3cret-id\n"), 0o600)
	tr, err := New(context.Background(), Config{Address: srv.URL(), AppRoleID: "ferry", AppSecretFile: secretFile})
	if err != nil {
		t.Fatal(err)
	}
	if tr.c.Token() == "" || tr.c.Token() == srv.RootToken() {
		t.Fatal("no AppRole token")
	}
	os.WriteFile(secretFile, []byte("wrong"), 0o600)
	if _, err := New(context.Background(), Config{Address: srv.URL(), AppRoleID: "ferry", AppSecretFile: secretFile}); err == nil {
		t.Fatal("a wrong secret id logged in")
	}
}

// TestTokenRenewalAndRelogin: an AppRole token with a 1 s TTL and a 2 s
// maximum is renewed, then replaced by a fresh login, so the client keeps
// working well past both.
func TestTokenRenewalAndRelogin(t *testing.T) {
	srv := transittest.NewTest(t, transittest.Options{
		AppRole:  transittest.AppRole{RoleID: "ferry", SecretID: "sid"},
		TokenTTL: time.Second, TokenMaxTTL: 2 * time.Second,
	})
	secretFile := filepath.Join(t.TempDir(), "secret-id")
	os.WriteFile(secretFile, []byte("sid"), 0o600)
	ctx := context.Background()
	tr, err := New(ctx, Config{Address: srv.URL(), AppRoleID: "ferry", AppSecretFile: secretFile})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	first := tr.c.Token()
	root, _ := New(ctx, Config{Address: srv.URL(), Token: srv.RootToken()})
	defer root.Close()
	if err := root.EnsureKey(ctx, "k", "aes256-gcm96"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := tr.Wrap(ctx, "k", [][]byte{[]byte("0123456789abcdef")}); err != nil {
			t.Fatalf("at %v: %v", time.Until(deadline), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if srv.Requests("auth/token/renew-self") == 0 {
		t.Fatal("the token was never renewed")
	}
	if tr.c.Token() == first {
		t.Fatal("no fresh login after the token's maximum TTL")
	}
}
