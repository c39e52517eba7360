package transittest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/helper/keysutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// engine is the Transit engine of one namespace: Vault's key engine over
// in-memory storage.
type engine struct {
	storage logical.Storage
	lm      *keysutil.LockManager

	mu            sync.Mutex
	disableUpsert bool
}

func newEngine() *engine {
	lm, err := keysutil.NewLockManager(true, 0)
	if err != nil {
		panic(err) // only a negative cache size fails
	}
	return &engine{storage: new(logical.InmemStorage), lm: lm}
}

func (e *engine) upsertDisabled() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.disableUpsert
}

// policy loads a key; nil when it does not exist. With the lock manager's
// cache on, the caller locks the returned policy itself.
func (e *engine) policy(ctx context.Context, name string) (*keysutil.Policy, error) {
	p, _, err := e.lm.GetPolicy(ctx, keysutil.PolicyRequest{Storage: e.storage, Name: name}, rand.Reader)
	return p, err
}

// nameRE is Vault's framework.GenericNameRegex.
var nameRE = regexp.MustCompile(`^\w(([\w-.@]+)?\w)?$`)

// transit routes a request under the mount; rest is the path after it.
func (s *Server) transit(req *request, rest string) response {
	ctx := req.r.Context()
	e := s.engineFor(req.ns)
	segs := strings.Split(rest, "/")
	aclPath := s.opts.Mount + "/" + rest

	// allow checks the token's policy. Encrypt is the one Transit path with
	// an existence check in Vault: on a missing key the write is a create.
	allow := func(op operation) bool { return req.tok.allowed(aclPath, op) }

	switch {
	case rest == "keys" && req.op == opList:
		if !allow(opList) {
			return permissionDenied()
		}
		return e.listKeys(ctx)

	case len(segs) == 2 && segs[0] == "keys" && nameRE.MatchString(segs[1]):
		if !allow(req.op) {
			return permissionDenied()
		}
		switch req.op {
		case opRead:
			return e.readKey(ctx, segs[1])
		case opUpdate:
			return e.writeKey(ctx, segs[1], req.data)
		case opDelete:
			return e.deleteKey(ctx, segs[1])
		}
		return unsupportedOperation()

	case len(segs) == 3 && segs[0] == "keys" && nameRE.MatchString(segs[1]) && (segs[2] == "config" || segs[2] == "rotate"):
		if req.op != opUpdate {
			return unsupportedOperation()
		}
		if !allow(opUpdate) {
			return permissionDenied()
		}
		if segs[2] == "config" {
			return e.configKey(ctx, segs[1], req.data)
		}
		return e.rotateKey(ctx, segs[1])

	case len(segs) == 2 && nameRE.MatchString(segs[1]) && (segs[0] == "encrypt" || segs[0] == "decrypt" || segs[0] == "rewrap"):
		if req.op != opUpdate {
			return unsupportedOperation()
		}
		op := opUpdate
		if segs[0] == "encrypt" {
			p, err := e.policy(ctx, segs[1])
			if err != nil {
				return internalError(err)
			}
			if p == nil {
				op = opCreate
			}
		}
		if !allow(op) {
			return permissionDenied()
		}
		switch segs[0] {
		case "encrypt":
			return e.encrypt(ctx, segs[1], req.data, op == opCreate)
		case "decrypt":
			return e.decrypt(ctx, segs[1], req.data)
		}
		return e.rewrap(ctx, segs[1], req.data)

	case len(segs) == 3 && segs[0] == "datakey" && nameRE.MatchString(segs[1]) && nameRE.MatchString(segs[2]):
		if req.op != opUpdate {
			return unsupportedOperation()
		}
		if !allow(opUpdate) {
			return permissionDenied()
		}
		return e.datakey(ctx, segs[1], segs[2], req.data)

	case (len(segs) == 3 || len(segs) == 4) && segs[0] == "export" && nameRE.MatchString(segs[1]) && nameRE.MatchString(segs[2]):
		if req.op != opRead {
			return unsupportedOperation()
		}
		if !allow(opRead) {
			return permissionDenied()
		}
		version := ""
		if len(segs) == 4 {
			version = segs[3]
		}
		return e.export(ctx, segs[1], segs[2], version)

	case rest == "config/keys":
		if req.op != opRead && req.op != opUpdate {
			return unsupportedOperation()
		}
		if !allow(req.op) {
			return permissionDenied()
		}
		return e.configKeys(req.op, req.data)
	}
	return unsupportedPath()
}

