package transittest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ferrybackup/ferry/internal/transittest"
)

// The tests run against Target: a real Vault when VAULT_ADDR and
// VAULT_TOKEN are set, otherwise the in-repo server. Those that need Seal,
// request counts, namespaces (Vault Enterprise) or the server's AppRole
// policy take a test server of their own and say so.

// env is one test's view of the target.
type env struct {
	t     *testing.T
	addr  string
	token string
	c     *api.Client
	srv   *transittest.Server // nil against a real Vault
	mount string
}

func setup(t *testing.T) *env {
	t.Helper()
	addr, token, srv := transittest.Target(t)
	e := &env{t: t, addr: addr, token: token, srv: srv, mount: "transit"}
	e.c = e.client(token)
	if srv != nil {
		e.mount = srv.Mount()
	} else {
		err := e.c.Sys().Mount(e.mount, &api.MountInput{Type: "transit"})
		if err != nil && !strings.Contains(err.Error(), "path is already in use") {
			t.Fatalf("mount transit on %s: %v", addr, err)
		}
	}
	return e
}

// onServer is a test server of the test's own, for tests that use what a
// real Vault lacks.
func onServer(t *testing.T, opts transittest.Options) *env {
	t.Helper()
	srv := transittest.NewTest(t, opts)
	e := &env{t: t, addr: srv.URL(), token: srv.RootToken(), srv: srv, mount: srv.Mount()}
	e.c = e.client(e.token)
	return e
}

// sub is e for a subtest, so that its helpers fail the subtest.
func (e *env) sub(t *testing.T) *env {
	s := *e
	s.t = t
	return &s
}

// client makes an api client that does not retry, so that one call is one
// request.
func (e *env) client(token string) *api.Client {
	e.t.Helper()
	cfg := &api.Config{Address: e.addr}
	if e.srv == nil {
		cfg = api.DefaultConfig() // reads VAULT_CACERT and the like
		cfg.MaxRetries = 0
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		e.t.Fatalf("vault client: %v", err)
	}
	c.SetToken(token)
	return c
}

var keySeq atomic.Int64

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// keyName is unique per test and run, so reruns against a real Vault do
// not meet old keys.
func (e *env) keyName() string {
	return fmt.Sprintf("%s-%d-%d", unsafeName.ReplaceAllString(strings.ToLower(e.t.Name()), "-"),
		time.Now().UnixNano()%1e9, keySeq.Add(1))
}

// newKey creates a key of the type and deletes it when the test ends.
func (e *env) newKey(typ string, extra map[string]any) string {
	e.t.Helper()
	name := e.keyName()
	data := map[string]any{"type": typ}
	for k, v := range extra {
		data[k] = v
	}
	e.mustWrite("keys/"+name, data)
	e.deleteAtEnd(name)
	return name
}

func (e *env) deleteAtEnd(name string) {
	e.t.Cleanup(func() {
		_, _ = e.c.Logical().Write(e.mount+"/keys/"+name+"/config", map[string]any{"deletion_allowed": true})
		_, _ = e.c.Logical().Delete(e.mount + "/keys/" + name)
	})
}

func (e *env) write(path string, data map[string]any) (*api.Secret, error) {
	return e.c.Logical().Write(e.mount+"/"+path, data)
}

func (e *env) mustWrite(path string, data map[string]any) *api.Secret {
	e.t.Helper()
	s, err := e.write(path, data)
	if err != nil {
		e.t.Fatalf("write %s: %v", path, err)
	}
	return s
}

func (e *env) mustRead(path string) *api.Secret {
	e.t.Helper()
	s, err := e.c.Logical().Read(e.mount + "/" + path)
	if err != nil {
		e.t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		e.t.Fatalf("read %s: not found", path)
	}
	return s
}

func (e *env) encrypt(key string, plaintext []byte) string {
	e.t.Helper()
	s := e.mustWrite("encrypt/"+key, map[string]any{"plaintext": b64(plaintext)})
	return s.Data["ciphertext"].(string)
}

func (e *env) decrypt(key, ciphertext string) []byte {
	e.t.Helper()
	s := e.mustWrite("decrypt/"+key, map[string]any{"ciphertext": ciphertext})
	return unb64(e.t, s.Data["plaintext"].(string))
}

