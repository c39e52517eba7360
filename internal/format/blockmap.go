package format

import (
	"encoding/binary"
	"fmt"
)

// MapEntry locates one record in its file.
type MapEntry struct {
	Object   uint64
	Block    uint64
	Offset   int64  // of the record header
	Length   uint32 // header plus payload
	Checksum Checksum
}

// BlockKey identifies a block of a restore point.
type BlockKey struct{ Object, Block uint64 }

// Key returns the (object, block) the entry stores.
func (e *MapEntry) Key() BlockKey { return BlockKey{e.Object, e.Block} }

const mapEntrySize = 8 + 8 + 8 + 4 + 32

func marshalBlockMap(entries []MapEntry) []byte {
	b := make([]byte, 0, 8+mapEntrySize*len(entries))
	b = binary.LittleEndian.AppendUint64(b, uint64(len(entries)))
	for i := range entries {
		e := &entries[i]
		b = binary.LittleEndian.AppendUint64(b, e.Object)
		b = binary.LittleEndian.AppendUint64(b, e.Block)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.Offset))
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = append(b, e.Checksum[:]...)
	}
	return b
}

// parseBlockMap decodes the block map and checks that its records tile the
// records region exactly, each (object, block) once.
func parseBlockMap(file string, off int64, b []byte, recordsStart, recordsEnd int64, maxRecord uint32) ([]MapEntry, error) {
	if len(b) < 8 {
		return nil, corrupt(file, RegionBlockMap, off, "block map is %d bytes", len(b))
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8)/mapEntrySize || 8+n*mapEntrySize != uint64(len(b)) {
		return nil, corrupt(file, RegionBlockMap, off, "block map of %d bytes cannot hold %d entries", len(b), n)
	}
	entries := make([]MapEntry, n)
	seen := make(map[BlockKey]struct{}, n)
	next := recordsStart
	for i := range entries {
		p := b[8+i*mapEntrySize:]
		e := &entries[i]
		e.Object = binary.LittleEndian.Uint64(p)
		e.Block = binary.LittleEndian.Uint64(p[8:])
		e.Offset = int64(binary.LittleEndian.Uint64(p[16:]))
		e.Length = binary.LittleEndian.Uint32(p[24:])
		copy(e.Checksum[:], p[28:60])
		at := off + 8 + int64(i)*mapEntrySize
		if e.Offset != next {
			return nil, corrupt(file, RegionBlockMap, at, "entry %d points at offset %d, records continue at %d", i, e.Offset, next)
		}
		if e.Length <= RecordHeaderSize || e.Length > maxRecord {
			return nil, corrupt(file, RegionBlockMap, at, "entry %d has record length %d", i, e.Length)
		}
		if _, dup := seen[e.Key()]; dup {
			return nil, corrupt(file, RegionBlockMap, at, "object %d block %d is stored twice", e.Object, e.Block)
		}
		seen[e.Key()] = struct{}{}
		next += int64(e.Length)
	}
	if next != recordsEnd {
		return nil, corrupt(file, RegionBlockMap, off, "records end at %d, block map starts at %d", next, recordsEnd)
	}
	return entries, nil
}

func maxRecordLen(blockSize uint32) uint32 {
	return RecordHeaderSize + blockSize + TagSize
}

// String is for logs and errors.
func (e MapEntry) String() string {
	return fmt.Sprintf("object %d block %d at offset %d", e.Object, e.Block, e.Offset)
}
