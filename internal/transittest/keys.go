package transittest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/helper/keysutil"
)

// formatKey is the data of a key read, in the shape of Vault's response.
func formatKey(p *keysutil.Policy) (map[string]any, error) {
	d := map[string]any{
		"name":                   p.Name,
		"type":                   p.Type.String(),
		"derived":                p.Derived,
		"deletion_allowed":       p.DeletionAllowed,
		"min_available_version":  p.MinAvailableVersion,
		"min_decryption_version": p.MinDecryptionVersion,
		"min_encryption_version": p.MinEncryptionVersion,
		"latest_version":         p.LatestVersion,
		"exportable":             p.Exportable,
		"allow_plaintext_backup": p.AllowPlaintextBackup,
		"supports_encryption":    p.Type.EncryptionSupported(),
		"supports_decryption":    p.Type.DecryptionSupported(),
		"supports_signing":       p.Type.SigningSupported(),
		"supports_derivation":    p.Type.DerivationSupported(),
		"auto_rotate_period":     int64(p.AutoRotatePeriod.Seconds()),
		"imported_key":           p.Imported,
	}
	if p.KeySize != 0 {
		d["key_size"] = p.KeySize
	}
	if p.Derived {
		switch p.KDF {
		case keysutil.Kdf_hmac_sha256_counter:
			d["kdf"] = "hmac-sha256-counter"
			d["kdf_mode"] = "hmac-sha256-counter"
		case keysutil.Kdf_hkdf_sha256:
			d["kdf"] = "hkdf_sha256"
		}
		d["convergent_encryption"] = p.ConvergentEncryption
		if p.ConvergentEncryption {
			d["convergent_encryption_version"] = p.ConvergentVersion
		}
	}

	switch p.Type {
	case keysutil.KeyType_AES128_GCM96, keysutil.KeyType_AES256_GCM96, keysutil.KeyType_ChaCha20_Poly1305:
		keys := map[string]int64{}
		for v, k := range p.Keys {
			keys[v] = k.DeprecatedCreationTime
		}
		d["keys"] = keys
	case keysutil.KeyType_ECDSA_P256, keysutil.KeyType_ECDSA_P384, keysutil.KeyType_ECDSA_P521,
		keysutil.KeyType_ED25519, keysutil.KeyType_RSA2048, keysutil.KeyType_RSA3072, keysutil.KeyType_RSA4096:
		keys := map[string]map[string]any{}
		for v, k := range p.Keys {
			created := k.CreationTime
			if created.IsZero() {
				created = time.Unix(k.DeprecatedCreationTime, 0)
			}
			pub := k.FormattedPublicKey
			name := p.Type.String()
			switch p.Type {
			case keysutil.KeyType_ECDSA_P256:
				name = elliptic.P256().Params().Name
			case keysutil.KeyType_ECDSA_P384:
				name = elliptic.P384().Params().Name
			case keysutil.KeyType_ECDSA_P521:
				name = elliptic.P521().Params().Name
			case keysutil.KeyType_ED25519:
				if p.Derived {
					// Vault derives the public key per context; without
					// one it shows none.
					pub = ""
				}
			case keysutil.KeyType_RSA2048, keysutil.KeyType_RSA3072, keysutil.KeyType_RSA4096:
				var err error
				if pub, err = rsaPublicPEM(&k); err != nil {
					return nil, err
				}
			}
			keys[v] = map[string]any{
				"name":              name,
				"public_key":        pub,
				"certificate_chain": "",
				"creation_time":     created,
				"hybrid_public_key": "",
			}
		}
		d["keys"] = keys
	}
	return d, nil
}

// export is export/:type/:name(/:version).
func (e *engine) export(ctx context.Context, exportType, name, version string) response {
	switch exportType {
	case "encryption-key", "signing-key", "hmac-key", "public-key":
	default:
		return userError("invalid export type: %s", exportType)
	}
	p, err := e.policy(ctx, name)
	if err != nil {
		return internalError(err)
	}
	if p == nil {
		return errorResponse(http.StatusNotFound)
	}
	p.Lock(false)
	defer p.Unlock()
	if !p.Exportable && exportType != "public-key" {
		return userError("private key material is not exportable")
	}
	switch exportType {
	case "encryption-key":
		if !p.Type.EncryptionSupported() {
			return userError("encryption not supported for the key")
		}
	case "signing-key":
		if !p.Type.SigningSupported() {
			return userError("signing not supported for the key")
		}
	}

	keys := map[string]string{}
	if version == "" {
		for v, k := range p.Keys {
			s, err := exportKey(p, &k, exportType)
			if err != nil {
				return internalError(err)
			}
			keys[v] = s
		}
	} else {
		n := p.LatestVersion
		if version != "latest" {
			if n, err = strconv.Atoi(strings.TrimPrefix(version, "v")); err != nil {
				return userError("invalid key version")
			}
		}
		if n < p.MinDecryptionVersion {
			return userError("version for export is below minimum decryption version")
		}
		k, ok := p.Keys[strconv.Itoa(n)]
		if !ok {
			return userError("version does not exist or cannot be found")
		}
		s, err := exportKey(p, &k, exportType)
		if err != nil {
			return internalError(err)
		}
		keys[strconv.Itoa(n)] = s
	}
	return okResponse(map[string]any{"name": p.Name, "type": p.Type.String(), "keys": keys})
}