// wantError checks that err is Vault's answer with the status and, unless
// want is empty, an error containing want.
func wantError(t *testing.T, err error, status int, want string) {
	t.Helper()
	var re *api.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("got error %v, want a %d response containing %q", err, status, want)
	}
	if re.StatusCode != status {
		t.Fatalf("status %d, want %d (errors %q)", re.StatusCode, status, re.Errors)
	}
	if want == "" {
		return
	}
	for _, msg := range re.Errors {
		if strings.Contains(msg, want) {
			return
		}
	}
	t.Fatalf("errors %q, want one containing %q", re.Errors, want)
}

// raw sends a request with net/http and returns the status and body, for
// checking Vault's exact bytes.
func (e *env) raw(method, path, token string, body any) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, e.addr+"/v1/"+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	resp, err := e.c.CloneConfig().HttpClient.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func unb64(t *testing.T, s string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatalf("base64 %q: %v", s, err)
	}
	return b
}

func random(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func num(t *testing.T, v any) int64 {
	t.Helper()
	n, ok := v.(json.Number)
	if !ok {
		t.Fatalf("%v (%T) is not a JSON number", v, v)
	}
	i, err := n.Int64()
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func TestCreateAndReadKey(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)

	d := e.mustRead("keys/" + name).Data
	if d["type"] != "aes256-gcm96" || d["name"] != name {
		t.Errorf("type %v name %v, want aes256-gcm96 %s", d["type"], d["name"], name)
	}
	if num(t, d["latest_version"]) != 1 || num(t, d["min_decryption_version"]) != 1 || num(t, d["min_encryption_version"]) != 0 {
		t.Errorf("versions latest %v min_decryption %v min_encryption %v, want 1 1 0",
			d["latest_version"], d["min_decryption_version"], d["min_encryption_version"])
	}
	if d["supports_encryption"] != true || d["supports_decryption"] != true || d["deletion_allowed"] != false {
		t.Errorf("flags %v", d)
	}
	if keys, _ := d["keys"].(map[string]any); len(keys) != 1 || keys["1"] == nil {
		t.Errorf("keys %v, want version 1 only", d["keys"])
	}

	// Creating it again changes nothing and says so.
	s := e.mustWrite("keys/"+name, map[string]any{"type": "chacha20-poly1305"})
	if s.Data["type"] != "aes256-gcm96" || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "already existed") {
		t.Errorf("second create: type %v warnings %q", s.Data["type"], s.Warnings)
	}

	// A key that does not exist reads as 404 with no errors, which the
	// client turns into a nil secret.
	s, err := e.c.Logical().Read(e.mount + "/keys/" + e.keyName())
	if s != nil || err != nil {
		t.Errorf("missing key read: %v, %v; want nil, nil", s, err)
	}
	_, err = e.write("keys/"+e.keyName(), map[string]any{"type": "aes512-gcm"})
	wantError(t, err, http.StatusBadRequest, "unknown key type aes512-gcm")
}

func TestListAndExport(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", map[string]any{"exportable": true})

	s, err := e.c.Logical().List(e.mount + "/keys")
	if err != nil || s == nil {
		t.Fatalf("list keys: %v, %v", s, err)
	}
	if !strings.Contains(fmt.Sprint(s.Data["keys"]), name) {
		t.Errorf("list %v lacks %s", s.Data["keys"], name)
	}

	e.mustWrite("keys/"+name+"/rotate", nil)
	keys := e.mustRead("export/encryption-key/" + name).Data["keys"].(map[string]any)
	if len(keys) != 2 {
		t.Fatalf("exported %d versions, want 2", len(keys))
	}
	latest := e.mustRead("export/encryption-key/" + name + "/latest").Data["keys"].(map[string]any)
	if raw := unb64(t, latest["2"].(string)); len(raw) != 32 || latest["2"] != keys["2"] {
		t.Errorf("latest export %v, full export %v", latest, keys)
	}
	_, err = e.c.Logical().Read(e.mount + "/export/encryption-key/" + name + "/3")
	wantError(t, err, http.StatusBadRequest, "version does not exist or cannot be found")

	ec := e.newKey("ecdsa-p256", map[string]any{"exportable": true})
	priv := e.mustRead("export/signing-key/" + ec + "/1").Data["keys"].(map[string]any)["1"].(string)
	block, _ := pem.Decode([]byte(priv))
	if block == nil || block.Type != "EC PRIVATE KEY" {
		t.Fatalf("ECDSA signing-key export: %q", priv)
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub := e.mustRead("export/public-key/" + ec).Data["keys"].(map[string]any)["1"].(string)
	if want := strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}))); pub != want {
		t.Errorf("public-key export %q does not match the signing key's %q", pub, want)
	}
}

