package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
)

// Errors callers branch on.
var (
	ErrUnreachable = errors.New("vault is unreachable")
	ErrSealed      = errors.New("vault is sealed")
	ErrDenied      = errors.New("vault denied the request")
	ErrKeyNotFound = errors.New("transit key not found")
	ErrTooOld      = errors.New("ciphertext version is too old for the key's min_decryption_version")
)

// Config says how to reach Vault. Empty fields fall back to the standard
// VAULT_* environment variables, as the vault CLI does.
type Config struct {
	Address   string
	Namespace string
	Mount     string // default "transit"
	// Token, or TokenFile, or AppRole.
	Token         string
	TokenFile     string
	AppRoleID     string
	AppSecretFile string
	CACert        string
	ClientCert    string
	ClientKey     string
	// MaxRetries bounds the retries of one request (default 2: at most 3
	// requests); Timeout bounds each request (default 30 s).
	MaxRetries int
	Timeout    time.Duration
	Logger     hclog.Logger
	// Observe, when set, is told of every request to Vault: its
	// operation ("encrypt", "decrypt", "rewrap", "read-key", ...) and
	// error (for metrics).
	Observe func(op string, err error)
}

// observe reports one request to Vault.
func (t *Transit) observe(op string, err error) {
	if t.cfg.Observe != nil {
		t.cfg.Observe(op, err)
	}
}

// Transit is a client of one Transit mount.
type Transit struct {
	c     *api.Client
	cfg   Config
	log   hclog.Logger
	mount string
	stop  context.CancelFunc
	done  chan struct{}
}

// New makes a client and logs in.
func New(ctx context.Context, cfg Config) (*Transit, error) {
	if cfg.Mount == "" {
		cfg.Mount = "transit"
	}
	if cfg.MaxRetries <= 0 {
		cfg.MaxRetries = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ac := api.DefaultConfig() // reads VAULT_ADDR, VAULT_CACERT, ...
	if ac.Error != nil {
		return nil, fmt.Errorf("vault client config: %w", ac.Error)
	}
	if cfg.Address != "" {
		ac.Address = cfg.Address
	}
	ac.MaxRetries = cfg.MaxRetries
	ac.MinRetryWait, ac.MaxRetryWait = 250*time.Millisecond, 2*time.Second
	ac.Timeout = cfg.Timeout
	if cfg.CACert != "" || cfg.ClientCert != "" {
		if err := ac.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert, ClientCert: cfg.ClientCert, ClientKey: cfg.ClientKey}); err != nil {
			return nil, fmt.Errorf("vault tls config: %w", err)
		}
	}
	c, err := api.NewClient(ac) // reads VAULT_TOKEN, VAULT_NAMESPACE
	if err != nil {
		return nil, fmt.Errorf("vault client: %w", err)
	}
	if cfg.Namespace != "" {
		c.SetNamespace(cfg.Namespace)
	}
	t := &Transit{c: c, cfg: cfg, log: cfg.Logger.Named("vault"), mount: strings.Trim(cfg.Mount, "/")}
	switch {
	case cfg.AppRoleID != "":
		if err := t.loginAppRole(ctx); err != nil {
			return nil, err
		}
	case cfg.Token != "":
		c.SetToken(cfg.Token)
	case cfg.TokenFile != "":
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("vault token file: %w", err)
		}
		c.SetToken(strings.TrimSpace(string(b)))
	}
	if c.Token() == "" {
		return nil, fmt.Errorf("no Vault token: set token_file or approle in the controller's vault block, or VAULT_TOKEN")
	}
	wctx, stop := context.WithCancel(context.Background())
	t.stop, t.done = stop, make(chan struct{})
	go t.keepToken(wctx)
	return t, nil
}

// Close stops renewing the token.
func (t *Transit) Close() {
	t.stop()
	<-t.done
}

// keepToken renews the token before it expires (LifetimeWatcher) and,
// with AppRole, logs in afresh when it can no longer be renewed. A token
// that does not expire (root, or ttl 0) needs nothing.
func (t *Transit) keepToken(ctx context.Context) {
	defer close(t.done)
	backoff := time.Second
	for ctx.Err() == nil {
		err := t.watchOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = time.Second
		}
		if t.cfg.AppRoleID != "" {
			if lerr := t.loginAppRole(ctx); lerr != nil {
				t.log.Warn("vault login failed; retrying", "error", lerr, "in", backoff)
			} else {
				t.log.Info("logged in to vault afresh with AppRole")
				continue
			}
		} else if err != nil {
			t.log.Warn("vault token renewal failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// watchOnce renews the current token until it can no longer be renewed.
func (t *Transit) watchOnce(ctx context.Context) error {
	self, err := t.c.Auth().Token().LookupSelfWithContext(ctx)
	if err != nil {
		return t.wrap(err, "look up its token", "")
	}
	ttl, _ := self.TokenTTL()
	renewable, _ := self.TokenIsRenewable()
	if ttl <= 0 {
		<-ctx.Done() // never expires
		return nil
	}
	if !renewable {
		// Wait until shortly before it expires, then log in afresh.
		select {
		case <-ctx.Done():
		case <-time.After(ttl * 4 / 5):
		}
		return nil
	}
	w, err := t.c.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: &api.Secret{Auth: &api.SecretAuth{
		ClientToken: t.c.Token(), Renewable: true, LeaseDuration: int(ttl.Seconds()),
	}}})
	if err != nil {
		return err
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-w.DoneCh():
			return err // nil when the token reached its max TTL
		case r := <-w.RenewCh():
			t.log.Debug("renewed the vault token", "ttl", r.Secret.Auth.LeaseDuration)
		}
	}
}