func exportKey(p *keysutil.Policy, k *keysutil.KeyEntry, exportType string) (string, error) {
	switch exportType {
	case "hmac-key":
		src := k.HMACKey
		if p.Type == keysutil.KeyType_HMAC {
			src = k.Key
		}
		return base64.StdEncoding.EncodeToString(src), nil
	case "encryption-key":
		switch p.Type {
		case keysutil.KeyType_AES128_GCM96, keysutil.KeyType_AES256_GCM96, keysutil.KeyType_ChaCha20_Poly1305:
			return base64.StdEncoding.EncodeToString(k.Key), nil
		case keysutil.KeyType_RSA2048, keysutil.KeyType_RSA3072, keysutil.KeyType_RSA4096:
			return rsaPrivatePEM(k), nil
		}
	case "signing-key":
		switch p.Type {
		case keysutil.KeyType_ED25519:
			return base64.StdEncoding.EncodeToString(k.Key), nil
		case keysutil.KeyType_RSA2048, keysutil.KeyType_RSA3072, keysutil.KeyType_RSA4096:
			return rsaPrivatePEM(k), nil
		case keysutil.KeyType_ECDSA_P256, keysutil.KeyType_ECDSA_P384, keysutil.KeyType_ECDSA_P521:
			curve := curveOf(p.Type)
			priv, err := ecdsa.ParseRawPrivateKey(curve, k.EC_D.FillBytes(make([]byte, (curve.Params().BitSize+7)/8)))
			if err != nil {
				return "", fmt.Errorf("ECDSA key of %s: %w", p.Name, err)
			}
			der, err := x509.MarshalECPrivateKey(priv)
			if err != nil {
				return "", fmt.Errorf("marshal ECDSA key of %s: %w", p.Name, err)
			}
			return strings.TrimSpace(string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))), nil
		}
	case "public-key":
		switch p.Type {
		case keysutil.KeyType_ED25519, keysutil.KeyType_ECDSA_P256, keysutil.KeyType_ECDSA_P384, keysutil.KeyType_ECDSA_P521:
			// keysutil keeps these formatted as Vault exports them: base64
			// for Ed25519, a PKIX PEM block for ECDSA.
			return strings.TrimSpace(k.FormattedPublicKey), nil
		case keysutil.KeyType_RSA2048, keysutil.KeyType_RSA3072, keysutil.KeyType_RSA4096:
			return rsaPublicPEM(k)
		}
	}
	return "", fmt.Errorf("unknown key type %v for export type %v", p.Type, exportType)
}

func curveOf(kt keysutil.KeyType) elliptic.Curve {
	switch kt {
	case keysutil.KeyType_ECDSA_P384:
		return elliptic.P384()
	case keysutil.KeyType_ECDSA_P521:
		return elliptic.P521()
	}
	return elliptic.P256()
}

// rsaPublicPEM is a PKIX "PUBLIC KEY" block, as Vault returns RSA public
// keys.
func rsaPublicPEM(k *keysutil.KeyEntry) (string, error) {
	var pub crypto.PublicKey
	switch {
	case k.RSAKey != nil:
		pub = k.RSAKey.Public()
	case k.RSAPublicKey != nil:
		pub = k.RSAPublicKey
	default:
		return "", errors.New("requested to encode an RSA public key with no RSA key present")
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("error marshaling RSA public key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), nil
}

// rsaPrivatePEM is a PKCS #1 "RSA PRIVATE KEY" block, Vault's export form.
func rsaPrivatePEM(k *keysutil.KeyEntry) string {
	if k.RSAKey == nil {
		return ""
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.RSAKey)}))
}