func TestRSA4096Key(t *testing.T) {
	e := setup(t)
	name := e.newKey("rsa-4096", nil)

	d := e.mustRead("keys/" + name).Data
	if d["type"] != "rsa-4096" || d["supports_signing"] != true {
		t.Fatalf("read: %v", d)
	}
	v1 := d["keys"].(map[string]any)["1"].(map[string]any)
	if v1["name"] != "rsa-4096" {
		t.Errorf("key name %v, want rsa-4096", v1["name"])
	}
	pubPEM := v1["public_key"].(string)
	block, _ := pem.Decode([]byte(pubPEM))
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("public key is not a PUBLIC KEY PEM block: %q", pubPEM)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if rk, ok := pub.(*rsa.PublicKey); !ok || rk.N.BitLen() != 4096 {
		t.Fatalf("public key %T is not RSA-4096", pub)
	}

	exp := e.mustRead("export/public-key/" + name).Data
	if got := exp["keys"].(map[string]any)["1"]; got != pubPEM {
		t.Errorf("export/public-key gave %v, want the key read's %q", got, pubPEM)
	}
	_, err = e.c.Logical().Read(e.mount + "/export/encryption-key/" + name)
	wantError(t, err, http.StatusBadRequest, "private key material is not exportable")

	// RSA keys encrypt with OAEP and decrypt in Vault.
	msg := random(t, 32)
	ct := e.encrypt(name, msg)
	if !strings.HasPrefix(ct, "vault:v1:") {
		t.Errorf("ciphertext %q lacks vault:v1:", ct)
	}
	if got := e.decrypt(name, ct); !bytes.Equal(got, msg) {
		t.Errorf("decrypt gave %x, want %x", got, msg)
	}
}

func TestEncryptDecrypt(t *testing.T) {
	e := setup(t)
	for _, typ := range []string{"aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"} {
		t.Run(typ, func(t *testing.T) {
			e := e.sub(t)
			name := e.newKey(typ, nil)
			msg := random(t, 64)
			s := e.mustWrite("encrypt/"+name, map[string]any{"plaintext": b64(msg)})
			ct := s.Data["ciphertext"].(string)
			if !strings.HasPrefix(ct, "vault:v1:") || num(t, s.Data["key_version"]) != 1 {
				t.Errorf("encrypt gave %q version %v", ct, s.Data["key_version"])
			}
			if got := e.decrypt(name, ct); !bytes.Equal(got, msg) {
				t.Errorf("decrypt gave %x, want %x", got, msg)
			}
			// GCM and Poly1305 catch a flipped byte.
			bad := []byte(ct)
			bad[len(bad)-3] ^= 'A' ^ 'B'
			_, err := e.write("decrypt/"+name, map[string]any{"ciphertext": string(bad)})
			var re *api.ResponseError
			if !errors.As(err, &re) || re.StatusCode != http.StatusBadRequest {
				t.Errorf("tampered ciphertext: %v, want a 400", err)
			}
			_, err = e.write("decrypt/"+name, map[string]any{"ciphertext": "v1:abc"})
			wantError(t, err, http.StatusBadRequest, "invalid ciphertext: no prefix")
		})
	}

	t.Run("derived", func(t *testing.T) {
		e := e.sub(t)
		name := e.newKey("aes256-gcm96", map[string]any{"derived": true})
		msg := []byte("session secret")
		ctxA, ctxB := b64([]byte("backup-a")), b64([]byte("backup-b"))
		s := e.mustWrite("encrypt/"+name, map[string]any{"plaintext": b64(msg), "context": ctxA})
		ct := s.Data["ciphertext"].(string)
		s = e.mustWrite("decrypt/"+name, map[string]any{"ciphertext": ct, "context": ctxA})
		if got := unb64(t, s.Data["plaintext"].(string)); !bytes.Equal(got, msg) {
			t.Errorf("decrypt gave %q", got)
		}
		_, err := e.write("decrypt/"+name, map[string]any{"ciphertext": ct, "context": ctxB})
		wantError(t, err, http.StatusBadRequest, "message authentication failed")
		_, err = e.write("encrypt/"+name, map[string]any{"plaintext": b64(msg)})
		wantError(t, err, http.StatusBadRequest, "context")
	})
}

