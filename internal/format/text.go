package format

import (
	"encoding/hex"
	"fmt"
)

// MarshalText writes the id as hex, for JSON listings.
func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads a hex id.
func (id *ID) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(id) {
		return fmt.Errorf("id %q is not %d hex digits", b, 2*len(id))
	}
	_, err := hex.Decode(id[:], b)
	return err
}

// ParseID parses a hex id.
func ParseID(s string) (ID, error) {
	var id ID
	err := id.UnmarshalText([]byte(s))
	return id, err
}

// MarshalText writes the kind's name.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText reads a kind's name.
func (k *Kind) UnmarshalText(b []byte) error {
	for _, v := range []Kind{KindFull, KindIncremental, KindMerged} {
		if v.String() == string(b) {
			*k = v
			return nil
		}
	}
	return fmt.Errorf("unknown kind %q", b)
}

// MarshalText writes the encryption mode's name.
func (e Encryption) MarshalText() ([]byte, error) { return []byte(e.String()), nil }

// UnmarshalText reads an encryption mode's name.
func (e *Encryption) UnmarshalText(b []byte) error {
	for _, v := range []Encryption{EncryptionNone, EncryptionAES256GCM} {
		if v.String() == string(b) {
			*e = v
			return nil
		}
	}
	return fmt.Errorf("unknown encryption %q", b)
}
