package transittest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/helper/errutil"
	"github.com/hashicorp/vault/sdk/helper/keysutil"
)

// batchItem is one entry of batch_input, or the single request.
type batchItem struct {
	context, plaintext, ciphertext, nonce string
	associatedData, reference             string
	paddingScheme, decryptPadding         string
	encryptPadding                        string
	keyVersion                            int
	decodedContext, decodedNonce          []byte
}

type encryptResult struct {
	Ciphertext string `json:"ciphertext,omitempty"`
	KeyVersion int    `json:"key_version,omitempty"`
	Error      string `json:"error,omitempty"`
	Reference  string `json:"reference"`
}

type decryptResult struct {
	Plaintext string `json:"plaintext"`
	Error     string `json:"error,omitempty"`
	Reference string `json:"reference"`
}

// items reads batch_input, or the single item from the top-level fields;
// batch reports which. A response is returned when the request is refused
// as a whole.
func items(d map[string]any, require string) (list []batchItem, batch bool, refused *response) {
	if raw, ok := d["batch_input"]; ok && raw != nil {
		list, err := parseBatch(raw, require)
		if err != nil {
			r := internalError(fmt.Errorf("failed to parse batch input: %w", err))
			return nil, true, &r
		}
		if len(list) == 0 {
			r := userError("missing batch input to process")
			return nil, true, &r
		}
		return list, true, nil
	}
	f := fields{d: d}
	it := batchItem{
		context:        f.str("context", ""),
		plaintext:      f.str("plaintext", ""),
		ciphertext:     f.str("ciphertext", ""),
		nonce:          f.str("nonce", ""),
		associatedData: f.str("associated_data", ""),
		paddingScheme:  f.str("padding_scheme", ""),
		decryptPadding: f.str("decrypt_padding_scheme", ""),
		encryptPadding: f.str("encrypt_padding_scheme", ""),
		keyVersion:     f.integer("key_version", 0),
	}
	if f.err != nil {
		r := userError("%v", f.err)
		return nil, false, &r
	}
	switch {
	case require == "plaintext" && !f.has("plaintext"):
		r := userError("missing plaintext to encrypt")
		return nil, false, &r
	case require == "ciphertext" && it.ciphertext == "":
		r := userError("missing ciphertext to decrypt")
		return nil, false, &r
	}
	return []batchItem{it}, false, nil
}

func parseBatch(raw any, require string) ([]batchItem, error) {
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("source data must be an array or slice, got %T", raw)
	}
	out := make([]batchItem, len(list))
	var errs []string
	for i, v := range list {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("[%d] expected a map, got '%T'", i, v)
		}
		str := func(key string, dst *string) {
			if x, ok := m[key]; ok && x != nil {
				s, ok := x.(string)
				if !ok {
					errs = append(errs, fmt.Sprintf("'[%d].%s' expected type 'string', got unconvertible type '%T'", i, key, x))
					return
				}
				*dst = s
			}
		}
		it := &out[i]
		str("context", &it.context)
		str("plaintext", &it.plaintext)
		str("ciphertext", &it.ciphertext)
		str("nonce", &it.nonce)
		str("associated_data", &it.associatedData)
		str("reference", &it.reference)
		str("padding_scheme", &it.paddingScheme)
		str("decrypt_padding_scheme", &it.decryptPadding)
		str("encrypt_padding_scheme", &it.encryptPadding)
		if _, ok := m["key_version"]; ok {
			n, _, err := intField(m, "key_version")
			if err != nil {
				errs = append(errs, fmt.Sprintf("'[%d].key_version' expected type 'int', got unconvertible type '%T'", i, m["key_version"]))
			}
			it.keyVersion = n
		}
		if _, ok := m[require]; !ok && require != "" {
			verb := "encrypt"
			if require == "ciphertext" {
				verb = "decrypt"
			}
			errs = append(errs, fmt.Sprintf("'[%d].%s' missing %s to %s", i, require, require, verb))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%d error(s) decoding:\n\n* %s", len(errs), strings.Join(errs, "\n* "))
	}
	return out, nil
}

// decode base64-decodes the context and nonce of each item, recording
// failures as item errors.
func decode(list []batchItem, setErr func(i int, msg string)) {
	for i := range list {
		it := &list[i]
		var err error
		if it.context != "" {
			if it.decodedContext, err = base64.StdEncoding.DecodeString(it.context); err != nil {
				setErr(i, err.Error())
				continue
			}
		}
		if it.nonce != "" {
			if it.decodedNonce, err = base64.StdEncoding.DecodeString(it.nonce); err != nil {
				setErr(i, err.Error())
			}
		}
	}
}

