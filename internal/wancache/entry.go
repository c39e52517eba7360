package wancache

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
)

const (
	magic        = "fwc\x01" // the last byte is the format version
	flagZstd     = 1 << 0
	nonceLen     = 12
	tagLen       = 16
	prefixLen    = 13 // magic, flags, rawLen, dataLen: the part bound as associated data
	headerLen    = prefixLen + nonceLen
	keyInfo      = "ferry/v1/wancache"
	maxStoredLen = MaxBlockSize + MaxBlockSize/128 + 4096 // zstd's worst case for an incompressible block
)

// MaxBlockSize is the largest plaintext block the cache stores, as in the
// backup file format.
const MaxBlockSize = 16 << 20

func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("cache key is %d bytes, want %d", len(key), KeySize)
	}
	k, err := hkdf.Key(sha256.New, key, nil, keyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("derive cache key: %w", err)
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// header is the plaintext head of an entry file.
type header struct {
	compressed bool
	rawLen     int
	dataLen    int
}

func (h header) fileSize() int64 { return int64(headerLen + h.dataLen + tagLen) }

func parseHeader(b []byte) (header, error) {
	if len(b) < headerLen {
		return header{}, errors.New("short header")
	}
	if string(b[:4]) != magic {
		return header{}, errors.New("bad magic")
	}
	flags := b[4]
	if flags&^flagZstd != 0 {
		return header{}, fmt.Errorf("unknown flags %#x", flags)
	}
	h := header{
		compressed: flags&flagZstd != 0,
		rawLen:     int(binary.BigEndian.Uint32(b[5:9])),
		dataLen:    int(binary.BigEndian.Uint32(b[9:13])),
	}
	if h.rawLen > MaxBlockSize || h.dataLen > maxStoredLen || (!h.compressed && h.rawLen != h.dataLen) {
		return header{}, fmt.Errorf("bad lengths raw %d stored %d", h.rawLen, h.dataLen)
	}
	return h, nil
}

// additionalData binds an entry's stored form to its digest.
func additionalData(prefix []byte, digest [32]byte) []byte {
	ad := make([]byte, 0, prefixLen+len(digest))
	ad = append(ad, prefix[:prefixLen]...)
	return append(ad, digest[:]...)
}

// seal builds the file contents of an entry.
func seal(aead cipher.AEAD, digest [32]byte, data []byte, compressed bool, rawLen int) []byte {
	buf := make([]byte, headerLen, headerLen+len(data)+tagLen)
	copy(buf, magic)
	if compressed {
		buf[4] = flagZstd
	}
	binary.BigEndian.PutUint32(buf[5:9], uint32(rawLen))
	binary.BigEndian.PutUint32(buf[9:13], uint32(len(data)))
	nonce := buf[prefixLen:headerLen]
	rand.Read(nonce) // never fails (crypto/rand panics instead)
	return aead.Seal(buf, nonce, data, additionalData(buf, digest))
}

// open authenticates an entry file, decodes it and checks the plaintext
// against the digest. plain aliases data for an uncompressed entry. The
// error says why the entry is unusable; the caller wraps ErrCorrupt.
func open(aead cipher.AEAD, dec *zstd.Decoder, digest [32]byte, file []byte) (h header, data, plain []byte, err error) {
	h, err = parseHeader(file)
	if err != nil {
		return header{}, nil, nil, err
	}
	if int64(len(file)) != h.fileSize() {
		return header{}, nil, nil, fmt.Errorf("%d bytes, header says %d", len(file), h.fileSize())
	}
	data, err = aead.Open(file[headerLen:headerLen], file[prefixLen:headerLen], file[headerLen:], additionalData(file, digest))
	if err != nil {
		return header{}, nil, nil, errors.New("authentication failed")
	}
	plain = data
	if h.compressed {
		// The cap bounds the output, so a bad frame cannot inflate past rawLen.
		plain, err = dec.DecodeAll(data, make([]byte, 0, h.rawLen))
		if err != nil {
			return header{}, nil, nil, fmt.Errorf("decompress: %w", err)
		}
	}
	if len(plain) != h.rawLen {
		return header{}, nil, nil, fmt.Errorf("plaintext is %d bytes, header says %d", len(plain), h.rawLen)
	}
	if sha256.Sum256(plain) != digest {
		return header{}, nil, nil, errors.New("plaintext does not match digest")
	}
	return h, data, plain, nil
}