func TestBatch(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)
	msgs := [][]byte{random(t, 16), random(t, 32), {}}
	var in []any
	for i, m := range msgs {
		in = append(in, map[string]any{"plaintext": b64(m), "reference": fmt.Sprint("item-", i)})
	}
	res := e.mustWrite("encrypt/"+name, map[string]any{"batch_input": in}).Data["batch_results"].([]any)
	if len(res) != len(msgs) {
		t.Fatalf("%d results for %d items", len(res), len(msgs))
	}
	var dec []any
	for i, r := range res {
		item := r.(map[string]any)
		if item["reference"] != fmt.Sprint("item-", i) || item["error"] != nil {
			t.Errorf("result %d: %v", i, item)
		}
		dec = append(dec, map[string]any{"ciphertext": item["ciphertext"], "reference": item["reference"]})
	}
	out := e.mustWrite("decrypt/"+name, map[string]any{"batch_input": dec}).Data["batch_results"].([]any)
	for i, r := range out {
		item := r.(map[string]any)
		if got := unb64(t, item["plaintext"].(string)); !bytes.Equal(got, msgs[i]) || item["reference"] != fmt.Sprint("item-", i) {
			t.Errorf("decrypt %d: %v", i, item)
		}
	}

	// One bad item fails the request with 400 (the body holds the results,
	// not errors); partial_failure_response_code lets the good ones through
	// with their per-item errors.
	mixed := []any{map[string]any{"plaintext": "not base64!"}, map[string]any{"plaintext": b64(msgs[0])}}
	_, err := e.write("encrypt/"+name, map[string]any{"batch_input": mixed})
	wantError(t, err, http.StatusBadRequest, "")
	s := e.mustWrite("encrypt/"+name, map[string]any{"batch_input": mixed, "partial_failure_response_code": 207})
	res = s.Data["batch_results"].([]any)
	if res[0].(map[string]any)["error"] == nil || res[1].(map[string]any)["ciphertext"] == nil {
		t.Errorf("partial failure results: %v", res)
	}
}

func TestDatakey(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)

	s := e.mustWrite("datakey/plaintext/"+name, nil)
	pt := unb64(t, s.Data["plaintext"].(string))
	if len(pt) != 32 || num(t, s.Data["key_version"]) != 1 {
		t.Fatalf("plaintext datakey: %d bytes, version %v", len(pt), s.Data["key_version"])
	}
	if got := e.decrypt(name, s.Data["ciphertext"].(string)); !bytes.Equal(got, pt) {
		t.Errorf("datakey ciphertext decrypts to %x, want %x", got, pt)
	}

	s = e.mustWrite("datakey/wrapped/"+name, map[string]any{"bits": 512})
	if _, ok := s.Data["plaintext"]; ok {
		t.Errorf("wrapped datakey returned a plaintext")
	}
	if got := e.decrypt(name, s.Data["ciphertext"].(string)); len(got) != 64 {
		t.Errorf("512-bit datakey is %d bytes", len(got))
	}

	_, err := e.write("datakey/plaintext/"+name, map[string]any{"bits": 100})
	wantError(t, err, http.StatusBadRequest, "invalid bit length")
	_, err = e.write("datakey/raw/"+name, nil)
	wantError(t, err, http.StatusBadRequest, "Invalid path, must be 'plaintext' or 'wrapped'")
}

func TestRotateAndRewrap(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)
	msg := random(t, 48)
	ct1 := e.encrypt(name, msg)

	s := e.mustWrite("keys/"+name+"/rotate", nil)
	if num(t, s.Data["latest_version"]) != 2 {
		t.Fatalf("latest_version after rotate: %v", s.Data["latest_version"])
	}
	if ct := e.encrypt(name, msg); !strings.HasPrefix(ct, "vault:v2:") {
		t.Errorf("encrypt after rotate gave %q, want vault:v2:", ct)
	}

	s = e.mustWrite("rewrap/"+name, map[string]any{"ciphertext": ct1})
	ct2 := s.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct2, "vault:v2:") || num(t, s.Data["key_version"]) != 2 {
		t.Errorf("rewrap gave %q version %v", ct2, s.Data["key_version"])
	}
	for _, ct := range []string{ct1, ct2} {
		if got := e.decrypt(name, ct); !bytes.Equal(got, msg) {
			t.Errorf("decrypt %s… gave %x", ct[:9], got)
		}
	}

	// Rewrap in a batch reports bad items in place, with a 200.
	res := e.mustWrite("rewrap/"+name, map[string]any{"batch_input": []any{
		map[string]any{"ciphertext": ct1}, map[string]any{"ciphertext": "vault:v9:AAAA"},
	}}).Data["batch_results"].([]any)
	if first := res[0].(map[string]any); !strings.HasPrefix(first["ciphertext"].(string), "vault:v2:") {
		t.Errorf("batch rewrap item 0: %v", first)
	}
	if second := res[1].(map[string]any); !strings.Contains(fmt.Sprint(second["error"]), "invalid ciphertext: version is too new") {
		t.Errorf("batch rewrap item 1: %v", second)
	}
}