// contextMixed reports Vault's rule that context is in every item or in
// none.
func contextMixed(list []batchItem) bool {
	set := list[0].context != ""
	for _, it := range list {
		if (it.context != "") != set {
			return true
		}
	}
	return false
}

// nonceAllowed mirrors Vault: only version 1 convergent keys take a caller's
// nonce.
func nonceAllowed(p *keysutil.Policy) bool {
	switch p.Type {
	case keysutil.KeyType_AES128_GCM96, keysutil.KeyType_AES256_GCM96, keysutil.KeyType_ChaCha20_Poly1305:
		return p.ConvergentEncryption && p.ConvergentVersion == 1
	}
	return false
}

const errNonceNotAllowed = "provided nonce not allowed for this key"

// assocData hands associated_data to keysutil.
type assocData string

func (a assocData) GetAssociatedData() ([]byte, error) {
	return base64.StdEncoding.DecodeString(string(a))
}

// factories turns an item's padding scheme and associated data into
// keysutil's options; a non-empty string is the item's error.
func factories(p *keysutil.Policy, i int, padding, field, ad string) ([]any, string) {
	var out []any
	if padding != "" {
		ps, err := keysutil.ParsePaddingScheme(padding)
		if err == nil && !p.Type.PaddingSchemesSupported() {
			err = fmt.Errorf("unsupported key type %s for padding scheme", p.Type.String())
		}
		if err != nil {
			return nil, fmt.Sprintf("'[%d].%s' invalid: %s", i, field, err)
		}
		out = append(out, ps)
	}
	if ad != "" {
		if !p.Type.AssociatedDataSupported() {
			return nil, fmt.Sprintf("'[%d].associated_data' provided for non-AEAD cipher suite %v", i, p.Type.String())
		}
		out = append(out, assocData(ad))
	}
	return out, ""
}

// batchOutcome tracks item failures for Vault's batch status codes.
type batchOutcome struct {
	success, user, internal bool
}

func (o *batchOutcome) fail(err error) {
	var ie errutil.InternalError
	if errors.As(err, &ie) {
		o.internal = true
	} else {
		o.user = true
	}
}

// respond gives 200, or 400 (500) when an item failed on bad input (an
// internal error), unless partial_failure_response_code overrides a
// partial failure. The body carries the results either way.
func (o batchOutcome) respond(d map[string]any, data map[string]any, warnings []string) response {
	env := envelope(data, warnings)
	if !o.user && !o.internal {
		return response{status: http.StatusOK, body: env}
	}
	code := http.StatusBadRequest
	if !o.user {
		code = http.StatusInternalServerError
	}
	if override, ok, err := intField(d, "partial_failure_response_code"); ok && err == nil && o.success {
		if override < 1 || override > 599 {
			env.Warnings = append(env.Warnings, fmt.Sprintf("invalid HTTP response code override from partial_failure_response_code, reverting to %d", code))
		} else {
			code = override
		}
	}
	return response{status: code, body: env}
}

// singleError answers a non-batch request whose one item failed.
func singleError(o batchOutcome, msg string) response {
	if o.internal {
		return internalError(errors.New(msg))
	}
	return userError("%s", msg)
}

