package format

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/ferrybackup/ferry/internal/keys"
)

// EntryType says how a key table entry wraps its session secret.
type EntryType uint8

const (
	// EntryPassword: AES-256-GCM under an Argon2id secret key (keys.PasswordEntry).
	EntryPassword EntryType = 1
	// EntryTransit: a HashiCorp Vault Transit ciphertext.
	EntryTransit EntryType = 2
	// EntryRecovery: HPKE sealed to a recovery public key.
	EntryRecovery EntryType = 3
)

func (t EntryType) String() string {
	switch t {
	case EntryPassword:
		return "password"
	case EntryTransit:
		return "kms"
	case EntryRecovery:
		return "recovery"
	}
	return fmt.Sprintf("entry(%d)", uint8(t))
}

// KeyEntry is one wrapped copy of a session secret. Data is interpreted by
// the wrapper named by Type; readers keep entries of unknown types as they
// are, so a newer ferry's entries survive a rewrite by an older one.
type KeyEntry struct {
	Secret keys.KeyID
	Type   EntryType
	Data   []byte
}

// KeyTable holds the wrapped session secrets of a file. It lives in two
// fixed-size slots after the header so that it can be rewritten in place
// (key rotation) without touching the records: a slot is replaced only
// while the other one holds a complete table.
type KeyTable struct {
	Generation uint64 // increases with every rewrite; 0 marks an empty slot
	Entries    []KeyEntry
}

const (
	maxKeyEntries  = 1<<16 - 1 // the count is a u16
	maxEntryData   = 1 << 16
	slotFixed      = 8 + 4 + 4 // generation, body length, crc
	entryFixedSize = keys.KeyIDSize + 1 + 4
)

// For returns the entries that wrap secret id.
func (kt *KeyTable) For(id keys.KeyID) []KeyEntry {
	var out []KeyEntry
	for _, e := range kt.Entries {
		if e.Secret == id {
			out = append(out, e)
		}
	}
	return out
}

func (kt *KeyTable) bodyLen() int {
	n := 2
	for _, e := range kt.Entries {
		n += entryFixedSize + len(e.Data)
	}
	return n
}

// KeyTableCapFor returns a slot capacity for a table: room for it to double,
// so adding a wrap per secret (a recovery key, a second KMS) fits in place.
func KeyTableCapFor(kt *KeyTable) uint32 {
	need := 2*(slotFixed+kt.bodyLen()) + 256
	c := (need + keyTableCapAlign - 1) / keyTableCapAlign * keyTableCapAlign
	return uint32(max(c, minKeyTableCap))
}

// marshalSlot encodes kt into one slot of capacity c.
func marshalSlot(kt *KeyTable, c uint32) ([]byte, error) {
	if len(kt.Entries) > maxKeyEntries {
		return nil, fmt.Errorf("key table has %d entries, at most %d", len(kt.Entries), maxKeyEntries)
	}
	if kt.Generation == 0 {
		return nil, errors.New("key table generation must be at least 1")
	}
	if slotFixed+kt.bodyLen() > int(c) {
		return nil, fmt.Errorf("key table needs %d bytes, slot holds %d", slotFixed+kt.bodyLen(), c)
	}
	b := make([]byte, 0, c)
	b = binary.LittleEndian.AppendUint64(b, kt.Generation)
	b = binary.LittleEndian.AppendUint32(b, uint32(kt.bodyLen()))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(kt.Entries)))
	for _, e := range kt.Entries {
		if len(e.Data) > maxEntryData {
			return nil, fmt.Errorf("key table entry is %d bytes, at most %d", len(e.Data), maxEntryData)
		}
		b = append(b, e.Secret[:]...)
		b = append(b, byte(e.Type))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	b = b[:c-4] // zero padding up to the checksum
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// MarshalKeyTable encodes the key table section of a new file: kt in the
// first slot, the second slot empty, each of capacity c. NewWriter writes
// exactly these bytes.
func MarshalKeyTable(kt *KeyTable, c uint32) ([]byte, error) {
	if kt.Generation == 0 {
		cp := *kt
		cp.Generation = 1
		kt = &cp
	}
	slot, err := marshalSlot(kt, c)
	if err != nil {
		return nil, err
	}
	return append(slot, make([]byte, c)...), nil
}

// ParseKeyTable decodes a key table section of two slots of capacity c,
// as Open does.
func ParseKeyTable(file string, off int64, b []byte, c uint32) (*KeyTable, error) {
	if c == 0 || len(b) != 2*int(c) {
		return nil, corrupt(file, RegionKeyTable, off, "key table section is %d bytes, want 2 x %d", len(b), c)
	}
	return parseKeyTable(file, off, b, c)
}

// CheckKeyTable makes sure kt wraps every secret h lists, and nothing else.
func CheckKeyTable(file string, off int64, kt *KeyTable, h *Header) error {
	return checkKeyTable(file, off, kt, h)
}

// parseSlot decodes one slot; an all-zero slot is empty (nil, nil).
func parseSlot(file string, off int64, b []byte) (*KeyTable, error) {
	empty := true
	for _, c := range b {
		if c != 0 {
			empty = false
			break
		}
	}
	if empty {
		return nil, nil
	}
	n := len(b)
	if crc32.Checksum(b[:n-4], castagnoli) != binary.LittleEndian.Uint32(b[n-4:]) {
		return nil, corrupt(file, RegionKeyTable, off, "key table slot checksum mismatch")
	}
	d := decoder{b: b[:n-4], off: int(off)}
	kt := &KeyTable{Generation: d.u64()}
	bodyLen := int(d.u32())
	if kt.Generation == 0 || bodyLen < 2 || bodyLen > len(d.b) {
		return nil, corrupt(file, RegionKeyTable, off, "key table slot header is malformed")
	}
	body := decoder{b: d.take(bodyLen), off: d.off}
	for _, c := range d.b {
		if c != 0 {
			return nil, corrupt(file, RegionKeyTable, int64(d.off), "key table slot padding is not zero")
		}
	}
	count := int(body.u16())
	if count*entryFixedSize > len(body.b) {
		return nil, corrupt(file, RegionKeyTable, off, "key table claims %d entries in %d bytes", count, len(body.b))
	}
	kt.Entries = make([]KeyEntry, 0, count)
	for range count {
		var e KeyEntry
		body.bytes(e.Secret[:])
		e.Type = EntryType(body.u8())
		dl := body.u32()
		if dl > maxEntryData {
			return nil, corrupt(file, RegionKeyTable, int64(body.off), "key table entry of %d bytes", dl)
		}
		e.Data = append([]byte(nil), body.take(int(dl))...)
		kt.Entries = append(kt.Entries, e)
	}
	if body.err != nil || len(body.b) != 0 {
		return nil, corrupt(file, RegionKeyTable, int64(body.off), "key table body is malformed")
	}
	return kt, nil
}

// parseKeyTable picks the newest complete slot. Damage to either slot is an
// error: a reader never quietly ignores a flipped byte.
func parseKeyTable(file string, off int64, b []byte, c uint32) (*KeyTable, error) {
	a, errA := parseSlot(file, off, b[:c])
	z, errB := parseSlot(file, off+int64(c), b[c:2*c])
	switch {
	case errA != nil:
		return nil, errA
	case errB != nil:
		return nil, errB
	case a == nil && z == nil:
		return nil, corrupt(file, RegionKeyTable, off, "both key table slots are empty")
	case z == nil || (a != nil && a.Generation >= z.Generation):
		return a, nil
	default:
		return z, nil
	}
}