func (t *Transit) loginAppRole(ctx context.Context) error {
	secret, err := os.ReadFile(t.cfg.AppSecretFile)
	if err != nil {
		return fmt.Errorf("vault approle secret id file: %w", err)
	}
	resp, err := t.c.Logical().WriteWithContext(ctx, "auth/approle/login", map[string]any{
		"role_id": t.cfg.AppRoleID, "secret_id": strings.TrimSpace(string(secret)),
	})
	t.observe("login", err)
	if err != nil {
		return t.wrap(err, "log in with AppRole", "")
	}
	if resp == nil || resp.Auth == nil || resp.Auth.ClientToken == "" {
		return fmt.Errorf("vault at %s: AppRole login returned no token", t.c.Address())
	}
	t.c.SetToken(resp.Auth.ClientToken)
	return nil
}

// wrap turns a vault/api error into one that names Vault, the key and the
// action, and matches the sentinels.
func (t *Transit) wrap(err error, action, key string) error {
	what := fmt.Sprintf("vault at %s: %s", t.c.Address(), action)
	if key != "" {
		what += fmt.Sprintf(" with transit key %q (mount %q)", key, t.mount)
	}
	var re *api.ResponseError
	if errors.As(err, &re) {
		msg := strings.Join(re.Errors, "; ")
		switch {
		case re.StatusCode == http.StatusServiceUnavailable && strings.Contains(msg, "sealed"):
			return fmt.Errorf("%s: %w: unseal Vault, then run the session again", what, ErrSealed)
		case re.StatusCode == http.StatusForbidden:
			return fmt.Errorf("%s: %w (%s): check the controller's Vault token or AppRole policy", what, ErrDenied, oneLine(msg))
		case strings.Contains(msg, "encryption key not found") || strings.Contains(msg, "key not found") || re.StatusCode == http.StatusNotFound:
			return fmt.Errorf("%s: %w: the key was deleted or never created; points wrapped only by it need the recovery key", what, ErrKeyNotFound)
		case strings.Contains(msg, "too old"):
			return fmt.Errorf("%s: %w: run `controller key rewrap` before raising min_decryption_version", what, ErrTooOld)
		}
		return fmt.Errorf("%s: %s (HTTP %d)", what, oneLine(msg), re.StatusCode)
	}
	return fmt.Errorf("%s: %w (%v): check that Vault runs and VAULT_ADDR is right", what, ErrUnreachable, err)
}