// keyTypes are the key types of Vault Community Edition, by API name.
var keyTypes = map[string]keysutil.KeyType{
	"aes128-gcm96":      keysutil.KeyType_AES128_GCM96,
	"aes256-gcm96":      keysutil.KeyType_AES256_GCM96,
	"chacha20-poly1305": keysutil.KeyType_ChaCha20_Poly1305,
	"ecdsa-p256":        keysutil.KeyType_ECDSA_P256,
	"ecdsa-p384":        keysutil.KeyType_ECDSA_P384,
	"ecdsa-p521":        keysutil.KeyType_ECDSA_P521,
	"ed25519":           keysutil.KeyType_ED25519,
	"rsa-2048":          keysutil.KeyType_RSA2048,
	"rsa-3072":          keysutil.KeyType_RSA3072,
	"rsa-4096":          keysutil.KeyType_RSA4096,
	"hmac":              keysutil.KeyType_HMAC,
}

func (e *engine) listKeys(ctx context.Context) response {
	names, err := e.storage.List(ctx, "policy/")
	if err != nil {
		return internalError(err)
	}
	if len(names) == 0 {
		return errorResponse(http.StatusNotFound)
	}
	return okResponse(map[string]any{"keys": names})
}

func (e *engine) readKey(ctx context.Context, name string) response {
	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return errorResponse(http.StatusNotFound)
	}
	p.Lock(false)
	defer p.Unlock()
	data, err := formatKey(p)
	if err != nil {
		return internalError(err)
	}
	return okResponse(data)
}

// writeKey is POST keys/:name: create the key, or report the existing one
// with a warning, as Vault does.
func (e *engine) writeKey(ctx context.Context, name string, d map[string]any) response {
	f := fields{d: d}
	derived := f.boolean("derived")
	convergent := f.boolean("convergent_encryption")
	exportable := f.boolean("exportable")
	allowPlaintextBackup := f.boolean("allow_plaintext_backup")
	typeName := f.str("type", "aes256-gcm96")
	keySize := f.integer("key_size", 0)
	autoRotate := f.duration("auto_rotate_period")
	if f.err != nil {
		return userError("%v", f.err)
	}
	if autoRotate != 0 && autoRotate < time.Hour {
		return userError("auto rotate period must be 0 to disable or at least an hour")
	}
	if !derived && convergent {
		return userError("convergent encryption requires derivation to be enabled")
	}
	kt, ok := keyTypes[typeName]
	if !ok {
		return userError("unknown key type %v", typeName)
	}
	if keySize != 0 {
		if kt != keysutil.KeyType_HMAC {
			return userError("key_size is not valid for algorithm %v", kt)
		}
		if keySize < keysutil.HmacMinKeySize || keySize > keysutil.HmacMaxKeySize {
			return userError("invalid key_size %d", keySize)
		}
	}
	p, upserted, err := e.lm.GetPolicy(ctx, keysutil.PolicyRequest{
		Upsert:               true,
		Storage:              e.storage,
		Name:                 name,
		KeyType:              kt,
		KeySize:              keySize,
		Derived:              derived,
		Convergent:           convergent,
		Exportable:           exportable,
		AllowPlaintextBackup: allowPlaintextBackup,
		AutoRotatePeriod:     autoRotate,
	}, rand.Reader)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return internalError(errors.New("error generating key: returned policy was nil"))
	}
	p.Lock(false)
	defer p.Unlock()
	data, err := formatKey(p)
	if err != nil {
		return internalError(err)
	}
	var warnings []string
	if !upserted {
		warnings = append(warnings, fmt.Sprintf("key %s already existed", name))
	}
	return okResponse(data, warnings...)
}

func (e *engine) deleteKey(ctx context.Context, name string) response {
	if err := e.lm.DeletePolicy(ctx, e.storage, name); err != nil {
		return userError("error deleting policy %s: %s", name, err)
	}
	return noContent()
}

