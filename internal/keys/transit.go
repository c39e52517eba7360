package keys

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TransitEntry is the wrapped form of a session secret under a HashiCorp
// Vault Transit key: the ciphertext Vault returned ("vault:vN:..."), and
// where the key lives. Encoding (little-endian lengths):
//
//	mount len u16 | mount | namespace len u16 | namespace |
//	key len u16 | key | ciphertext len u16 | ciphertext
type TransitEntry struct {
	Mount      string
	Namespace  string
	Key        string
	Ciphertext string
}

const maxTransitField = 4096

// Marshal encodes the entry.
func (e *TransitEntry) Marshal() []byte {
	var b []byte
	for _, f := range []string{e.Mount, e.Namespace, e.Key, e.Ciphertext} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f)))
		b = append(b, f...)
	}
	return b
}

// ParseTransitEntry decodes an entry.
func ParseTransitEntry(b []byte) (*TransitEntry, error) {
	var fields [4]string
	for i := range fields {
		if len(b) < 2 {
			return nil, errors.New("transit entry is truncated")
		}
		n := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if n > len(b) || n > maxTransitField {
			return nil, fmt.Errorf("transit entry field of %d bytes does not fit", n)
		}
		fields[i] = string(b[:n])
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, errors.New("transit entry has trailing bytes")
	}
	e := &TransitEntry{Mount: fields[0], Namespace: fields[1], Key: fields[2], Ciphertext: fields[3]}
	if e.Mount == "" || e.Key == "" || e.Ciphertext == "" {
		return nil, errors.New("transit entry lacks its mount, key or ciphertext")
	}
	return e, nil
}

// Version returns the key version of the ciphertext ("vault:v3:..." -> 3).
func (e *TransitEntry) Version() int {
	var v int
	if _, err := fmt.Sscanf(e.Ciphertext, "vault:v%d:", &v); err != nil {
		return 0
	}
	return v
}

// Ref is how listings name the key that wraps a secret: "kms MOUNT/KEY vN".
func (e *TransitEntry) Ref() string {
	return fmt.Sprintf("kms %s/%s v%d", e.Mount, e.Key, e.Version())
}