// firstItemError returns the first error of a batch's items, if any.
func firstItemError(data map[string]any) string {
	items, _ := data["batch_results"].([]any)
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			if e, _ := m["error"].(string); e != "" {
				return e
			}
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// EnsureKey creates the Transit key when it does not exist. typ is a
// Transit key type (aes256-gcm96, rsa-4096).
func (t *Transit) EnsureKey(ctx context.Context, name, typ string) error {
	sec, err := t.c.Logical().ReadWithContext(ctx, t.mount+"/keys/"+name)
	t.observe("read-key", err)
	if err != nil {
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusNotFound {
			return t.wrap(err, "read", name)
		}
	}
	if sec != nil && sec.Data != nil {
		if have, _ := sec.Data["type"].(string); typ != "" && have != typ {
			return fmt.Errorf("vault at %s: transit key %q is of type %s, not %s", t.c.Address(), name, have, typ)
		}
		return nil
	}
	_, err = t.c.Logical().WriteWithContext(ctx, t.mount+"/keys/"+name, map[string]any{"type": typ})
	t.observe("create-key", err)
	if err != nil {
		return t.wrap(err, "create", name)
	}
	t.log.Info("created transit key", "key", name, "type", typ)
	return nil
}

// Wrap encrypts secrets with the key, in one request.
func (t *Transit) Wrap(ctx context.Context, name string, secrets [][]byte) ([]string, error) {
	batch := make([]map[string]any, len(secrets))
	for i, s := range secrets {
		batch[i] = map[string]any{"plaintext": base64.StdEncoding.EncodeToString(s)}
	}
	out, err := t.batch(ctx, "encrypt", name, batch, "ciphertext")
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Unwrap decrypts wrapped secrets, in one request.
func (t *Transit) Unwrap(ctx context.Context, name string, wrapped []string) ([][]byte, error) {
	batch := make([]map[string]any, len(wrapped))
	for i, w := range wrapped {
		batch[i] = map[string]any{"ciphertext": w}
	}
	out, err := t.batch(ctx, "decrypt", name, batch, "plaintext")
	if err != nil {
		return nil, err
	}
	res := make([][]byte, len(out))
	for i, p := range out {
		if res[i], err = base64.StdEncoding.DecodeString(p); err != nil {
			return nil, fmt.Errorf("vault at %s: decrypt with %q returned malformed plaintext", t.c.Address(), name)
		}
	}
	return res, nil
}

// Rewrap re-encrypts wrapped secrets under the key's latest version
// without Vault returning the plaintext, in one request.
func (t *Transit) Rewrap(ctx context.Context, name string, wrapped []string) ([]string, error) {
	batch := make([]map[string]any, len(wrapped))
	for i, w := range wrapped {
		batch[i] = map[string]any{"ciphertext": w}
	}
	return t.batch(ctx, "rewrap", name, batch, "ciphertext")
}

// Rotate adds a new version to the key.
func (t *Transit) Rotate(ctx context.Context, name string) error {
	_, err := t.c.Logical().WriteWithContext(ctx, t.mount+"/keys/"+name+"/rotate", nil)
	t.observe("rotate", err)
	if err != nil {
		return t.wrap(err, "rotate", name)
	}
	return nil
}

// batch runs one batch request. An AppRole client whose token Vault
// refuses (expired between renewals, or revoked) logs in again once and
// retries, so a token's end never fails a session.
func (t *Transit) batch(ctx context.Context, op, name string, batch []map[string]any, field string) ([]string, error) {
	out, err := t.batchOnce(ctx, op, name, batch, field)
	if errors.Is(err, ErrDenied) && t.cfg.AppRoleID != "" {
		if lerr := t.loginAppRole(ctx); lerr == nil {
			t.log.Info("vault refused the token; logged in again with AppRole")
			return t.batchOnce(ctx, op, name, batch, field)
		}
	}
	return out, err
}

func (t *Transit) batchOnce(ctx context.Context, op, name string, batch []map[string]any, field string) ([]string, error) {
	if len(batch) == 0 {
		return nil, nil
	}
	// Raw, because when every item of a batch fails Vault answers 400
	// with the reasons in the items, not in the errors list.
	body, err := json.Marshal(map[string]any{"batch_input": batch})
	if err != nil {
		return nil, err
	}
	resp, err := t.c.Logical().WriteRawWithContext(ctx, t.mount+"/"+op+"/"+name, body)
	t.observe(op, err)
	var sec api.Secret
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
		derr := resp.DecodeJSON(&sec)
		if err == nil && derr != nil {
			return nil, fmt.Errorf("vault at %s: %s with %q: malformed answer: %v", t.c.Address(), op, name, derr)
		}
	}
	if err != nil {
		if msg := firstItemError(sec.Data); msg != "" {
			return nil, t.wrap(&api.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{msg}}, op, name)
		}
		return nil, t.wrap(err, op, name)
	}
	if sec.Data == nil {
		return nil, fmt.Errorf("vault at %s: %s with %q returned nothing", t.c.Address(), op, name)
	}
	items, _ := sec.Data["batch_results"].([]any)
	if len(items) != len(batch) {
		return nil, fmt.Errorf("vault at %s: %s with %q returned %d results for %d items", t.c.Address(), op, name, len(items), len(batch))
	}
	out := make([]string, len(items))
	for i, it := range items {
		m, _ := it.(map[string]any)
		if e, _ := m["error"].(string); e != "" {
			return nil, t.wrap(&api.ResponseError{StatusCode: http.StatusBadRequest, Errors: []string{e}}, op, name)
		}
		v, _ := m[field].(string)
		if v == "" {
			return nil, fmt.Errorf("vault at %s: %s with %q: item %d has no %s", t.c.Address(), op, name, i, field)
		}
		out[i] = v
	}
	return out, nil
}

// Mount is the Transit mount path.
func (t *Transit) Mount() string { return t.mount }

// Namespace is the Vault namespace, "" for none.
func (t *Transit) Namespace() string { return t.c.Namespace() }

// Address is the Vault address, for messages.
func (t *Transit) Address() string { return t.c.Address() }

// CheckKey makes sure the key exists, so that a deleted key fails a session
// instead of Vault creating a new key of that name on the next encrypt.
func (t *Transit) CheckKey(ctx context.Context, name string) error {
	sec, err := t.c.Logical().ReadWithContext(ctx, t.mount+"/keys/"+name)
	t.observe("read-key", err)
	if err != nil {
		var re *api.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			return fmt.Errorf("vault at %s: transit key %q (mount %q): %w: it was deleted; restore it in Vault, or point the job at another key with `controller job update --kms-key`", t.c.Address(), name, t.mount, ErrKeyNotFound)
		}
		return t.wrap(err, "read", name)
	}
	if sec == nil || sec.Data == nil {
		return fmt.Errorf("vault at %s: transit key %q (mount %q): %w: it was deleted; restore it in Vault, or point the job at another key with `controller job update --kms-key`", t.c.Address(), name, t.mount, ErrKeyNotFound)
	}
	return nil
}