func (e *engine) encrypt(ctx context.Context, name string, d map[string]any, create bool) response {
	list, batch, refused := items(d, "plaintext")
	if refused != nil {
		return *refused
	}
	if contextMixed(list) {
		return userError("context should be set either in all the request blocks or in none")
	}
	results := make([]encryptResult, len(list))
	var out batchOutcome
	for i, it := range list {
		if _, err := base64.StdEncoding.DecodeString(it.plaintext); err != nil {
			results[i].Error = err.Error()
		}
	}
	decode(list, func(i int, msg string) {
		if results[i].Error == "" {
			results[i].Error = msg
		}
	})

	var p *keysutil.Policy
	var upserted bool
	var err error
	if create {
		f := fields{d: d}
		convergent := f.boolean("convergent_encryption")
		typeName := f.str("type", "aes256-gcm96")
		if f.err != nil {
			return userError("%v", f.err)
		}
		contextSet := list[0].context != ""
		if convergent && !contextSet {
			return userError("convergent encryption requires derivation to be enabled, so context is required")
		}
		var kt keysutil.KeyType
		switch typeName {
		case "aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "rsa-2048", "rsa-3072", "rsa-4096":
			kt = keyTypes[typeName]
		case "ecdsa-p256", "ecdsa-p384", "ecdsa-p521":
			return userError("key type %v not supported for this operation", typeName)
		default:
			return userError("unknown key type %v", typeName)
		}
		p, upserted, err = e.lm.GetPolicy(ctx, keysutil.PolicyRequest{
			Upsert:     !e.upsertDisabled(),
			Storage:    e.storage,
			Name:       name,
			KeyType:    kt,
			Derived:    contextSet,
			Convergent: convergent,
		}, rand.Reader)
	} else {
		p, err = e.policy(ctx, name)
	}
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("encryption key not found")
	}
	p.Lock(false)
	defer p.Unlock()

	for i, it := range list {
		if results[i].Error != "" {
			out.user = true
			continue
		}
		if it.nonce != "" && !nonceAllowed(p) {
			out.user = true
			results[i].Error = errNonceNotAllowed
			continue
		}
		fs, msg := factories(p, i, it.paddingScheme, "padding_scheme", it.associatedData)
		if msg != "" {
			out.user = true
			results[i].Error = msg
			continue
		}
		ct, err := p.EncryptWithFactory(it.keyVersion, it.decodedContext, it.decodedNonce, it.plaintext, fs...)
		if err != nil {
			out.fail(err)
			results[i].Error = err.Error()
			continue
		}
		out.success = true
		kv := it.keyVersion
		if kv == 0 {
			kv = p.LatestVersion
		}
		results[i] = encryptResult{Ciphertext: ct, KeyVersion: kv}
	}

	var warnings []string
	if create && !upserted {
		warnings = append(warnings, "Attempted creation of the key during the encrypt operation, but it was created beforehand")
	}
	if batch {
		for i := range list {
			results[i].Reference = list[i].reference
		}
		return out.respond(d, map[string]any{"batch_results": results}, warnings)
	}
	if results[0].Error != "" {
		return singleError(out, results[0].Error)
	}
	return out.respond(d, map[string]any{"ciphertext": results[0].Ciphertext, "key_version": results[0].KeyVersion}, warnings)
}

func (e *engine) decrypt(ctx context.Context, name string, d map[string]any) response {
	list, batch, refused := items(d, "ciphertext")
	if refused != nil {
		return *refused
	}
	if contextMixed(list) {
		return userError("context should be set either in all the request blocks or in none")
	}
	results := make([]decryptResult, len(list))
	var out batchOutcome
	for i, it := range list {
		if it.ciphertext == "" {
			results[i].Error = "missing ciphertext to decrypt"
		}
	}
	decode(list, func(i int, msg string) {
		if results[i].Error == "" {
			results[i].Error = msg
		}
	})
	for i := range results {
		if results[i].Error != "" {
			out.user = true
		}
	}

	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("encryption key not found")
	}
	p.Lock(false)
	defer p.Unlock()

	for i, it := range list {
		if results[i].Error != "" {
			continue
		}
		fs, msg := factories(p, i, it.paddingScheme, "padding_scheme", it.associatedData)
		if msg != "" {
			out.user = true
			results[i].Error = msg
			continue
		}
		pt, err := p.DecryptWithFactory(it.decodedContext, it.decodedNonce, it.ciphertext, fs...)
		if err != nil {
			out.fail(err)
			results[i].Error = err.Error()
			continue
		}
		out.success = true
		results[i].Plaintext = pt
	}

	if batch {
		for i := range list {
			results[i].Reference = list[i].reference
		}
		return out.respond(d, map[string]any{"batch_results": results}, nil)
	}
	if results[0].Error != "" {
		return singleError(out, results[0].Error)
	}
	return out.respond(d, map[string]any{"plaintext": results[0].Plaintext}, nil)
}

