package catalog

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
)

// ErrUnauthenticated is returned when a sealed value does not open under the
// master key: it was altered, moved to another record, or sealed under
// another master key.
var ErrUnauthenticated = errors.New("sealed value failed authentication")

const (
	sealVersion = 1
	nonceSize   = 12
	aadPrefix   = "ferry/catalog/v1"
)

// sealer seals values with AES-256-GCM under the master key. The associated
// data binds each sealed value to its bucket and record key.
type sealer struct {
	aead cipher.AEAD
}

func newSealer(masterKey []byte) (*sealer, error) {
	b, err := aes.NewCipher(masterKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(b)
	if err != nil {
		return nil, err
	}
	return &sealer{aead: aead}, nil
}

func sealAAD(bucket string, key []byte) []byte {
	aad := make([]byte, 0, len(aadPrefix)+len(bucket)+len(key)+2)
	aad = append(aad, aadPrefix...)
	aad = append(aad, 0)
	aad = append(aad, bucket...)
	aad = append(aad, 0)
	return append(aad, key...)
}

// seal returns version || nonce || ciphertext+tag. A random 96-bit nonce is
// safe here: the catalog seals far fewer than 2^32 values under one key.
func (s *sealer) seal(bucket string, key, plaintext []byte) []byte {
	out := make([]byte, 1+nonceSize, 1+nonceSize+len(plaintext)+s.aead.Overhead())
	out[0] = sealVersion
	rand.Read(out[1 : 1+nonceSize])
	return s.aead.Seal(out, out[1:1+nonceSize], plaintext, sealAAD(bucket, key))
}

func (s *sealer) open(bucket string, key, sealed []byte) ([]byte, error) {
	if len(sealed) < 1+nonceSize+s.aead.Overhead() || sealed[0] != sealVersion {
		return nil, ErrUnauthenticated
	}
	pt, err := s.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], sealAAD(bucket, key))
	if err != nil {
		return nil, ErrUnauthenticated
	}
	return pt, nil
}