// configKey is keys/:name/config, with Vault's rules for the minimum
// versions.
func (e *engine) configKey(ctx context.Context, name string, d map[string]any) response {
	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("no existing key named %s could be found", name)
	}
	p.Lock(true)
	defer p.Unlock()

	f := fields{d: d}
	minDec, hasMinDec, err := intField(d, "min_decryption_version")
	f.keep(err)
	minEnc, hasMinEnc, err := intField(d, "min_encryption_version")
	f.keep(err)
	deletion, hasDeletion, err := boolField(d, "deletion_allowed")
	f.keep(err)
	exportable, _, err := boolField(d, "exportable")
	f.keep(err)
	backup, _, err := boolField(d, "allow_plaintext_backup")
	f.keep(err)
	autoRotate, hasAutoRotate, err := durationField(d, "auto_rotate_period")
	f.keep(err)
	if f.err != nil {
		return userError("%v", f.err)
	}

	// Work on a copy of the settings so that a refused change leaves the
	// cached policy as it was.
	next := struct {
		minDec, minEnc       int
		deletion, exportable bool
		backup               bool
	}{p.MinDecryptionVersion, p.MinEncryptionVersion, p.DeletionAllowed, p.Exportable, p.AllowPlaintextBackup}
	nextRotate := p.AutoRotatePeriod
	var warning string
	if hasMinDec {
		if minDec < 0 {
			return userError("min decryption version cannot be negative")
		}
		if minDec == 0 {
			minDec = 1
			warning = "since Vault 0.3, transit key numbering starts at 1; forcing minimum to 1"
		}
		if minDec != next.minDec {
			if minDec > p.LatestVersion {
				return userError("cannot set min decryption version of %d, latest key version is %d", minDec, p.LatestVersion)
			}
			next.minDec = minDec
		}
	}
	if hasMinEnc {
		if minEnc < 0 {
			return userError("min encryption version cannot be negative")
		}
		if minEnc != next.minEnc {
			if minEnc > p.LatestVersion {
				return userError("cannot set min encryption version of %d, latest key version is %d", minEnc, p.LatestVersion)
			}
			next.minEnc = minEnc
		}
	}
	if next.minEnc > 0 && next.minEnc < next.minDec {
		return userError("cannot set min encryption/decryption values; min encryption version of %d must be greater than or equal to min decryption version of %d", next.minEnc, next.minDec)
	}
	if hasDeletion {
		next.deletion = deletion
	}
	if next.minDec == 0 {
		next.minDec = 1
	}
	// Exportable and plaintext backup can be turned on, never off.
	next.exportable = next.exportable || exportable
	next.backup = next.backup || backup
	if hasAutoRotate {
		if autoRotate != 0 && autoRotate < time.Hour {
			return userError("auto rotate period must be 0 to disable or at least an hour")
		}
		nextRotate = autoRotate
	}
	changed := next.minDec != p.MinDecryptionVersion || next.minEnc != p.MinEncryptionVersion ||
		next.deletion != p.DeletionAllowed || next.exportable != p.Exportable ||
		next.backup != p.AllowPlaintextBackup || nextRotate != p.AutoRotatePeriod
	if changed {
		switch {
		case p.MinAvailableVersion > next.minEnc:
			return userError("min encryption version should not be less than min available version")
		case p.MinAvailableVersion > next.minDec:
			return userError("min decryption version should not be less then min available version")
		}
		old := next
		old.minDec, old.minEnc = p.MinDecryptionVersion, p.MinEncryptionVersion
		old.deletion, old.exportable, old.backup = p.DeletionAllowed, p.Exportable, p.AllowPlaintextBackup
		oldRotate := p.AutoRotatePeriod
		p.MinDecryptionVersion, p.MinEncryptionVersion = next.minDec, next.minEnc
		p.DeletionAllowed, p.Exportable, p.AllowPlaintextBackup = next.deletion, next.exportable, next.backup
		p.AutoRotatePeriod = nextRotate
		if err := p.Persist(ctx, e.storage); err != nil {
			p.MinDecryptionVersion, p.MinEncryptionVersion = old.minDec, old.minEnc
			p.DeletionAllowed, p.Exportable, p.AllowPlaintextBackup = old.deletion, old.exportable, old.backup
			p.AutoRotatePeriod = oldRotate
			return internalError(err)
		}
	}
	data, err := formatKey(p)
	if err != nil {
		return internalError(err)
	}
	if warning != "" {
		return okResponse(data, warning)
	}
	return okResponse(data)
}

func (e *engine) rotateKey(ctx context.Context, name string) response {
	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("key not found")
	}
	p.Lock(true)
	defer p.Unlock()
	if err := p.Rotate(ctx, e.storage, rand.Reader); err != nil {
		return internalError(err)
	}
	data, err := formatKey(p)
	if err != nil {
		return internalError(err)
	}
	return okResponse(data)
}

// configKeys is config/keys, the mount-wide switch that stops encrypt from
// creating missing keys.
func (e *engine) configKeys(op operation, d map[string]any) response {
	e.mu.Lock()
	defer e.mu.Unlock()
	if op == opUpdate {
		v, ok, err := boolField(d, "disable_upsert")
		if err != nil {
			return userError("%v", err)
		}
		if ok {
			e.disableUpsert = v
		}
	}
	return okResponse(map[string]any{"disable_upsert": e.disableUpsert})
}