func TestMinDecryptionVersion(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)
	msg := []byte("old session secret")
	ct1 := e.encrypt(name, msg)
	e.mustWrite("keys/"+name+"/rotate", nil)
	ct2 := e.encrypt(name, msg)

	s := e.mustWrite("keys/"+name+"/config", map[string]any{"min_decryption_version": 2})
	if num(t, s.Data["min_decryption_version"]) != 2 {
		t.Errorf("config answered min_decryption_version %v", s.Data["min_decryption_version"])
	}
	const tooOld = "ciphertext or signature version is disallowed by policy (too old)"
	_, err := e.write("decrypt/"+name, map[string]any{"ciphertext": ct1})
	wantError(t, err, http.StatusBadRequest, tooOld)
	_, err = e.write("rewrap/"+name, map[string]any{"ciphertext": ct1})
	wantError(t, err, http.StatusBadRequest, tooOld)
	if got := e.decrypt(name, ct2); !bytes.Equal(got, msg) {
		t.Errorf("v2 decrypt gave %q", got)
	}

	_, err = e.write("keys/"+name+"/config", map[string]any{"min_decryption_version": 3})
	wantError(t, err, http.StatusBadRequest, "cannot set min decryption version of 3, latest key version is 2")
	_, err = e.write("keys/"+name+"/config", map[string]any{"min_encryption_version": 1})
	wantError(t, err, http.StatusBadRequest, "min encryption version of 1 must be greater than or equal to min decryption version of 2")
	if d := e.mustRead("keys/" + name).Data; num(t, d["min_encryption_version"]) != 0 {
		t.Errorf("a refused config changed min_encryption_version to %v", d["min_encryption_version"])
	}
}

func TestDeleteNeedsDeletionAllowed(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)

	_, err := e.c.Logical().Delete(e.mount + "/keys/" + name)
	wantError(t, err, http.StatusBadRequest, "error deleting policy "+name+": deletion is not allowed for this key")
	e.mustRead("keys/" + name)

	e.mustWrite("keys/"+name+"/config", map[string]any{"deletion_allowed": true})
	if _, err := e.c.Logical().Delete(e.mount + "/keys/" + name); err != nil {
		t.Fatalf("delete with deletion_allowed: %v", err)
	}
	if s, err := e.c.Logical().Read(e.mount + "/keys/" + name); s != nil || err != nil {
		t.Errorf("read after delete: %v, %v", s, err)
	}
	_, err = e.c.Logical().Delete(e.mount + "/keys/" + name)
	wantError(t, err, http.StatusBadRequest, "could not delete key; not found")
}

func TestPermissionDenied(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)

	_, err := e.client("not-a-token").Logical().Write(e.mount+"/encrypt/"+name, map[string]any{"plaintext": b64([]byte("x"))})
	wantError(t, err, http.StatusForbidden, "permission denied")
	wantError(t, err, http.StatusForbidden, "invalid token")

	status, body := e.raw(http.MethodPut, e.mount+"/encrypt/"+name, "", map[string]any{"plaintext": ""})
	if status != http.StatusForbidden || !strings.Contains(body, "permission denied") {
		t.Errorf("no token: %d %s", status, body)
	}
}