// rewrap decrypts and re-encrypts with the latest (or given) key version
// without the plaintext leaving the server. Vault answers 200 to a batch
// even when items fail.
func (e *engine) rewrap(ctx context.Context, name string, d map[string]any) response {
	list, batch, refused := items(d, "")
	if refused != nil {
		return *refused
	}
	if !batch && list[0].ciphertext == "" {
		return userError("missing ciphertext to decrypt")
	}
	if contextMixed(list) {
		return userError("context should be set either in all the request blocks or in none")
	}
	results := make([]encryptResult, len(list))
	for i, it := range list {
		if it.ciphertext == "" {
			results[i].Error = "missing ciphertext to decrypt"
		}
	}
	decode(list, func(i int, msg string) {
		if results[i].Error == "" {
			results[i].Error = msg
		}
	})

	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("encryption key not found")
	}
	p.Lock(false)
	defer p.Unlock()

	var out batchOutcome
	for i, it := range list {
		if results[i].Error != "" {
			continue
		}
		fs, msg := factories(p, i, it.decryptPadding, "decrypt_padding_scheme", "")
		if msg != "" {
			results[i].Error = msg
			continue
		}
		if it.nonce != "" && !nonceAllowed(p) {
			results[i].Error = errNonceNotAllowed
			continue
		}
		pt, err := p.DecryptWithFactory(it.decodedContext, it.decodedNonce, it.ciphertext, fs...)
		if err != nil {
			var ue errutil.UserError
			if !errors.As(err, &ue) {
				return internalError(err)
			}
			results[i].Error = err.Error()
			continue
		}
		fs, msg = factories(p, i, it.encryptPadding, "encrypt_padding_scheme", "")
		if msg != "" {
			results[i].Error = msg
			continue
		}
		ct, err := p.EncryptWithFactory(it.keyVersion, it.decodedContext, it.decodedNonce, pt, fs...)
		if err != nil {
			var ue errutil.UserError
			if !errors.As(err, &ue) {
				return internalError(err)
			}
			results[i].Error = err.Error()
			continue
		}
		kv := it.keyVersion
		if kv == 0 {
			kv = p.LatestVersion
		}
		results[i] = encryptResult{Ciphertext: ct, KeyVersion: kv}
	}

	if batch {
		for i := range list {
			results[i].Reference = list[i].reference
		}
		return out.respond(d, map[string]any{"batch_results": results}, nil)
	}
	if results[0].Error != "" {
		return userError("%s", results[0].Error)
	}
	return okResponse(map[string]any{"ciphertext": results[0].Ciphertext, "key_version": results[0].KeyVersion})
}

// datakey is datakey/plaintext/:name and datakey/wrapped/:name: a fresh
// random key, encrypted with the named key.
func (e *engine) datakey(ctx context.Context, kind, name string, d map[string]any) response {
	f := fields{d: d}
	keyVersion := f.integer("key_version", 0)
	contextRaw := f.str("context", "")
	nonceRaw := f.str("nonce", "")
	bits := f.integer("bits", 256)
	padding := f.str("padding_scheme", "")
	if f.err != nil {
		return userError("%v", f.err)
	}
	var keyCtx, nonce []byte
	var err error
	if contextRaw != "" {
		if keyCtx, err = base64.StdEncoding.DecodeString(contextRaw); err != nil {
			return userError("failed to base64-decode context")
		}
	}
	if nonceRaw != "" {
		if nonce, err = base64.StdEncoding.DecodeString(nonceRaw); err != nil {
			return userError("failed to base64-decode nonce")
		}
	}
	if bits != 128 && bits != 256 && bits != 512 {
		return userError("invalid bit length")
	}
	if kind != "plaintext" && kind != "wrapped" {
		return userError("Invalid path, must be 'plaintext' or 'wrapped'")
	}

	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return userError("encryption key not found")
	}
	p.Lock(false)
	defer p.Unlock()

	fs, msg := factories(p, 0, padding, "padding_scheme", "")
	if msg != "" {
		return userError("padding_scheme argument invalid: %s", strings.TrimPrefix(msg, "'[0].padding_scheme' invalid: "))
	}
	if len(nonce) > 0 && !nonceAllowed(p) {
		return internalError(errors.New(errNonceNotAllowed))
	}
	newKey := make([]byte, bits/8)
	if _, err := rand.Read(newKey); err != nil {
		return internalError(err)
	}
	plaintext := base64.StdEncoding.EncodeToString(newKey)
	ct, err := p.EncryptWithOptions(keysutil.EncryptionOptions{KeyVersion: keyVersion, Context: keyCtx, Nonce: nonce}, plaintext, fs...)
	if err != nil {
		var ue errutil.UserError
		if errors.As(err, &ue) {
			return userError("%s", err)
		}
		return internalError(err)
	}
	kv := keyVersion
	if kv == 0 {
		kv = p.LatestVersion
	}
	data := map[string]any{"key_version": kv, "ciphertext": ct}
	if kind == "plaintext" {
		data["plaintext"] = plaintext
	}
	return okResponse(data)
}