func TestMissingKey(t *testing.T) {
	e := setup(t)
	missing := e.keyName()
	ct := "vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

	for path, data := range map[string]map[string]any{
		"decrypt/" + missing:           {"ciphertext": ct},
		"rewrap/" + missing:            {"ciphertext": ct},
		"datakey/plaintext/" + missing: nil,
	} {
		_, err := e.write(path, data)
		wantError(t, err, http.StatusBadRequest, "encryption key not found")
	}
	_, err := e.write("keys/"+missing+"/rotate", nil)
	wantError(t, err, http.StatusBadRequest, "key not found")

	// Exact bytes, as a client that parses the body sees them.
	status, body := e.raw(http.MethodPut, e.mount+"/decrypt/"+missing, e.token, map[string]any{"ciphertext": ct})
	if status != http.StatusBadRequest || body != `{"errors":["encryption key not found"]}` {
		t.Errorf("decrypt of a missing key: %d %s", status, body)
	}
	status, body = e.raw(http.MethodGet, e.mount+"/keys/"+missing, e.token, nil)
	if status != http.StatusNotFound || body != `{"errors":[]}` {
		t.Errorf("read of a missing key: %d %s", status, body)
	}

	// Encrypt creates a missing key for a token with "create" (root has
	// it), unless config/keys disables upsert.
	upserted := e.keyName()
	e.deleteAtEnd(upserted)
	s := e.mustWrite("encrypt/"+upserted, map[string]any{"plaintext": b64([]byte("x"))})
	if num(t, s.Data["key_version"]) != 1 || e.mustRead("keys/" + upserted).Data["type"] != "aes256-gcm96" {
		t.Errorf("encrypt did not create an aes256-gcm96 key")
	}
	e.mustWrite("config/keys", map[string]any{"disable_upsert": true})
	t.Cleanup(func() { _, _ = e.write("config/keys", map[string]any{"disable_upsert": false}) })
	_, err = e.write("encrypt/"+missing, map[string]any{"plaintext": b64([]byte("x"))})
	wantError(t, err, http.StatusBadRequest, "encryption key not found")
}

// appRole returns credentials for an AppRole login; against a real Vault it
// configures one through the API.
func (e *env) appRole() (roleID, secretID string) {
	e.t.Helper()
	if e.srv != nil {
		r := e.srv.AppRole()
		return r.RoleID, r.SecretID
	}
	c := e.c
	err := c.Sys().EnableAuthWithOptions("approle", &api.EnableAuthOptions{Type: "approle"})
	if err != nil && !strings.Contains(err.Error(), "path is already in use") {
		e.t.Fatalf("enable approle: %v", err)
	}
	policy := fmt.Sprintf("path %q {\n  capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"]\n}\n", e.mount+"/*")
	if err := c.Sys().PutPolicy("transittest", policy); err != nil {
		e.t.Fatalf("put policy: %v", err)
	}
	if _, err := c.Logical().Write("auth/approle/role/transittest", map[string]any{
		"token_policies": "transittest", "token_ttl": "1h", "token_max_ttl": "2h",
	}); err != nil {
		e.t.Fatalf("write role: %v", err)
	}
	s, err := c.Logical().Read("auth/approle/role/transittest/role-id")
	if err != nil || s == nil {
		e.t.Fatalf("read role-id: %v", err)
	}
	roleID = s.Data["role_id"].(string)
	s, err = c.Logical().Write("auth/approle/role/transittest/secret-id", nil)
	if err != nil {
		e.t.Fatalf("write secret-id: %v", err)
	}
	return roleID, s.Data["secret_id"].(string)
}

func (e *env) login(roleID, secretID string) *api.Secret {
	e.t.Helper()
	s, err := e.client("").Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	if err != nil {
		e.t.Fatalf("approle login: %v", err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		e.t.Fatalf("approle login gave no token: %+v", s)
	}
	return s
}

func TestAppRoleLogin(t *testing.T) {
	e := setup(t)
	name := e.newKey("aes256-gcm96", nil)
	roleID, secretID := e.appRole()

	s := e.login(roleID, secretID)
	if !s.Auth.Renewable || s.Auth.LeaseDuration <= 0 {
		t.Errorf("login auth: renewable %v lease %d", s.Auth.Renewable, s.Auth.LeaseDuration)
	}
	c := e.client(s.Auth.ClientToken)
	msg := []byte("via approle")
	out, err := c.Logical().Write(e.mount+"/encrypt/"+name, map[string]any{"plaintext": b64(msg)})
	if err != nil {
		t.Fatalf("encrypt with the approle token: %v", err)
	}
	if got := e.decrypt(name, out.Data["ciphertext"].(string)); !bytes.Equal(got, msg) {
		t.Errorf("decrypt gave %q", got)
	}

	_, err = e.client("").Logical().Write("auth/approle/login", map[string]any{"role_id": roleID, "secret_id": "wrong"})
	wantError(t, err, http.StatusBadRequest, "invalid role or secret ID")
}

func TestTokenRenewSelf(t *testing.T) {
	e := setup(t)
	roleID, secretID := e.appRole()
	login := e.login(roleID, secretID)
	c := e.client(login.Auth.ClientToken)

	s, err := c.Auth().Token().RenewSelf(600)
	if err != nil {
		t.Fatalf("renew-self: %v", err)
	}
	if s.Auth == nil || s.Auth.LeaseDuration != 600 || !s.Auth.Renewable || s.Auth.ClientToken != login.Auth.ClientToken {
		t.Errorf("renew-self auth: %+v", s.Auth)
	}
	s, err = c.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatalf("lookup-self: %v", err)
	}
	if ttl := num(t, s.Data["ttl"]); ttl < 590 || ttl > 600 {
		t.Errorf("ttl after renewing for 600s: %d", ttl)
	}

	// The client's LifetimeWatcher renews at once, then before expiry.
	w, err := c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: login, Increment: 300})
	if err != nil {
		t.Fatal(err)
	}
	go w.Start()
	defer w.Stop()
	select {
	case r := <-w.RenewCh():
		if r.Secret.Auth.LeaseDuration != 300 {
			t.Errorf("watcher renewed for %ds, want 300", r.Secret.Auth.LeaseDuration)
		}
	case err := <-w.DoneCh():
		t.Fatalf("watcher stopped: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("watcher did not renew")
	}
}

// Sealing at run time is the test server's; a real Vault cannot be sealed
// and unsealed by a test.
func TestSealed(t *testing.T) {
	e := onServer(t, transittest.Options{})
	name := e.newKey("aes256-gcm96", nil)
	msg := []byte("before the seal")
	ct := e.encrypt(name, msg)

	e.srv.Seal()
	_, err := e.write("encrypt/"+name, map[string]any{"plaintext": b64(msg)})
	wantError(t, err, http.StatusServiceUnavailable, "Vault is sealed")
	status, body := e.raw(http.MethodPut, e.mount+"/decrypt/"+name, e.token, map[string]any{"ciphertext": ct})
	if status != http.StatusServiceUnavailable || body != `{"errors":["Vault is sealed"]}` {
		t.Errorf("sealed decrypt: %d %s", status, body)
	}
	h, err := e.c.Sys().Health()
	if err != nil || !h.Sealed {
		t.Errorf("health while sealed: %+v, %v", h, err)
	}
	if status, _ := e.raw(http.MethodGet, "sys/health", "", nil); status != http.StatusServiceUnavailable {
		t.Errorf("sys/health while sealed: %d, want 503", status)
	}
	if ss, err := e.c.Sys().SealStatus(); err != nil || !ss.Sealed {
		t.Errorf("seal-status while sealed: %+v, %v", ss, err)
	}

	e.srv.Unseal()
	if status, _ := e.raw(http.MethodGet, "sys/health", "", nil); status != http.StatusOK {
		t.Errorf("sys/health after unseal: %d, want 200", status)
	}
	if got := e.decrypt(name, ct); !bytes.Equal(got, msg) {
		t.Errorf("after unseal decrypt gave %q", got)
	}
}

// Request counts are the test server's, for tests that a client does not
// storm a failing Vault.
func TestRequestCounts(t *testing.T) {
	e := onServer(t, transittest.Options{})
	name := e.newKey("aes256-gcm96", nil)
	e.srv.ResetRequests()

	for range 3 {
		e.encrypt(name, []byte("x"))
	}
	if n := e.srv.Requests(e.mount + "/encrypt/" + name); n != 3 {
		t.Errorf("Requests = %d after 3 encrypts", n)
	}
	if n := e.srv.Requests("/v1/" + e.mount + "/encrypt/" + name); n != 3 {
		t.Errorf("Requests with /v1/ = %d", n)
	}

	// Rejected requests count: a client that does not retry makes one, the
	// api client's default policy retries a 503 twice.
	e.srv.Seal()
	e.srv.ResetRequests()
	_, _ = e.write("encrypt/"+name, map[string]any{"plaintext": ""})
	if n := e.srv.Requests(e.mount + "/encrypt/" + name); n != 1 {
		t.Errorf("no-retry client made %d requests to a sealed server", n)
	}
	cfg := api.DefaultConfig()
	cfg.Address, cfg.MinRetryWait, cfg.MaxRetryWait = e.addr, time.Millisecond, 5*time.Millisecond
	retrying, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	retrying.SetToken(e.token)
	_, _ = retrying.Logical().Write(e.mount+"/encrypt/"+name, map[string]any{"plaintext": ""})
	if n := e.srv.Requests(e.mount + "/encrypt/" + name); n != 1+1+cfg.MaxRetries {
		t.Errorf("retrying client: %d requests in all, want %d", n, 2+cfg.MaxRetries)
	}
	if n := e.srv.Requests(""); n != 2+cfg.MaxRetries {
		t.Errorf("Requests(\"\") = %d", n)
	}
}

// Namespaces are Vault Enterprise; the test server keeps keys per
// X-Vault-Namespace.
func TestNamespaces(t *testing.T) {
	e := onServer(t, transittest.Options{})
	teamA := e.c.WithNamespace("team-a")
	if _, err := teamA.Logical().Write(e.mount+"/keys/shared", map[string]any{"type": "aes256-gcm96"}); err != nil {
		t.Fatal(err)
	}
	s, err := teamA.Logical().Write(e.mount+"/encrypt/shared", map[string]any{"plaintext": b64([]byte("a"))})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*api.Client{e.c, e.c.WithNamespace("team-b")} {
		if s, err := c.Logical().Read(e.mount + "/keys/shared"); s != nil || err != nil {
			t.Errorf("namespace %q sees team-a's key: %v, %v", c.Namespace(), s, err)
		}
	}
	_, err = e.write("decrypt/shared", map[string]any{"ciphertext": s.Data["ciphertext"]})
	wantError(t, err, http.StatusBadRequest, "encryption key not found")
}

// Token policies are the test server's AppRole option; against Vault they
// are ACL policies.
func TestAppRolePolicy(t *testing.T) {
	e := onServer(t, transittest.Options{AppRole: transittest.AppRole{
		RoleID: "ferry", SecretID: "s3cret",
		Policy: transittest.Policy{
			"transit/encrypt/*": {"update"},
			"transit/decrypt/+": {"update"},
		},
	}})
	name := e.newKey("aes256-gcm96", nil)
	c := e.client(e.login("ferry", "s3cret").Auth.ClientToken)

	s, err := c.Logical().Write("transit/encrypt/"+name, map[string]any{"plaintext": b64([]byte("x"))})
	if err != nil {
		t.Fatalf("encrypt with update: %v", err)
	}
	if _, err := c.Logical().Write("transit/decrypt/"+name, map[string]any{"ciphertext": s.Data["ciphertext"]}); err != nil {
		t.Fatalf("decrypt with update: %v", err)
	}
	// Without "create", encrypt on a missing key is denied rather than
	// creating it, as in Vault.
	_, err = c.Logical().Write("transit/encrypt/"+e.keyName(), map[string]any{"plaintext": b64([]byte("x"))})
	wantError(t, err, http.StatusForbidden, "permission denied")
	_, err = c.Logical().Read("transit/keys/" + name)
	wantError(t, err, http.StatusForbidden, "permission denied")
	if _, err := c.Auth().Token().LookupSelf(); err != nil {
		t.Errorf("lookup-self, which the default policy allows: %v", err)
	}
}

// Expiry needs a short TTL, which is the test server's option.
func TestTokenExpires(t *testing.T) {
	e := onServer(t, transittest.Options{
		AppRole:  transittest.AppRole{RoleID: "ferry", SecretID: "s3cret"},
		TokenTTL: time.Second, TokenMaxTTL: 2 * time.Second,
	})
	name := e.newKey("aes256-gcm96", nil)
	login := e.login("ferry", "s3cret")
	if login.Auth.LeaseDuration != 1 {
		t.Errorf("lease %d, want 1", login.Auth.LeaseDuration)
	}
	c := e.client(login.Auth.ClientToken)

	// Renewing past the max TTL is capped, with a warning.
	s, err := c.Auth().Token().RenewSelf(60)
	if err != nil {
		t.Fatal(err)
	}
	if s.Auth.LeaseDuration > 2 || len(s.Warnings) == 0 {
		t.Errorf("renew past max: lease %d warnings %q", s.Auth.LeaseDuration, s.Warnings)
	}
	_, err = e.c.Auth().Token().RenewSelf(60)
	wantError(t, err, http.StatusBadRequest, "invalid lease ID")

	time.Sleep(2100 * time.Millisecond)
	_, err = c.Logical().Write("transit/encrypt/"+name, map[string]any{"plaintext": ""})
	wantError(t, err, http.StatusForbidden, "invalid token")
}
